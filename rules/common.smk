import os
import sys

from snakemake.exceptions import WorkflowError
from snakemake.utils import min_version

min_version("9.0")

# the llmboard package sits next to this workflow
sys.path.insert(0, workflow.basedir)

from llmboard.settings import MODEL_NAME_REGEX, load_settings, tasks_dir  # noqa: E402
from llmboard.errors import USER_ERRORS  # noqa: E402
from llmboard.workflow import layout  # noqa: E402
from llmboard.workflow.items import as_params  # noqa: E402
from llmboard.workflow.plan import build_plan  # noqa: E402

try:
    # validated against schemas/config.schema.yaml, defaults filled in from it
    SETTINGS = load_settings(config, origin="config.yaml")
    PLAN = build_plan(SETTINGS, tasks_dir(SETTINGS, workflow.basedir))
except USER_ERRORS as e:
    # a user's mistake: its message names the file and field; no Python stack
    raise WorkflowError(str(e)) from None
LEADERBOARD_FILES = PLAN.published_files(
    layout.LEADERBOARD_TABLE, layout.LEADERBOARD_EXTS
)
AGREEMENT_FILES = PLAN.published_files(layout.AGREEMENT_TABLE, layout.AGREEMENT_EXTS)
COMPARISON_FILES = PLAN.published_files(
    layout.COMPARISONS_TABLE, layout.COMPARISONS_EXTS
)
BOARD_FILES = (
    PLAN.board_files(layout.LEADERBOARD_TABLE, layout.LEADERBOARD_EXTS)
    + PLAN.board_files(layout.AGREEMENT_TABLE, layout.AGREEMENT_EXTS)
    + PLAN.board_files(layout.COMPARISONS_TABLE, layout.COMPARISONS_EXTS)
)


wildcard_constraints:
    model=MODEL_NAME_REGEX,
    key=layout.HASH12_REGEX,
    precision="|".join(PLAN.precision_names) or "fp32",
    part=layout.PART_REGEX,
    batch=layout.HASH12_REGEX,
    coverage=layout.HASH12_REGEX,


def model_entry(wildcards):
    return PLAN.models[wildcards.model]


def converted_model(wildcards):
    return PLAN.model_dir(wildcards.model)


def trust_remote_code(wildcards):
    return PLAN.models[wildcards.model].trust_remote_code


def score_inputs(wildcards):
    m, p = wildcards.model, wildcards.precision
    return PLAN.prediction_inputs(m, p, PLAN.score_tasks(m, p))


# ---------------------------------------------------------------- resources
# Host memory for an inference job: the memory plan (weights at the precision,
# activations within the token budget), larger on each retry.
def infer_mem_mb(wildcards, attempt):
    from llmboard.inference.memory_plan import job_mem_mb

    return attempt * job_mem_mb(
        PLAN.model_dir(wildcards.model),
        wildcards.precision,
        token_budget=SETTINGS.inference.token_budget,
        gpu_memory_gb=SETTINGS.resources.gpu_memory_gb,
        default_mem_mb=SETTINGS.inference.default_mem_mb,
    )


def infer_runtime(wildcards, attempt):
    return SETTINGS.resources.infer_runtime_min * attempt


def infer_gpus(wildcards):
    from llmboard.inference.memory_plan import job_gpus

    return job_gpus(
        PLAN.model_dir(wildcards.model),
        wildcards.precision,
        token_budget=SETTINGS.inference.token_budget,
        gpu_memory_gb=SETTINGS.resources.gpu_memory_gb,
        max_gpus=SETTINGS.resources.max_gpus_per_job,
    )
