# Adapter: snakemake object -> llmboard.workflow.jobs.run_predictions (one model load for
# every missing prediction of a model x precision)
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import run  # noqa: E402


def job():
    from llmboard.workflow.items import InferJob

    return InferJob.from_params(snakemake.params.job)


JOB = job()


def main(log):
    from llmboard.inference.gpu_slots import acquire_for_job
    from llmboard.inference.threads import openmp_wait_policy
    from llmboard.workflow.layout import GPU_LOCK_DIR

    # how OpenMP threads wait is read when torch loads: decided from the cores' load now
    log.info(openmp_wait_policy(snakemake.threads)[1])
    # GPUs first, before torch touches CUDA: CUDA_VISIBLE_DEVICES must be set by then
    slots = acquire_for_job(
        int(snakemake.resources.get("gpu", 0) or 0), JOB.local_gpus, GPU_LOCK_DIR
    )
    try:
        import torch

        from llmboard.workflow.jobs import run_predictions

        torch.set_num_threads(snakemake.threads)
        run_predictions(JOB, snakemake.output[0])
    finally:
        slots.release()


run(snakemake, main, JOB.log_level)
