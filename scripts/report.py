# Adapter: snakemake object -> llmboard.results.report.build_report (into the staging folder)
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import run  # noqa: E402


def main(log):
    from llmboard.results.report import build_report

    p = snakemake.params
    built = build_report(
        snakemake.output[0],
        snakemake.input.board,
        agreement=snakemake.input.agreement,
        display=list(p.display),
        groups=dict(p.groups),
        benchmarks=p.benchmarks,
        tasks_dir=p.tasks_dir,
        verify=p.verify,
        threads=snakemake.threads,
    )
    log.info("report: %s", built)


run(snakemake, main)
