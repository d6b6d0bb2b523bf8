# Adapter: snakemake object -> llmboard.workflow.jobs.run_predictions (one model load for
# every missing prediction of a model x precision).
import os
import sys
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import run  # noqa: E402


def main(log):
    from llmboard.inference.gpu_slots import acquire_for_job

    p = snakemake.params
    # GPUs first, before torch touches CUDA: CUDA_VISIBLE_DEVICES must be set by then
    slots = acquire_for_job(int(snakemake.resources.get("gpu", 0) or 0), p.local_gpus)
    try:
        import torch

        from llmboard.workflow.items import InferItem, from_params
        from llmboard.workflow.jobs import run_predictions

        torch.set_num_threads(snakemake.threads)
        run_predictions(
            snakemake.input.model,
            snakemake.wildcards.precision,
            from_params(InferItem, p.work),
            snakemake.output[0],
            workflow_dir=Path(__file__).resolve().parent.parent,
            token_budget=p.token_budget,
            seed=p.seed,
            device_map=p.device_map,
            max_memory=p.max_memory,
            offload_folder=p.offload_folder,
            trust_remote_code=p.trust_remote_code,
            request_store=p.request_store,
            prompting=p.prompting,
            entry=snakemake.wildcards.model,
        )
    finally:
        slots.release()


run(snakemake, main)
