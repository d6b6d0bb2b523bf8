# Adapter: snakemake object -> llmboard.jobs.run_scores
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import run  # noqa: E402


def main(log):
    from llmboard.jobs import run_scores

    run_scores(snakemake.params.batch, snakemake.output[0], model=snakemake.wildcards.model)


run(snakemake, main)
