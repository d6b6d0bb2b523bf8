# Adapter: snakemake object -> llmboard.predict.run_shard, for one task or a group's
# members (one model load for all of them).
import os
import sys
from pathlib import Path

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

    from llmboard.loading import load_model
    from llmboard.predict import run_shard

    torch.set_num_threads(snakemake.threads)
    root = Path(__file__).resolve().parent.parent  # task paths are relative to the workflow
    tasks = [Task(t["spec"]["task"], t["spec"], root / t["path"]) for t in snakemake.params.tasks]
    parquets, infos = snakemake.output.parquet, snakemake.output.info
    if isinstance(parquets, str):  # one task (rule infer) or a group's members
        parquets, infos = [parquets], [infos]
    for task, parquet in zip(tasks, parquets):
        if f"/{task.hash}/" not in parquet:
            raise RuntimeError(f"{task.path}: task definition changed since the DAG was built "
                               f"(hash {task.hash} not in {parquet}); rerun snakemake")
    try:
        loaded = load_model(snakemake.input.model, w.precision, device_map=infer.get("device_map"),
                            max_memory=infer.get("max_memory"),
                            offload_folder=infer.get("offload_folder"),
                            trust_remote_code=snakemake.params.trust_remote_code)
        for task, parquet, info in zip(tasks, parquets, infos):
            run_shard(snakemake.input.model, w.precision, task, int(w.shard), int(w.nshards),
                      parquet, info, token_budget=int(infer.get("token_budget", 2048)),
                      seed=int(snakemake.config.get("seed", 1234)), model=loaded)
    finally:
        slots.release()


run(snakemake, main)
