# One job per model x precision x task x shard. Outputs are never temp(): they
# are the expensive part, and incremental reruns depend on them.
rule infer:
    input:
        model=converted_model,
    output:
        parquet="results/predictions/{model}/{precision}/{task}/{taskhash}/{shard}-of-{nshards}.parquet",
        info="results/predictions/{model}/{precision}/{task}/{taskhash}/{shard}-of-{nshards}.json",
    log:
        "logs/infer/{model}/{precision}/{task}/{taskhash}/{shard}-of-{nshards}.log",
    benchmark:
        "benchmarks/infer/{model}/{precision}/{task}/{taskhash}/{shard}-of-{nshards}.tsv"
    params:
        task=task_spec,
        trust_remote_code=lambda w: bool(PLAN.models[w.model].get("trust_remote_code", False)),
    threads: int(INFER.get("threads", 2))
    resources:
        mem_mb=infer_mem_mb,
        runtime=infer_runtime,
        gpu=infer_gpus,
    conda:
        "../envs/llmboard.yaml"
    script:
        "../scripts/infer.py"
