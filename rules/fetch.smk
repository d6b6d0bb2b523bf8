rule fetch:
    output:
        directory("resources/checkpoints/{model}/{key}"),
    log:
        "logs/fetch/{model}/{key}.log",
    benchmark:
        "benchmarks/fetch/{model}/{key}.tsv"
    conda:
        "../envs/llmboard.yaml"
    threads: 1
    resources:
        mem_mb=1024,
        runtime=120,
    params:
        entry=model_entry,
    script:
        "../scripts/fetch.py"
