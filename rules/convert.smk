rule convert:
    input:
        lambda w: PLAN.checkpoint_dir(w.model),
    output:
        directory("resources/models/{model}/{key}"),
    log:
        "logs/convert/{model}/{key}.log",
    benchmark:
        "benchmarks/convert/{model}/{key}.tsv"
    conda:
        "../envs/llmboard.yaml"
    threads: 2
    resources:
        mem_mb=lambda w, attempt: int(
            config.get("resources", {}).get("convert_mem_mb", 8192)
        )
        * attempt,
        runtime=lambda w, attempt: 60 * attempt,
    params:
        trust_remote_code=lambda w: bool(
            PLAN.models[w.model].get("trust_remote_code", False)
        ),
        shard_gb=config.get("convert", {}).get("shard_gb", 2),
    script:
        "../scripts/convert.py"
