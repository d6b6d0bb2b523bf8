# Adapter: snakemake object -> llmboard.results.agreement.write_agreement
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import run  # noqa: E402


def main(log):
    from llmboard.results.agreement import write_agreement

    preds = {(m, p, t): files for m, p, t, files in snakemake.params.predictions}
    scores = {(m, p, t): f for m, p, t, f in snakemake.params.scores}
    stats = snakemake.params.statistics
    write_agreement(
        preds,
        snakemake.output[0][: -len(".parquet")],
        scores,
        margin=stats["equivalence_margin"],
        alpha=1 - stats["level"],
    )
    log.info("precision agreement over %d prediction sets", len(preds))


run(snakemake, main)
