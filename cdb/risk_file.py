"""Reading a RiskConfig from a TOML or JSON file, with one clear error when it is wrong."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from domain.risk import RiskConfig


class RiskConfigError(ValueError):
    pass


def load_risk_config(path: Path) -> RiskConfig:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise RiskConfigError(f"cannot read risk config {path}: {exc.strerror or exc}") from None
    try:
        raw: dict[str, Any] = json.loads(text) if path.suffix == ".json" else tomllib.loads(text)
    except (tomllib.TOMLDecodeError, json.JSONDecodeError) as exc:
        raise RiskConfigError(f"risk config {path} is not valid TOML/JSON: {exc}") from None
    try:
        return RiskConfig.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "(top level)"
        raise RiskConfigError(f"risk config {path}: {where}: {first['msg']}") from None
