# One job per model x precision x task x shard. Outputs are never temp(): they
# are the expensive part, and incremental reruns depend on them.
rule infer:
    input:
        model=converted_model,
    output:
        parquet="results/predictions/{model}/{precision}/{task}/{taskhash}/{shard}-of-{nshards}.parquet",
        info="results/predictions/{model}/{precision}/{task}/{taskhash}/{shard}-of-{nshards}.json",
    log:
        "logs/infer/{model}/{precision}/{task}/{taskhash}/{shard}-of-{nshards}.log",
    benchmark:
        "benchmarks/infer/{model}/{precision}/{task}/{taskhash}/{shard}-of-{nshards}.tsv"
    wildcard_constraints:
        # tasks that belong to a group are computed by that group's rule below
        task="|".join(PLAN.solo_tasks()) or "(?!x)x",
    conda:
        "../envs/llmboard.yaml"
    threads: int(INFER.get("threads", 2))
    resources:
        mem_mb=infer_mem_mb,
        runtime=infer_runtime,
        gpu=infer_gpus,
    params:
        tasks=lambda w: [task_spec(w)],
        trust_remote_code=lambda w: bool(
            PLAN.models[w.model].get("trust_remote_code", False)
        ),
    script:
        "../scripts/infer.py"


# A task group (MMLU's 57 subjects) is one job per model x precision x shard:
# the model is loaded once for all members; each member still gets its own
# prediction files, so scoring and reruns stay per task.
for _group, _members in PLAN.group_members().items():

    rule:
        name:
            f"infer_{_group}"
        input:
            model=converted_model,
        output:
            parquet=PLAN.group_outputs(_group, "parquet"),
            info=PLAN.group_outputs(_group, "json"),
        log:
            f"logs/infer/{{model}}/{{precision}}/{_group}/{{shard}}-of-{{nshards}}.log",
        benchmark:
            f"benchmarks/infer/{{model}}/{{precision}}/{_group}/{{shard}}-of-{{nshards}}.tsv"
        conda:
            "../envs/llmboard.yaml"
        threads: int(INFER.get("threads", 2))
        resources:
            mem_mb=infer_mem_mb,
            runtime=infer_runtime,
            gpu=infer_gpus,
        params:
            tasks=[static_task_spec(t) for t in _members],
            trust_remote_code=lambda w: bool(
                PLAN.models[w.model].get("trust_remote_code", False)
            ),
        script:
            "../scripts/infer.py"
