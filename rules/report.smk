# The HTML report: results/report/index.html and the pages it links, built from the
# published board, its score files and their predictions (llmboard.results.report).
# It is built into a staging folder (temp) and copied whole into results/report, so a
# build that fails (an unreadable score file, say) leaves the previous report as it was.
localrules:
    report,
    publish_report,


REPORT_INDEX_FILE = os.path.join(layout.REPORT_DIR, layout.REPORT_INDEX)


rule report:
    input:
        board=layout.fill(layout.PUBLISHED, table=layout.LEADERBOARD_TABLE) + ".parquet",
        agreement=layout.fill(layout.PUBLISHED, table=layout.AGREEMENT_TABLE)
        + ".parquet",
        tables=LEADERBOARD_FILES + AGREEMENT_FILES + COMPARISON_FILES,
    output:
        temp(directory(layout.REPORT_STAGING)),
    log:
        "logs/report/build.log",
    benchmark:
        "benchmarks/report/build.tsv"
    conda:
        "../envs/llmboard.yaml"
    threads: 2
    resources:
        mem_mb=4096,
        runtime=30,
    params:
        log_level=SETTINGS.log_level,
        display=PLAN.display,
        groups=PLAN.groups,
        tasks_dir=str(tasks_dir(SETTINGS, workflow.basedir)),
        benchmarks="benchmarks",
        # sizes and hashes (`llmboard verify --fast`): the full check re-hashes every
        # weight file and recomputes every score, minutes on a large board
        verify="fast",
    script:
        "../scripts/report.py"


rule publish_report:
    input:
        layout.REPORT_STAGING,
    output:
        index=REPORT_INDEX_FILE,
        leaderboard=report(
            os.path.join(layout.REPORT_DIR, layout.REPORT_LEADERBOARD_CSV),
            caption="report/leaderboard.rst",
            category="Leaderboard",
            subcategory="Tables",
            labels={"table": "leaderboard", "precision": "all"},
        ),
        heatmaps=report(
            directory(os.path.join(layout.REPORT_DIR, layout.REPORT_HEATMAPS)),
            patterns=["{precision}.svg"],
            caption="report/heatmap.rst",
            category="Leaderboard",
            subcategory="Heatmaps",
            labels={"figure": "heatmap", "precision": "{precision}"},
        ),
        agreement=report(
            os.path.join(layout.REPORT_DIR, layout.REPORT_PRECISION_CSV),
            caption="report/agreement.rst",
            category="Precision",
            subcategory="Tables",
            labels={"table": "agreement", "model": "all"},
        ),
        precision_plots=report(
            directory(os.path.join(layout.REPORT_DIR, layout.REPORT_PRECISION_PLOTS)),
            patterns=["{model}.svg"],
            caption="report/precision_plot.rst",
            category="Precision",
            subcategory="Plots",
            labels={"figure": "score against bits per weight", "model": "{model}"},
        ),
        task_tables=report(
            directory(os.path.join(layout.REPORT_DIR, layout.REPORT_TASK_TABLES)),
            patterns=["{task}.csv"],
            caption="report/task_scores.rst",
            category="Tasks",
            labels={"table": "scores", "task": "{task}"},
        ),
    log:
        "logs/report/publish.log",
    benchmark:
        "benchmarks/report/publish.tsv"
    conda:
        "../envs/llmboard.yaml"
    threads: 1
    resources:
        mem_mb=512,
        runtime=5,
    params:
        log_level=SETTINGS.log_level,
    script:
        "../scripts/publish_report.py"
