"""Fuzzing the risk-configuration loader: whatever the file and the environment hold, the
outcome is a RiskConfig or one ``RiskConfigError`` line, never another exception.

Inputs are random value trees written as TOML, YAML or JSON (mostly real setting names,
values of every type), then mutated (lines doubled, bytes cut, inserted, made non-UTF-8),
plus random text and random ``CDB_RISK__*`` overrides.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml
from hypothesis import event, given
from hypothesis import strategies as st

from cdb.risk_file import RiskConfigError, load_risk_config, risk_config_from
from domain.intensity import IntensityConfig
from domain.risk import CooldownConfig, RiskConfig, SizingConfig
from tests.support.fuzzing import fuzz_settings

TABLES = {"sizing": SizingConfig, "cooldown": CooldownConfig, "intensity": IntensityConfig}
FIELDS = sorted(RiskConfig.model_fields)
NESTED = sorted(
    {f"{table}.{name}" for table, model in TABLES.items() for name in model.model_fields}
)

scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats()
    | st.sampled_from([0, 1, 5, 20, 50, 99.5, 100, 101, 1e-9, "yes", "true", "20", ""])
    | st.text(max_size=12)
)
values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=8,
)
# Values a real setting could take: enough of them make a whole valid configuration.
plausible = st.sampled_from([True, False, None, 1, 3, 5, 10, 20, 30, 0.5, 2.5, 60.0])
odd_keys = st.sampled_from(["", "a\nb", "x\u2028y", "0"]) | st.text(max_size=10)
keys = st.one_of(*[st.sampled_from(FIELDS)] * 6, odd_keys)  # mostly real names


@st.composite
def trees(draw: st.DrawFn) -> dict[str, Any]:
    """A settings table: top-level fields and tables, mostly with real names."""
    tree: dict[str, Any] = draw(st.dictionaries(keys, plausible | plausible | values, max_size=6))
    for dotted in draw(st.lists(st.sampled_from(NESTED), max_size=4)):
        table, name = dotted.split(".")
        if not isinstance(tree.get(table), dict):
            tree[table] = {}
        tree[table][name] = draw(plausible | plausible | values)
    return tree


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and not math.isfinite(value):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{_toml_key(k)} = {_toml_value(v)}" for k, v in value.items()) + "}"
    return json.dumps("" if value is None else str(value))  # TOML has no null


def _toml_key(key: str) -> str:
    bare = key and key.isascii() and all(c.isalnum() or c in "_-" for c in key)
    return key if bare else json.dumps(key)


def _toml_pair(key: str, value: Any) -> str:
    return f"{_toml_key(key)} = {_toml_value(value)}\n"


def _toml(tree: dict[str, Any]) -> str:
    """A tree as TOML: scalars and arrays first, then a [table] for each nested dict."""
    plain = [_toml_pair(k, v) for k, v in tree.items() if not isinstance(v, dict)]
    tables = [
        f"[{_toml_key(k)}]\n" + "".join(_toml_pair(n, x) for n, x in v.items())
        for k, v in tree.items()
        if isinstance(v, dict)
    ]
    return "".join(plain) + "".join(tables)


def _written(tree: dict[str, Any], suffix: str) -> str:
    if suffix == ".json":
        return json.dumps(tree)
    if suffix == ".yaml":
        return yaml.safe_dump(tree)
    return _toml(tree)


MUTATIONS = ["double", "cut", "insert", "drop", "digits", "odd", "odd"]
ODD_VALUES = [
    b' "\\U00110000"',
    b' "\\U99999999999999999999"',
    b' !!int "0x"',
    b' !!timestamp "2001-13-45"',
    b' !!binary "x"',
    b" !!python/object:os.system x",
    b" &a [*a]",
    b' "\\ud800"',
]


@st.composite
def files(draw: st.DrawFn) -> tuple[str, bytes]:
    """(suffix, content): a written tree, mutated or not, or random text."""
    suffix = draw(st.sampled_from([".toml", ".yaml", ".json"]))
    if draw(st.integers(0, 9)) == 0:
        return suffix, draw(st.binary(max_size=60) | st.text(max_size=60).map(str.encode))
    data = _written(draw(trees()), suffix).encode()
    for _ in range(draw(st.sampled_from([0, 0, 1, 1, 2]))):
        lines = data.splitlines(keepends=True) or [b""]
        at = draw(st.integers(0, len(lines) - 1))
        mutation = draw(st.sampled_from(MUTATIONS))
        if mutation == "double":  # the same setting twice
            lines.insert(at, lines[at])
        elif mutation == "odd":  # a setting's value: an escape or tag that names nothing
            key, colon, _value = lines[at].partition(b":" if suffix == ".yaml" else b"=")
            lines[at] = key + (colon or b":") + draw(st.sampled_from(ODD_VALUES)) + b"\n"
        elif mutation == "drop":
            del lines[at]
        else:
            text = b"".join(lines)
            where = draw(st.integers(0, len(text)))
            if mutation == "cut":
                text = text[:where] + text[where + draw(st.integers(1, 8)) :]
            elif mutation == "digits":  # beyond what int() reads (4,300 digits)
                text = text[:where] + b"9" * 4_400 + text[where:]
            else:
                text = text[:where] + draw(st.binary(min_size=1, max_size=4)) + text[where:]
            lines = [text]
        data = b"".join(lines)
    return suffix, data


overrides = st.dictionaries(
    st.sampled_from(
        [f"CDB_RISK__{f.upper()}" for f in FIELDS]
        + [f"CDB_RISK__{d.replace('.', '__').upper()}" for d in NESTED]
        + ["CDB_RISK__", "CDB_RISK____X", "CDB_RISK__SIZING", "OTHER"]
    ),
    st.sampled_from(
        ["true", "yes", "1", "20", "-1", "null", "NaN", "1e999", '{"a": 1}', "9" * 4_400]
    )
    | st.text(max_size=10),
    max_size=3,
)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("fuzz-risk")


@fuzz_settings(600)
@given(case=files(), environ=overrides)
def test_a_risk_config_or_one_error_line(
    workdir: Path, case: tuple[str, bytes], environ: dict[str, str]
) -> None:
    suffix, content = case
    path = workdir / f"risk{suffix}"
    path.write_bytes(content)
    try:
        config = risk_config_from(path, environ)
    except RiskConfigError as exc:
        message = str(exc)
        assert message and "\n" not in message
        event(f"refused: {message.split(': ')[1][:30] if ': ' in message else message[:30]}")
        return
    event("a configuration")
    # What the loader accepts it accepts again from its own dump (what a log holds).
    again = workdir / "again.json"
    again.write_bytes(orjson.dumps(config.model_dump()))
    assert load_risk_config(again) == config
