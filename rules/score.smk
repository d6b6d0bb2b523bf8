# Cheap: re-scoring (a new metric, a fixed normalisation) never re-runs a model.
# One job per model x precision for the score files missing on disk; it runs where
# snakemake runs.
localrules:
    score,


rule score:
    input:
        score_inputs,
    output:
        temp(layout.SCORE_RECEIPT),
    log:
        "logs/score/{model}/{precision}/{part}-{batch}.log",
    benchmark:
        "benchmarks/score/{model}/{precision}/{part}-{batch}.tsv"
    conda:
        "../envs/llmboard.yaml"
    threads: 1
    resources:
        mem_mb=2048,
        runtime=10,
    params:
        job=lambda w: as_params(PLAN.score_job(w.model, w.precision)),
    script:
        "../scripts/score.py"
