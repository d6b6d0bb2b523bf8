# One job per model x precision (x shard slot) computing the predictions that are
# missing on disk: the model loads once for all of them. The job's output is a
# receipt (temp: gone once scored); each task's predictions are written on their
# own, atomically, and are never deleted by a failed or killed job.
rule infer:
    input:
        model=converted_model,
    output:
        temp(layout.INFER_RECEIPT),
    log:
        "logs/infer/{model}/{precision}/{part}-{batch}.log",
    benchmark:
        "benchmarks/infer/{model}/{precision}/{part}-{batch}.tsv"
    conda:
        "../envs/llmboard.yaml"
    threads: SETTINGS.inference.threads
    resources:
        mem_mb=infer_mem_mb,
        runtime=infer_runtime,
        gpu=infer_gpus,
    params:
        # the whole job as one value (llmboard.workflow.items.InferJob)
        job=lambda w: as_params(
            PLAN.infer_job(w.model, w.precision, w.part, workflow.basedir)
        ),
    script:
        "../scripts/infer.py"
