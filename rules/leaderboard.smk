# Cheap steps run where snakemake runs, never as cluster jobs.
localrules:
    leaderboard,
    precision_agreement,
    publish_leaderboard,


# The board's folder is named by the exact set of scores it covers, so adding a
# model (or a task, or a precision) changes its path and it is rebuilt even where
# .snakemake/ metadata is gone and every older output was restored.
rule leaderboard:
    input:
        PLAN.score_inputs(),
    output:
        multiext(
            layout.fill(
                layout.BOARD, coverage="{coverage}", table=layout.LEADERBOARD_TABLE
            ),
            *layout.LEADERBOARD_EXTS,
        ),
        multiext(
            layout.fill(
                layout.BOARD, coverage="{coverage}", table=layout.COMPARISONS_TABLE
            ),
            *layout.COMPARISONS_EXTS,
        ),
    log:
        "logs/leaderboard/{coverage}.log",
    benchmark:
        "benchmarks/leaderboard/{coverage}.tsv"
    conda:
        "../envs/llmboard.yaml"
    threads: 1
    resources:
        mem_mb=2048,
        runtime=10,
    params:
        log_level=SETTINGS.log_level,
        scores=PLAN.score_files(),
        display=PLAN.display,
        groups=PLAN.groups,
        prompting=PLAN.prompting_labels(),
        statistics=SETTINGS.statistics,
    script:
        "../scripts/leaderboard.py"


# Every precision against the highest one evaluated, document by document.
rule precision_agreement:
    input:
        PLAN.agreement_inputs(),
        # math checks and program outcomes are read from the scores, not redone
        PLAN.score_inputs(),
    output:
        multiext(
            layout.fill(
                layout.BOARD, coverage="{coverage}", table=layout.AGREEMENT_TABLE
            ),
            *layout.AGREEMENT_EXTS,
        ),
    log:
        "logs/precision_agreement/{coverage}.log",
    benchmark:
        "benchmarks/precision_agreement/{coverage}.tsv"
    conda:
        "../envs/llmboard.yaml"
    threads: 1
    resources:
        mem_mb=4096,
        runtime=10,
    params:
        log_level=SETTINGS.log_level,
        predictions=PLAN.prediction_list(),
        scores=PLAN.score_list(),
        statistics=SETTINGS.statistics,
    script:
        "../scripts/agreement.py"


rule publish_leaderboard:
    input:
        boards=BOARD_FILES,
        # rewritten when the coverage changes: going back to an older board republishes it
        coverage=PLAN.record_coverage(),
    output:
        LEADERBOARD_FILES + AGREEMENT_FILES + COMPARISON_FILES,
    log:
        "logs/leaderboard/publish.log",
    benchmark:
        "benchmarks/leaderboard/publish.tsv"
    conda:
        "../envs/llmboard.yaml"
    threads: 1
    resources:
        mem_mb=256,
        runtime=5,
    params:
        log_level=SETTINGS.log_level,
    script:
        "../scripts/publish.py"
