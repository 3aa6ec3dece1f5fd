"""A RiskConfig from a file (TOML, YAML or JSON) and the environment, checked as a whole.

The file gives the configuration, environment variables override single fields:
``CDB_RISK__MAX_DRAWDOWN_PCT=20`` sets ``max_drawdown_pct``, ``CDB_RISK__SIZING__RISK_PCT=5``
sets ``sizing.risk_pct`` (a double underscore between levels). Values are read as JSON where
they parse (numbers, ``true``/``false``, ``null``), else as text.

The merged result is validated in one step before anything uses it, so a configuration
is applied whole or refused whole, with one line that names the field, the value and the
rule it breaks: never half-applied.
"""

from __future__ import annotations

import json
import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from domain.risk import RiskConfig

ENV_PREFIX = "CDB_RISK__"


class RiskConfigError(ValueError):
    pass


def load_risk_config(path: Path, environ: Mapping[str, str] | None = None) -> RiskConfig:
    """The configuration in ``path`` with the environment's overrides (none if ``environ``
    is None)."""
    return risk_config_from(path, environ or {})


def risk_config_from(path: Path | None, environ: Mapping[str, str] = os.environ) -> RiskConfig:
    """The file's configuration (the defaults without one), overridden by ``CDB_RISK__*``."""
    raw: dict[str, Any] = _read(path) if path is not None else {}
    overridden = _overrides(environ)
    for keys, value in overridden:
        _set(raw, keys, value)
    where = f"risk config {path}" if path is not None else "risk config"
    if overridden:
        names = ", ".join(ENV_PREFIX + "__".join(k.upper() for k in keys) for keys, _ in overridden)
        where += f" (with {names})"
    try:
        return RiskConfig.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(p) for p in first["loc"]) or "(top level)"
        shown = "" if first["type"] == "missing" else f" (got {first.get('input')!r})"
        raise RiskConfigError(f"{where}: {field}: {first['msg']}{shown}") from None


def _read(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise RiskConfigError(f"cannot read risk config {path}: {exc.strerror or exc}") from None
    suffix = path.suffix.lower()
    try:
        if suffix == ".json":
            raw = json.loads(text)
        elif suffix in (".yaml", ".yml"):
            raw = yaml.safe_load(text)
            raw = {} if raw is None else raw
        else:
            raw = tomllib.loads(text)
    except (tomllib.TOMLDecodeError, json.JSONDecodeError, yaml.YAMLError) as exc:
        kind = {"json": "JSON", "yaml": "YAML", "yml": "YAML"}.get(suffix[1:], "TOML")
        reason = str(exc).splitlines()[0]
        raise RiskConfigError(f"risk config {path} is not valid {kind}: {reason}") from None
    if not isinstance(raw, dict):
        raise RiskConfigError(f"risk config {path}: expected a table of settings at the top")
    return raw


def _overrides(environ: Mapping[str, str]) -> list[tuple[list[str], Any]]:
    found = []
    for name in sorted(environ):
        if not name.startswith(ENV_PREFIX):
            continue
        keys = [part.lower() for part in name[len(ENV_PREFIX) :].split("__")]
        if not all(keys):
            raise RiskConfigError(f"{name}: expected {ENV_PREFIX}FIELD or {ENV_PREFIX}GROUP__FIELD")
        found.append((keys, _value(environ[name])))
    return found


def _value(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def _set(raw: dict[str, Any], keys: list[str], value: Any) -> None:
    node = raw
    for key in keys[:-1]:
        child = node.get(key)
        if not isinstance(child, dict):
            child = node[key] = {}
        node = child
    node[keys[-1]] = value
