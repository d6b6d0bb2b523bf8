# Adapter: snakemake object -> llmboard.fetch.fetch
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import run  # noqa: E402


def main(log):
    from llmboard.fetch import fetch
    from llmboard.sources import parse_source

    src = parse_source(snakemake.params.entry, snakemake.wildcards.model)
    log.info("fetching %s:%s", src.kind, src.location)
    fetch(src, snakemake.output[0], partial_dir="resources/.partial")


run(snakemake, main)
