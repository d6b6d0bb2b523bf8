# Adapter: snakemake object -> llmboard.predict.run_shard
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import run  # noqa: E402


def main(log):
    from llmboard.gpu_slots import acquire_for_job
    from llmboard.tasks import Task

    w = snakemake.wildcards
    infer = snakemake.config.get("inference", {})
    # GPUs first, before torch touches CUDA: CUDA_VISIBLE_DEVICES must be set by then
    slots = acquire_for_job(int(snakemake.resources.get("gpu", 0) or 0), snakemake.config)
    import torch

    from llmboard.predict import run_shard

    torch.set_num_threads(snakemake.threads)
    t = snakemake.params.task
    task = Task(t["spec"]["task"], t["spec"], __import__("pathlib").Path(t["path"]))
    if task.hash != w.taskhash:
        raise RuntimeError(f"{t['path']}: task definition changed since the DAG was built "
                           f"({task.hash} != {w.taskhash}); rerun snakemake")
    try:
        run_shard(snakemake.input.model, w.precision, task, int(w.shard), int(w.nshards),
                  snakemake.output.parquet, snakemake.output.info,
                  token_budget=int(infer.get("token_budget", 4096)),
                  seed=int(snakemake.config.get("seed", 1234)),
                  device_map=infer.get("device_map"),
                  max_memory=infer.get("max_memory"),
                  offload_folder=infer.get("offload_folder"),
                  trust_remote_code=snakemake.params.trust_remote_code)
    finally:
        slots.release()


run(snakemake, main)
