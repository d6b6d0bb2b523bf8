"""JSON Schema validation shared by the config and the task files.

``schemas/*.schema.yaml`` is the one place for each field's type, range and default:
data is validated against its schema and the schema's defaults are filled in, so no
default is written a second time in code. Problems come back as one line each, naming
the field (``dataset.split``) so that the caller can name the file too.
"""

from __future__ import annotations

import copy
from functools import cache
from pathlib import Path

import yaml

SCHEMAS = Path(__file__).resolve().parent.parent / "schemas"


@cache
def load_schema(name: str) -> dict:
    """``schemas/{name}.schema.yaml`` (cached: the Snakefile reads tasks on every parse)."""
    return yaml.safe_load((SCHEMAS / f"{name}.schema.yaml").read_text())


@cache
def _validator(name: str):
    """A jsonschema validator that also fills in the schema's defaults (the jsonschema
    FAQ's recipe): an object given a default ``{}`` then gets its own properties'
    defaults, so every field has a value after validation."""
    from jsonschema import Draft202012Validator, validators

    validate_properties = Draft202012Validator.VALIDATORS["properties"]

    def properties_with_defaults(validator, properties, instance, sch):
        if isinstance(instance, dict):
            for field, sub in properties.items():
                if "default" in sub:
                    instance.setdefault(field, copy.deepcopy(sub["default"]))
        yield from validate_properties(validator, properties, instance, sch)

    cls = validators.extend(Draft202012Validator, {"properties": properties_with_defaults})
    return cls(load_schema(name))


def where(path) -> str:
    """A field's place as the user writes it: ``dataset.split``, ``models.m.source``."""
    return ".".join(str(p) for p in path)


def _message(error) -> str:
    """One line for a schema error, with the field named; unknown and missing fields are
    said in those words (jsonschema's own text would name neither well)."""
    at = where(error.absolute_path)
    prefix = f"{at}: " if at else ""
    if error.validator == "additionalProperties":
        known = sorted(error.schema.get("properties", {}))
        unknown = sorted(set(error.instance) - set(known))
        return f"{prefix}unknown field(s) {unknown}; known: {known}"
    if error.validator == "required":
        missing = [f for f in error.validator_value if f not in error.instance]
        return f"{prefix}missing field(s) {missing}"
    return f"{prefix}{error.message}"


def problems(data: dict, schema: str) -> list[str]:
    """Validate ``data`` against ``schemas/{schema}.schema.yaml``, filling in its defaults
    (in place); the problems, one line each, in the order of the fields."""
    # by field; at one field, unknown names first (a misspelt field is also a missing one)
    errors = sorted(
        _validator(schema).iter_errors(data),
        key=lambda e: (list(map(str, e.absolute_path)), e.validator != "additionalProperties"),
    )
    # a failed `if`/`then` or `anyOf` reports its branches' errors: the deepest say most
    return list(dict.fromkeys(_message(e) for e in errors))
