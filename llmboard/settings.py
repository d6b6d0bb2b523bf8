"""Typed settings, built once from ``config.yaml``.

``schemas/config.schema.yaml`` is the one place for every setting's type, range and
default: the config is validated against it and its defaults are filled in, then
turned into frozen dataclasses. Library functions take plain values from these,
never the config dict.
"""

from __future__ import annotations

import copy
import os
from dataclasses import dataclass
from pathlib import Path

from .hashing import sha256_json, short
from .validation import load_schema, problems
from .yamlfiles import read_mapping


class SettingsError(ValueError):
    """A config that cannot be used; the message names the file and the field."""


def schema() -> dict:
    return load_schema("config")


def schema_default(*path: str):
    """The schema's default of a setting, e.g. ``schema_default("inference", "token_budget")``,
    for library callers outside a workflow (tests, the CLI on a bare model config)."""
    node = schema()
    for name in path:
        node = node["properties"][name]
    return copy.deepcopy(node["default"])


def _model_name_regex() -> str:
    return schema()["properties"]["models"]["propertyNames"]["pattern"].strip("^$")


def task_override_fields() -> tuple[str, ...]:
    """The task fields a config may override (``tasks: {name: {...}}``)."""
    return tuple(schema()["properties"]["tasks"]["additionalProperties"]["properties"])


@dataclass(frozen=True)
class Prompting:
    """How an entry's prompts are rendered: lm-eval's ``--apply_chat_template``
    (``chat_template``: False, True for the tokenizer's own, or a template name),
    ``--system_instruction`` and ``--fewshot_as_multiturn``. The default is raw prompts."""

    chat_template: bool | str = False
    system_instruction: str | None = None
    fewshot_as_multiturn: bool = False

    @property
    def is_raw(self) -> bool:
        return self == RAW

    def as_dict(self) -> dict:
        return {
            "chat_template": self.chat_template,
            "system_instruction": self.system_instruction,
            "fewshot_as_multiturn": self.fewshot_as_multiturn,
        }

    @property
    def label(self) -> str:
        """Short, for tables: ``raw``, ``chat``, ``chat:<name>``, plus ``+multiturn`` and
        ``+system:<sha256 of the instruction, 8 hex>``."""
        parts = [
            "raw"
            if self.chat_template is False
            else "chat"
            if self.chat_template is True
            else f"chat:{self.chat_template}"
        ]
        if self.fewshot_as_multiturn:
            parts.append("multiturn")
        if self.system_instruction is not None:
            parts.append(f"system:{short(sha256_json(self.system_instruction), 8)}")
        return "+".join(parts)


RAW = Prompting()


def prompting_of(entry: dict, name: str, origin: str = "config") -> Prompting:
    """An entry's prompting, with lm-eval's CLI rules: ``fewshot_as_multiturn`` unset is on
    with a chat template and off without; set on without one is an error (lm-eval's too).
    An empty system instruction is none (lm-eval renders both alike)."""
    chat = entry.get("chat_template", False)
    multiturn = entry.get("fewshot_as_multiturn")
    if multiturn is None:
        multiturn = chat is not False
    elif multiturn and chat is False:
        raise SettingsError(
            f"{origin}: models.{name}.fewshot_as_multiturn: true needs a chat_template "
            "(as lm-eval's --fewshot_as_multiturn needs --apply_chat_template)"
        )
    return Prompting(chat, entry.get("system_instruction") or None, bool(multiturn))


@dataclass(frozen=True)
class ModelEntry:
    name: str
    source: str
    revision: str | None
    sha256: str | None
    allow_patterns: tuple[str, ...]
    trust_remote_code: bool
    precisions: tuple[str, ...]  # the global list unless the entry has its own
    prompting: Prompting = RAW

    def source_fields(self) -> dict:
        """The fields that say where the checkpoint comes from (``parse_source``'s input)."""
        out = {"source": self.source, "revision": self.revision, "sha256": self.sha256}
        if self.allow_patterns:
            out["allow_patterns"] = list(self.allow_patterns)
        return {k: v for k, v in out.items() if v is not None}


@dataclass(frozen=True)
class InferenceSettings:
    backend: str
    token_budget: int
    tasks_per_job: int
    threads: int
    device_map: str | None
    max_memory: dict | None
    offload_folder: str | None
    default_mem_mb: int
    batch_invariant: bool
    draft_tokens: int

    @classmethod
    def defaults(cls) -> InferenceSettings:
        """``inference:`` as a config that leaves it out gets it: the schema's defaults
        (for callers that load a model as a job would without a config: benchmarks)."""
        fields = schema()["properties"]["inference"]["properties"]
        return cls(**{name: schema_default("inference", name) for name in fields})


@dataclass(frozen=True)
class ResourceSettings:
    gpu_memory_gb: float | None
    max_gpus_per_job: int | None
    local_gpus: int | tuple[int, ...] | None
    infer_runtime_min: int
    convert_mem_mb: int


@dataclass(frozen=True)
class Settings:
    models: dict[str, ModelEntry]
    precisions: tuple[str, ...]
    tasks: dict[str, dict]  # task or group name -> overrides (config order kept)
    tasks_dir: str
    seed: int
    log_level: str
    inference: InferenceSettings
    convert_shard_gb: float
    resources: ResourceSettings
    request_store: str | None  # its folder; None when turned off
    code_execution: dict  # the config's code_execution mapping, defaults filled in
    statistics: dict  # the config's statistics mapping (and its seed), defaults filled in

    def sandbox(self) -> dict:
        """The settings a code task's programs run with: code_execution less its switch."""
        return {k: v for k, v in self.code_execution.items() if k != "allow_code_execution"}


def load_settings(config: dict, origin: str = "config") -> Settings:
    """Validate ``config`` (not changed) and build the settings; ``origin`` names the file
    in errors."""
    data = copy.deepcopy(config or {})
    found = problems(data, "config")
    if found:
        raise SettingsError(
            f"{origin}: "
            + "; ".join(found[:5])
            + (f" (and {len(found) - 5} more)" if len(found) > 5 else "")
        )
    precisions = tuple(data["precisions"])
    models = {
        name: ModelEntry(
            name=name,
            source=e["source"],
            revision=e.get("revision"),
            sha256=e.get("sha256"),
            allow_patterns=tuple(e.get("allow_patterns") or ()),
            trust_remote_code=e["trust_remote_code"],
            precisions=tuple(e.get("precisions") or precisions),
            prompting=prompting_of(e, name, origin),
        )
        for name, e in sorted(data["models"].items())
    }
    inf, res = data["inference"], data["resources"]
    local = res["local_gpus"]
    return Settings(
        models=models,
        precisions=precisions,
        tasks={name: dict(o or {}) for name, o in data["tasks"].items()},
        tasks_dir=data["tasks_dir"],
        seed=data["seed"],
        log_level=data["log_level"],
        inference=InferenceSettings(**inf),
        convert_shard_gb=float(data["convert"]["shard_gb"]),
        request_store=(
            data["request_store"]["folder"] if data["request_store"]["enabled"] else None
        ),
        resources=ResourceSettings(
            **{**res, "local_gpus": tuple(local) if isinstance(local, list) else local}
        ),
        code_execution=dict(data["code_execution"]),
        statistics={**data["statistics"], "seed": data["seed"]},
    )


def read_config(path: str | os.PathLike) -> dict:
    """config.yaml as a dict; an unreadable or malformed file is named in the error."""
    return read_mapping(path, SettingsError, "settings (models:, tasks:, ...)")


def settings_from_file(path: str | os.PathLike) -> Settings:
    return load_settings(read_config(path), origin=str(path))


def tasks_dir(settings: Settings, base: str | os.PathLike) -> Path:
    """The task folder, relative to ``base`` (the workflow or config folder) unless absolute."""
    return Path(base) / settings.tasks_dir


MODEL_NAME_REGEX = _model_name_regex()
