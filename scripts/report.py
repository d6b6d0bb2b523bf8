# Adapter: snakemake object -> llmboard.results.report (build_report, publish_report)
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import run  # noqa: E402


def main(log):
    from llmboard.results.report import build_report, publish_report

    if snakemake.rule == "publish_report":
        folder = os.path.dirname(snakemake.output.index)
        publish_report(snakemake.input[0], folder)
        log.info("%s -> %s", snakemake.input[0], folder)
        return
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
