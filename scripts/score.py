# Adapter: snakemake object -> llmboard.workflow.jobs.run_scores
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import run  # noqa: E402


def main(log):
    from llmboard.workflow.items import ScoreItem, from_params
    from llmboard.workflow.jobs import run_scores

    run_scores(
        from_params(ScoreItem, snakemake.params.work),
        snakemake.output[0],
        model=snakemake.wildcards.model,
    )


run(snakemake, main)
