"""Config loading shared by every part: YAML/JSON files into strict models.

Invariants:
- YAML is read with ``yaml.safe_load`` only; nothing in a config file can
  construct Python objects.
- Models derive from :class:`StrictModel`: unknown keys are rejected, and
  the error names the file, the key's path and the closest valid key.
- Validation happens when the model is built; models are frozen and have no
  side effects in their constructors.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError

from mixfleet.errors import ConfigError, did_you_mean

M = TypeVar("M", bound=BaseModel)


class StrictModel(BaseModel):
    """Base for config models: unknown keys rejected, frozen once built."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def read_config_file(path: str | Path, *, what: str = "config file") -> Any:
    """Read a YAML or JSON file into plain Python data.

    Raises :class:`ConfigError` for a missing file, an unreadable one, or a
    syntax error (with its line and column).
    """
    import yaml  # lazily: keeps `import mixfleet` fast

    p = Path(path)
    if not p.exists():
        raise ConfigError(f"{what} '{p}' does not exist", "check the path")
    if p.is_dir():
        raise ConfigError(f"{what} '{p}' is a directory, not a file", "pass the file inside it")
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read {what} '{p}': {exc}", "check its permissions and encoding") from None
    if p.suffix.lower() == ".json":
        try:
            return json.loads(text)
        except json.JSONDecodeError as exc:
            raise ConfigError(
                f"malformed JSON in '{p}' at line {exc.lineno}, column {exc.colno}: {exc.msg}",
                "fix the syntax",
            ) from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"malformed YAML in '{p}'{where}: {problem}", "fix the syntax") from None


def _unwrap(annotation: Any) -> tuple[Any, bool]:
    """The model inside ``Optional``/``list``/``dict`` annotations, and whether a dict key comes next."""
    import typing

    keyed = False
    for _ in range(4):
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            break
        origin = typing.get_origin(annotation)
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if not args:
            break
        keyed = keyed or origin in (dict, typing.Mapping) or getattr(origin, "__name__", "") == "Mapping"
        annotation = args[-1]
    return annotation, keyed


def _model_at(model: type[BaseModel], loc: tuple) -> type[BaseModel] | None:
    """Walk ``loc`` through nested pydantic models to the one holding the last key."""
    current: Any = model
    skip_key = False
    for part in loc[:-1]:
        if isinstance(part, int):
            continue
        if skip_key:  # a key of a dict[str, Model]: the model is already current
            skip_key = False
            continue
        if not (isinstance(current, type) and issubclass(current, BaseModel)):
            return None
        field = current.model_fields.get(str(part))
        if field is None:
            return None
        current, skip_key = _unwrap(field.annotation)
    if isinstance(current, type) and issubclass(current, BaseModel):
        return current
    return None


def _describe(exc: ValidationError, model: type[BaseModel], source: str) -> ConfigError:
    err = exc.errors()[0]
    loc = tuple(err.get("loc", ()))
    path = ".".join(str(p) for p in loc) or "(top level)"
    if err.get("type") == "extra_forbidden" and loc:
        key = str(loc[-1])
        owner = _model_at(model, loc)
        valid = sorted(owner.model_fields) if owner else []
        hint = f"valid keys here: {', '.join(valid)}" if valid else "remove it"
        return ConfigError(f"unknown key '{path}' in {source}{did_you_mean(key, valid)}", hint)
    if err.get("type") == "missing":
        return ConfigError(f"missing key '{path}' in {source}", "add it")
    value = err.get("input")
    shown = repr(value) if not isinstance(value, (dict, list)) else type(value).__name__
    return ConfigError(f"bad value {shown} for '{path}' in {source}: {err.get('msg')}", "fix that value")


def parse_model(data: Any, model: type[M], *, source: str = "config") -> M:
    """Build ``model`` from plain data, turning validation errors into one line."""
    if data is None:
        raise ConfigError(f"{source} is empty", f"it must be a mapping for {model.__name__}")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise _describe(exc, model, source) from None


def load_model(path: str | Path, model: type[M], *, what: str = "config file") -> M:
    """Read ``path`` (YAML or JSON) and validate it as ``model``."""
    return parse_model(read_config_file(path, what=what), model, source=f"'{path}'")
