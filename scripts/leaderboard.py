# Adapter: snakemake object -> llmboard.results.leaderboard.write_leaderboard
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import run  # noqa: E402


def main(log):
    from llmboard.results.leaderboard import write_leaderboard

    prefix = snakemake.output[0][: -len(".parquet")]
    comparisons = snakemake.output[3][: -len(".parquet")]
    write_leaderboard(
        list(snakemake.params.scores),
        prefix,
        list(snakemake.params.display),
        dict(snakemake.params.groups),
        dict(snakemake.params.prompting),
        stats=dict(snakemake.params.statistics),
        comparisons_prefix=comparisons,
    )
    log.info("leaderboard from %d score files", len(snakemake.params.scores))


run(snakemake, main)
