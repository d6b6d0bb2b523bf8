"""Where every file of a run lives: each path pattern written once.

The rules' ``output:`` use these patterns (with Snakemake wildcards), and the plan
fills them in for concrete jobs (``layout.fill``), so the two can never disagree.
Every path that stands for a computation carries the hash of what decides its
numbers (source key, task hash, scorer version), so what exists on disk is current.
"""

from __future__ import annotations

# ---------------------------------------------------------------- checkpoints
CHECKPOINT_DIR = "resources/checkpoints/{model}/{key}"  # as fetched, with fetch.json
MODEL_DIR = "resources/models/{model}/{key}"  # converted safetensors, with manifest.json
PARTIAL_DIR = "resources/.partial"  # resumable downloads

# ---------------------------------------------------------------- predictions and scores
# one task shard's raw outputs ({ext}: parquet rows, json sidecar); {task_key} hashes the
# task's definition and its data's identity (plan.task_key)
PREDICTION = (
    "results/predictions/{model}/{key}/{precision}/{task}/{task_key}/{shard}-of-{n_shards}.{ext}"
)
SCORE = "results/scores/{model}/{key}/{precision}/{task}/{task_key}-{scorer}.json"
# a job's Snakemake output (temp): the work of one batch is done
INFER_RECEIPT = "results/predictions/{model}/{precision}/_jobs/{part}-{batch}.json"
SCORE_RECEIPT = "results/scores/{model}/{precision}/_jobs/{part}-{batch}.json"
RECEIPT_FOLDER = "_jobs"  # receipts sit in such folders: never a score or a prediction

# ---------------------------------------------------------------- aggregates
# a board's folder is named by the exact set of scores it covers
BOARD = "results/boards/{coverage}/{table}"
PUBLISHED = "results/{table}"  # the current board, copied
COVERAGE = "results/.coverage"  # the coverage of the board to publish (plan.record_coverage)
LEADERBOARD_TABLE = "leaderboard"
AGREEMENT_TABLE = "precision_agreement"
LEADERBOARD_EXTS = (".parquet", ".csv", ".md")
AGREEMENT_EXTS = (".parquet", ".md")
COMPARISONS_TABLE = "comparisons"  # every two rows of the board, paired (board_statistics)
COMPARISONS_EXTS = (".parquet", ".md")

# ---------------------------------------------------------------- the HTML report
# built into REPORT_STAGING (temp) and copied whole to REPORT_DIR, so a failed build
# leaves the published report as it was; the names below are inside either folder
REPORT_DIR = "results/report"
REPORT_STAGING = "results/.report-staging"
REPORT_INDEX = "index.html"
REPORT_HEATMAPS = "figures/heatmaps"  # {precision}.svg
REPORT_PRECISION_PLOTS = "figures/precision"  # {model}.svg
REPORT_TASK_TABLES = "tables/tasks"  # {task}.csv: every model's score on the task
REPORT_LEADERBOARD_CSV = "data/leaderboard_report.csv"  # wide, raw and normalised
REPORT_PRECISION_CSV = "data/precision_report.csv"  # each precision against the reference

# ---------------------------------------------------------------- job parts
# which part of a model x precision's work a job does: "{shard slot}.{chunk}", or "all"
PART_ALL = "all"
PART_REGEX = r"\d+\.\d+|all"
HASH12_REGEX = r"[0-9a-f]{12}"

GPU_LOCK_DIR = ".llmboard/gpu-locks"
FILE_HASH_CACHE = ".llmboard/file-hashes.json"  # local checkpoints' file sha256s by size, mtime


def part_name(shard_slot: int, chunk: int) -> str:
    return f"{shard_slot}.{chunk}"


def fill(pattern: str, **values) -> str:
    """A pattern with every wildcard given: a concrete path."""
    return pattern.format(**values)
