# Cheap: re-scoring (a new metric, a fixed normalisation) never re-runs a model.
rule score:
    input:
        parquets=prediction_parquets,
        infos=prediction_infos,
    output:
        "results/scores/{model}/{precision}/{task}/{taskhash}-{scorer}.json",
    log:
        "logs/score/{model}/{precision}/{task}/{taskhash}-{scorer}.log",
    benchmark:
        "benchmarks/score/{model}/{precision}/{task}/{taskhash}-{scorer}.tsv"
    conda:
        "../envs/llmboard.yaml"
    threads: 1
    resources:
        mem_mb=2048,
        runtime=10,
    params:
        metrics=lambda w: PLAN.tasks[w.task].metrics,
        primary_metric=lambda w: PLAN.tasks[w.task].primary_metric,
    script:
        "../scripts/score.py"
