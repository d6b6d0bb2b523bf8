# One job per model x precision (x shard slot) computing the predictions that are
# missing on disk: the model loads once for all of them. The job's output is a
# receipt (temp: gone once scored); each task's predictions are written on their
# own, atomically, and are never deleted by a failed or killed job.
rule infer:
    input:
        model=converted_model,
    output:
        temp("results/predictions/{model}/{precision}/_jobs/{part}-{batch}.json"),
    log:
        "logs/infer/{model}/{precision}/{part}-{batch}.log",
    benchmark:
        "benchmarks/infer/{model}/{precision}/{part}-{batch}.tsv"
    conda:
        "../envs/llmboard.yaml"
    threads: int(INFER.get("threads", 2))
    resources:
        mem_mb=infer_mem_mb,
        runtime=infer_runtime,
        gpu=infer_gpus,
    params:
        batch=lambda w: PLAN.infer_items(w.model, w.precision, w.part, workflow.basedir),
        trust_remote_code=lambda w: bool(
            PLAN.models[w.model].get("trust_remote_code", False)
        ),
    script:
        "../scripts/infer.py"
