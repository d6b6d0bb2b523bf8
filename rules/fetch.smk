rule fetch:
    output:
        directory("resources/checkpoints/{model}/{key}"),
    log:
        "logs/fetch/{model}/{key}.log",
    benchmark:
        "benchmarks/fetch/{model}/{key}.tsv"
    params:
        entry=model_entry,
    threads: 1
    resources:
        mem_mb=1024,
        runtime=120,
    conda:
        "../envs/llmboard.yaml"
    script:
        "../scripts/fetch.py"
