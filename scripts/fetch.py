# Adapter: snakemake object -> llmboard.checkpoints.fetch.fetch
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import run  # noqa: E402


def main(log):
    from llmboard.checkpoints.fetch import fetch
    from llmboard.checkpoints.sources import parse_source

    src = parse_source(snakemake.params.source, snakemake.wildcards.model)
    log.info("fetching %s:%s", src.kind, src.location)
    fetch(src, snakemake.output[0], partial_dir=snakemake.params.partial_dir)


run(snakemake, main)
