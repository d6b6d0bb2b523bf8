# Adapter: snakemake object -> llmboard.workflow.jobs.run_scores
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import run  # noqa: E402


def job():
    from llmboard.workflow.items import ScoreJob

    return ScoreJob.from_params(snakemake.params.job)


JOB = job()


def main(log):
    from llmboard.workflow.jobs import run_scores

    run_scores(JOB, snakemake.output[0])


run(snakemake, main, JOB.log_level)
