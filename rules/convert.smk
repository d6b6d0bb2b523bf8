rule convert:
    input:
        lambda w: PLAN.checkpoint_dir(w.model),
    output:
        directory(layout.MODEL_DIR),
    log:
        "logs/convert/{model}/{key}.log",
    benchmark:
        "benchmarks/convert/{model}/{key}.tsv"
    conda:
        "../envs/llmboard.yaml"
    threads: 2
    resources:
        mem_mb=lambda w, attempt: SETTINGS.resources.convert_mem_mb * attempt,
        runtime=lambda w, attempt: 60 * attempt,
    params:
        log_level=SETTINGS.log_level,
        trust_remote_code=trust_remote_code,
        shard_gb=SETTINGS.convert_shard_gb,
    script:
        "../scripts/convert.py"
