"""``cdb/bootstrap.py`` is the one wiring place: no other module of ``cdb/`` reads the
environment or looks at which concrete log it has (issue 15).

A scan of the sources with ``ast``: each rule is checked on planted code first, so that a
scan that finds nothing cannot be a scan that looks at nothing.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
WIRING_PLACE = ROOT / "cdb" / "bootstrap.py"
CONCRETE_LOGS = frozenset({"EmbeddedLog", "KafkaLog"})
CONCRETE_LOG_MODULES = frozenset({"streams.embedded_log", "streams.kafka_log"})
PROBES = frozenset({"getattr", "hasattr"})


def _name_of(node: ast.expr) -> str:
    """``a.b.c`` of a name or attribute chain ("" for anything else)."""
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        inner = _name_of(node.value)
        return f"{inner}.{node.attr}" if inner else ""
    return ""


def _is_log(node: ast.expr) -> bool:
    """A name that says it is a log: ``log``, ``self._log``, ``event_log``."""
    last = _name_of(node).rsplit(".", 1)[-1]
    return last.lstrip("_").endswith("log")


def _findings(source: str) -> list[str]:
    """What a module outside the wiring place must not do, one line each."""
    found = []
    for node in ast.walk(ast.parse(source)):
        line = getattr(node, "lineno", 0)
        if isinstance(node, ast.Attribute) and _name_of(node) in ("os.environ", "os.getenv"):
            found.append(f"line {line}: reads the environment ({_name_of(node)})")
        elif isinstance(node, ast.ImportFrom) and node.module == "os":
            names = {alias.name for alias in node.names} & {"environ", "getenv", "environb"}
            if names:
                found.append(f"line {line}: reads the environment (from os import ...)")
        if isinstance(node, ast.ImportFrom) and node.module in CONCRETE_LOG_MODULES:
            found.append(f"line {line}: imports a concrete log ({node.module})")
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name in CONCRETE_LOG_MODULES:
                    found.append(f"line {line}: imports a concrete log ({alias.name})")
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.args:
            if node.func.id == "isinstance" and len(node.args) == 2:
                kinds = node.args[1]
                named = kinds.elts if isinstance(kinds, ast.Tuple) else [kinds]
                if any(_name_of(k).rsplit(".", 1)[-1] in CONCRETE_LOGS for k in named):
                    found.append(f"line {line}: probes a concrete log (isinstance)")
            if node.func.id in PROBES and _is_log(node.args[0]):
                found.append(f"line {line}: probes a log ({node.func.id})")
    return found


@pytest.mark.parametrize(
    ("planted", "says"),
    [
        ("import os\nx = os.environ.get('CDB_LOG')\n", "reads the environment"),
        ("import os\nx = os.getenv('CDB_LOG')\n", "reads the environment"),
        ("from os import environ\n", "reads the environment"),
        ("from streams.embedded_log import EmbeddedLog\n", "imports a concrete log"),
        ("import streams.kafka_log\n", "imports a concrete log"),
        ("ok = isinstance(log, (int, EmbeddedLog))\n", "probes a concrete log"),
        ("ok = isinstance(x, kafka_log.KafkaLog)\n", "probes a concrete log"),
        ("f = getattr(log, 'follow', None)\n", "probes a log"),
        ("f = hasattr(self._log, 'read_values')\n", "probes a log"),
    ],
)
def test_the_scan_finds_each_kind_of_back_door(planted: str, says: str) -> None:
    found = _findings(planted)
    assert len(found) == 1 and says in found[0], found


def test_the_scan_leaves_what_is_allowed_alone() -> None:
    allowed = (
        "import os\nfd = os.open(os.devnull, os.O_WRONLY)\n"
        "status = getattr(event, 'status', None)\n"
        "ok = isinstance(source, CsvCandleSource)\n"
        "verbose = getattr(args, 'verbose', False)\n"
    )
    assert _findings(allowed) == []


def test_only_the_wiring_place_reads_the_environment_or_probes_the_log() -> None:
    modules = sorted((ROOT / "cdb").rglob("*.py"))
    assert WIRING_PLACE in modules and len(modules) > 10, modules
    findings = {
        str(path.relative_to(ROOT)): found
        for path in modules
        if path != WIRING_PLACE
        for found in [_findings(path.read_text(encoding="utf-8"))]
        if found
    }
    assert findings == {}
    # And the wiring place does what the others may not (else the rule would be empty).
    assert _findings(WIRING_PLACE.read_text(encoding="utf-8"))
