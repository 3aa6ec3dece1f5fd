"""A RiskConfig from a file (TOML, YAML or JSON) and the environment, checked as a whole.

The file gives the configuration, environment variables override single fields:
``CDB_RISK__MAX_DRAWDOWN_PCT=20`` sets ``max_drawdown_pct``, ``CDB_RISK__SIZING__RISK_PCT=5``
sets ``sizing.risk_pct`` (a double underscore between levels). Values are read as JSON where
they parse (numbers, ``true``/``false``, ``null``), else as text.

Guarantees:

1. The merged result is validated in one step before anything uses it, so a configuration
   is applied whole or refused whole with one ``RiskConfigError`` line that names the
   field, the value and the rule it breaks: never half-applied.
2. Types are strict, in every format and in the overrides alike: a number field takes
   numbers (an integer for a decimal is fine), never ``true`` or ``"20"``; a boolean takes
   ``true``/``false``, never ``"yes"`` or ``1``; an integer field takes no ``3.0``.
3. A key given twice in one table is refused in every format (YAML and JSON parsers would
   keep the last), naming the key.
4. Nothing in a file or a variable's content raises anything but ``RiskConfigError``.

Strictness is a property of reading outside input: the models themselves stay as they
are, so a valid configuration dumps exactly as before (the dump names the run) and the
configuration a log holds validates as it always did.
"""

from __future__ import annotations

import json
import os
import re
import reprlib
import stat
import tomllib
from collections.abc import Hashable, Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from domain.risk import RiskConfig

ENV_PREFIX = "CDB_RISK__"

_KINDS = {".json": "JSON", ".yaml": "YAML", ".yml": "YAML"}


def _short_repr() -> reprlib.Repr:
    """repr() cut short: a value in a message stays one short line whatever its size."""
    shown = reprlib.Repr()
    shown.maxlevel, shown.maxstring, shown.maxother, shown.maxlong = 2, 60, 60, 40
    return shown


_SHOWN = _short_repr()


class RiskConfigError(ValueError):
    pass


class _DuplicateKey(Exception):
    def __init__(self, key: Any, line: int | None) -> None:
        super().__init__(key, line)
        self.key = key
        self.line = line

    def __str__(self) -> str:
        where = f" (line {self.line})" if self.line is not None else ""
        return f"duplicate key {_SHOWN.repr(self.key)}{where}: give each setting once"


def load_risk_config(path: Path, environ: Mapping[str, str] | None = None) -> RiskConfig:
    """The configuration in ``path`` with the environment's overrides (none if ``environ``
    is None)."""
    return risk_config_from(path, environ or {})


def risk_config_from(path: Path | None, environ: Mapping[str, str]) -> RiskConfig:
    """The file's configuration (the defaults without one), overridden by the
    ``CDB_RISK__*`` variables of ``environ`` (the command line passes those of its
    settings, ``cdb.bootstrap.Settings.risk_overrides``)."""
    raw: dict[Any, Any] = _read(path) if path is not None else {}
    overridden = _overrides(environ)
    for keys, value in overridden:
        _set(raw, keys, value)
    where = f"risk config {path}" if path is not None else "risk config"
    if overridden:
        names = ", ".join(ENV_PREFIX + "__".join(k.upper() for k in keys) for keys, _ in overridden)
        where += f" (with {names})"
    try:
        return RiskConfig.model_validate(raw, strict=True)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(_field_name(p) for p in first["loc"]) or "(top level)"
        shown = "" if first["type"] == "missing" else f" (got {_SHOWN.repr(first.get('input'))})"
        raise RiskConfigError(f"{where}: {field}: {first['msg']}{shown}") from None
    except RecursionError:
        raise RiskConfigError(f"{where}: nested too deeply") from None


def _field_name(part: object) -> str:
    """A part of a field's path as a message shows it: quoted if it could break the line."""
    plain = isinstance(part, str | int) and str(part).isprintable() and str(part) != ""
    return str(part) if plain else _SHOWN.repr(part)


def _read(path: Path) -> dict[Any, Any]:
    kind = _KINDS.get(path.suffix.lower(), "TOML")
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):
            # A FIFO would block the read, /dev/zero never end it.
            raise RiskConfigError(f"cannot read risk config {path}: not a regular file")
        data = path.read_bytes()
    except OSError as exc:
        raise RiskConfigError(f"cannot read risk config {path}: {exc.strerror or exc}") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise RiskConfigError(
            f"risk config {path} is not a UTF-8 text file (line {line})"
        ) from None
    try:
        raw = _parse(text, kind)
    except _DuplicateKey as exc:
        raise RiskConfigError(f"risk config {path}: {exc}") from None
    except (tomllib.TOMLDecodeError, json.JSONDecodeError, yaml.YAMLError) as exc:
        reason = _parse_error(exc, text)
        raise RiskConfigError(f"risk config {path} is not valid {kind}: {reason}") from None
    except RecursionError:
        raise RiskConfigError(
            f"risk config {path} is not valid {kind}: nested too deeply"
        ) from None
    except (ValueError, OverflowError) as exc:
        # The parsers convert values as they read them: int() refuses a number of more than
        # 4,300 digits; a YAML escape or tag (\U..., !!timestamp) may name nothing that is.
        raise RiskConfigError(
            f"risk config {path} is not valid {kind}: {_unconvertible(exc)}"
        ) from None
    if not isinstance(raw, dict):
        raise RiskConfigError(f"risk config {path}: expected a table of settings at the top")
    return raw


def _parse(text: str, kind: str) -> Any:
    if kind == "JSON":
        return json.loads(text, object_pairs_hook=_unique_keys)
    if kind == "YAML":
        raw = yaml.load(text, Loader=_UniqueKeyLoader)  # a SafeLoader: plain data only
        return {} if raw is None else raw
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        # tomllib refuses a repeated key too, but does not always say which.
        duplicate = _toml_duplicate(text) if "overwrite" in str(exc) else None
        if duplicate is not None:
            raise duplicate from None
        raise


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    table: dict[str, Any] = {}
    for key, value in pairs:
        if key in table:
            raise _DuplicateKey(key, None)
        table[key] = value
    return table


class _UniqueKeyLoader(yaml.SafeLoader):
    """PyYAML's SafeLoader with two changes for settings. A mapping that gives a key twice
    is refused (PyYAML keeps the last); merge keys (``<<: *defaults``) are no duplicates, a
    key given beside them wins. Plain scalars are typed as in YAML 1.2 (as TOML and JSON
    do): only ``true``/``false`` are booleans (YAML 1.1 also read ``yes``, ``no``, ``on``,
    ``off``), ``1e-4`` is a number (1.1 read it as text), ``1_000`` and ``1:30`` are text."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Hashable, Any]:
        seen: set[Any] = set()
        for key_node, _value in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=deep)
            try:
                if key in seen:
                    raise _DuplicateKey(key, key_node.start_mark.line + 1)
                seen.add(key)
            except TypeError:
                pass  # an unhashable key: SafeLoader refuses it with its own message
        return super().construct_mapping(node, deep=deep)


def _yaml_core_scalars() -> None:
    """Swap YAML 1.1's implicit booleans, integers and floats for YAML 1.2's core schema."""
    replaced = {f"tag:yaml.org,2002:{name}" for name in ("bool", "int", "float")}
    _UniqueKeyLoader.yaml_implicit_resolvers = {
        first: [(tag, regexp) for tag, regexp in resolvers if tag not in replaced]
        for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
    }
    for tag, pattern, first in (
        ("bool", r"true|True|TRUE|false|False|FALSE", "tTfF"),
        ("int", r"[-+]?(?:0|[1-9][0-9]*)", "-+0123456789"),
        (
            "float",
            r"[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?"
            r"|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN)",
            "-+.0123456789",
        ),
    ):
        regexp = re.compile(f"^(?:{pattern})$")
        _UniqueKeyLoader.add_implicit_resolver(f"tag:yaml.org,2002:{tag}", regexp, list(first))


_yaml_core_scalars()

_TOML_TABLE = re.compile(r"\s*\[\[?\s*([^\]]*?)\s*\]\]?\s*(#.*)?$")
_TOML_KEY = re.compile(r"\s*([A-Za-z0-9_\-\.\"' ]+?)\s*=")


def _toml_duplicate(text: str) -> _DuplicateKey | None:
    """The first key given twice in one table, in a plain TOML file (one setting a line)."""
    seen: set[tuple[str, str]] = set()
    table = ""
    for number, line in enumerate(text.splitlines(), start=1):
        header = _TOML_TABLE.match(line)
        if header:
            table = header.group(1)
            continue
        key = _TOML_KEY.match(line)
        if key is None:
            continue
        name = key.group(1).replace(" ", "").replace('"', "").replace("'", "")
        if (table, name) in seen:
            return _DuplicateKey(f"{table}.{name}" if table else name, number)
        seen.add((table, name))
    return None


def _parse_error(exc: Exception, text: str) -> str:
    """One line on what the parser found wrong, and where."""
    if isinstance(exc, yaml.MarkedYAMLError) and exc.problem and exc.problem_mark:
        return f"{exc.problem} (line {exc.problem_mark.line + 1})"
    reason = (str(exc).splitlines() or ["unreadable"])[0]
    line = re.search(r"at line (\d+)", reason)
    if isinstance(exc, tomllib.TOMLDecodeError) and line:
        lines = text.splitlines()
        number = int(line.group(1))
        if 0 < number <= len(lines) and lines[number - 1].strip():
            reason += f": {_SHOWN.repr(lines[number - 1].strip())}"
    return reason


def _unconvertible(exc: ValueError | OverflowError) -> str:
    reason = (str(exc).splitlines() or [""])[0]
    if "Exceeds the limit" in reason and "digits" in reason:
        return "a number with too many digits"
    return f"a value that cannot be converted ({reason[:80]})"


def _overrides(environ: Mapping[str, str]) -> list[tuple[list[str], Any]]:
    found = []
    for name in sorted(environ):
        if not name.startswith(ENV_PREFIX):
            continue
        keys = [part.lower() for part in name[len(ENV_PREFIX) :].split("__")]
        if not all(keys):
            raise RiskConfigError(f"{name}: expected {ENV_PREFIX}FIELD or {ENV_PREFIX}GROUP__FIELD")
        try:
            found.append((keys, _value(environ[name])))
        except (_DuplicateKey, RecursionError) as exc:
            reason = "nested too deeply" if isinstance(exc, RecursionError) else str(exc)
            raise RiskConfigError(f"{name}: {reason}") from None
    return found


def _value(text: str) -> Any:
    """JSON where the text is JSON (20, true, null), else the text itself ("yes")."""
    try:
        return json.loads(text, object_pairs_hook=_unique_keys)
    except ValueError:  # not JSON, or a number of more than 4,300 digits: text then
        return text


def _set(raw: dict[Any, Any], keys: list[str], value: Any) -> None:
    node = raw
    for key in keys[:-1]:
        child = node.get(key)
        if not isinstance(child, dict):
            child = node[key] = {}
        node = child
    node[keys[-1]] = value
