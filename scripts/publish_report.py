# Adapter: snakemake object -> llmboard.results.report.publish_report (staging -> results/report)
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import run  # noqa: E402


def main(log):
    from llmboard.results.report import publish_report

    folder = os.path.dirname(snakemake.output.index)
    publish_report(snakemake.input[0], folder)
    log.info("%s -> %s", snakemake.input[0], folder)


run(snakemake, main)
