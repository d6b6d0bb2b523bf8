# Adapter: snakemake object -> llmboard.scoring.score
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import run  # noqa: E402


def main(log):
    from llmboard.scoring import score

    r = score(list(snakemake.input.parquets), list(snakemake.input.infos), snakemake.output[0],
              model=snakemake.wildcards.model, metrics=list(snakemake.params.metrics),
              primary_metric=snakemake.params.primary_metric)
    log.info("%s", {k: round(v["value"], 4) for k, v in r["metrics"].items()})


run(snakemake, main)
