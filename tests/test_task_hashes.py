"""Every shipped task keeps its hash: a change to how task files are read, validated or
defaulted must not alter a prompt, a split or a metric unnoticed (a changed hash re-runs
every board's predictions of that task).

tests/data/task_hashes.json was written by the task loader of commit 358f647 (before the
task schema), for each task file bare and with config.yaml's overrides (its limits).
A task whose definition changes on purpose gets its new hash written there in the same
commit, with the reason in the commit message."""

import json
from pathlib import Path

import pytest
import yaml

from llmboard.tasks.definitions import find_task_files, group_spec, is_group, load_task

ROOT = Path(__file__).resolve().parent.parent
PINNED = json.loads((Path(__file__).parent / "data" / "task_hashes.json").read_text())
INDEX = find_task_files(ROOT / "tasks")
TASKS = sorted(n for n, p in INDEX.items() if not is_group(p))


def config_overrides() -> dict[str, dict]:
    """task -> the overrides config.yaml gives it (a group's apply to each member)."""
    out = {}
    for name, over in yaml.safe_load((ROOT / "config.yaml").read_text())["tasks"].items():
        if is_group(INDEX[name]):
            for members in group_spec(INDEX[name])["subgroups"].values():
                out.update(dict.fromkeys(members, over))
        else:
            out[name] = over
    return out


def test_every_shipped_task_is_pinned():
    assert TASKS == sorted(PINNED["bare"])
    assert sorted(config_overrides()) == sorted(PINNED["config.yaml"])


@pytest.mark.parametrize("name", TASKS)
def test_task_hash_unchanged(name):
    assert load_task(INDEX[name]).hash == PINNED["bare"][name]
    over = config_overrides().get(name)
    if over is not None:
        assert load_task(INDEX[name], over).hash == PINNED["config.yaml"][name]
