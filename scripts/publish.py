# Adapter: copy the board for the current coverage to results/leaderboard.*
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import run  # noqa: E402


def main(log):
    import shutil

    from llmboard.atomic import atomic_path

    for src, dst in zip(snakemake.input.boards, snakemake.output, strict=True):
        with atomic_path(dst) as tmp:
            shutil.copyfile(src, tmp)
        log.info("%s -> %s", src, dst)


run(snakemake, main)
