# Adapter: snakemake object -> llmboard.jobs.run_predictions (one model load for every
# missing prediction of a model x precision).
import os
import sys
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import run  # noqa: E402


def main(log):
    from llmboard.gpu_slots import acquire_for_job

    infer = snakemake.config.get("inference", {})
    # GPUs first, before torch touches CUDA: CUDA_VISIBLE_DEVICES must be set by then
    slots = acquire_for_job(int(snakemake.resources.get("gpu", 0) or 0), snakemake.config)
    try:
        import torch

        from llmboard.jobs import run_predictions

        torch.set_num_threads(snakemake.threads)
        run_predictions(
            snakemake.input.model, snakemake.wildcards.precision, snakemake.params.batch,
            snakemake.output[0], workflow_dir=Path(__file__).resolve().parent.parent,
            token_budget=int(infer.get("token_budget", 2048)),
            seed=int(snakemake.config.get("seed", 1234)),
            device_map=infer.get("device_map"), max_memory=infer.get("max_memory"),
            offload_folder=infer.get("offload_folder"),
            trust_remote_code=snakemake.params.trust_remote_code)
    finally:
        slots.release()


run(snakemake, main)
