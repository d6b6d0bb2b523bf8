# Adapter: snakemake object -> llmboard.checkpoints.convert.convert
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import run  # noqa: E402


def main(log):
    import torch

    from llmboard.checkpoints.convert import convert

    torch.set_num_threads(snakemake.threads)
    m = convert(
        snakemake.input[0],
        snakemake.output[0],
        shard_bytes=int(snakemake.params.shard_gb * 1024**3),
        trust_remote_code=snakemake.params.trust_remote_code,
    )
    log.info(
        "converted: %d parameters, checkpoint sha256 %s", m["parameters"], m["checkpoint_sha256"]
    )


run(snakemake, main)
