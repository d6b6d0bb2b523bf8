# fetch runs where snakemake runs, never as a cluster job: compute nodes often have
# no internet, the submit host does.
localrules:
    fetch,


rule fetch:
    output:
        directory(layout.CHECKPOINT_DIR),
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
        log_level=SETTINGS.log_level,
        source=lambda w: PLAN.models[w.model].source_fields(),
        partial_dir=layout.PARTIAL_DIR,
    script:
        "../scripts/fetch.py"
