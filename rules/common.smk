import os
import sys

from snakemake.utils import min_version, validate

min_version("9.0")

# the llmboard package sits next to this workflow
sys.path.insert(0, workflow.basedir)

from llmboard.workflow import build_plan  # noqa: E402 (after sys.path)

validate(config, schema="../schemas/config.schema.yaml")

PLAN = build_plan(
    config, os.path.join(workflow.basedir, config.get("tasks_dir", "tasks"))
)
PRECISION_NAMES = sorted({p for ps in PLAN.precisions.values() for p in ps})
BOARD = PLAN.board_prefix()
LEADERBOARD_FILES = expand("results/leaderboard.{ext}", ext=["parquet", "csv", "md"])
AGREEMENT_FILES = expand("results/precision_agreement.{ext}", ext=["parquet", "md"])
BOARD_FILES = multiext(BOARD, ".parquet", ".csv", ".md") + [
    BOARD.replace("leaderboard", "precision_agreement") + ext
    for ext in (".parquet", ".md")
]
INFER = config.get("inference", {})


wildcard_constraints:
    model=r"[A-Za-z0-9][A-Za-z0-9._-]*",
    key=r"[0-9a-f]{12}",
    precision="|".join(PRECISION_NAMES) or "fp32",
    part=r"\d+\.\d+|all",
    batch=r"[0-9a-f]{12}",
    coverage=r"[0-9a-f]{12}",


def model_entry(wildcards):
    return PLAN.models[wildcards.model]


def converted_model(wildcards):
    return PLAN.model_dir(wildcards.model)


def score_inputs(wildcards):
    m, p = wildcards.model, wildcards.precision
    return PLAN.prediction_inputs(m, p, PLAN.score_tasks(m, p))


# ---------------------------------------------------------------- resources
# Host memory for an inference job: weights at the precision, twice over while
# loading (low_cpu_mem_usage still holds a shard and the model), plus a margin.
def infer_mem_mb(wildcards, attempt):
    from llmboard.memplan import job_mem_mb

    return (
        job_mem_mb(PLAN.model_dir(wildcards.model), wildcards.precision, config)
        * attempt
    )


def infer_runtime(wildcards, attempt):
    return int(config.get("resources", {}).get("infer_runtime_min", 60)) * attempt


def infer_gpus(wildcards):
    from llmboard.memplan import job_gpus

    return job_gpus(PLAN.model_dir(wildcards.model), wildcards.precision, config)
