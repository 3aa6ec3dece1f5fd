"""The import contracts in pyproject.toml hold: layers point inward, domain/ stays pure."""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_import_contracts_are_kept() -> None:
    # Next to the interpreter first: under pyenv a new script is on PATH only after a rehash.
    beside = Path(sys.executable).parent / "lint-imports"
    lint_imports = str(beside) if beside.exists() else shutil.which("lint-imports")
    assert lint_imports is not None, (
        "import-linter is part of the dev extra: pip install -e '.[dev]'"
    )
    done = subprocess.run(
        [lint_imports, "--no-cache"], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "5 kept, 0 broken" in done.stdout


WIRING = ROOT / "cdb" / "bootstrap.py"  # the one place that may know the concrete logs
CONCRETE_LOGS = {"EmbeddedLog", "KafkaLog"}


def _probes(path: Path) -> list[str]:
    """``isinstance(..., EmbeddedLog/KafkaLog)`` and ``getattr(<a log>, ...)`` in a module."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Name):
            continue
        if node.func.id == "isinstance" and len(node.args) == 2:
            kinds = node.args[1]
            names = kinds.elts if isinstance(kinds, ast.Tuple) else [kinds]
            if any(isinstance(n, ast.Name) and n.id in CONCRETE_LOGS for n in names):
                found.append(f"{path.relative_to(ROOT)}:{node.lineno} isinstance on a log")
        if node.func.id in ("getattr", "hasattr") and node.args:
            target = ast.unparse(node.args[0])
            if target == "log" or target.endswith(("_log", ".log")):
                found.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.func.id}({target})")
    return found


def test_no_module_probes_a_concrete_log_outside_the_wiring_place() -> None:
    # Capabilities are declared on the port (streams/log_port.py) and checked there as
    # protocols; only cdb/bootstrap.py picks between the concrete logs.
    modules = [
        path
        for package in ("domain", "streams", "projections", "cdb")
        for path in sorted((ROOT / package).rglob("*.py"))
        if path != WIRING
    ]
    assert len(modules) > 40
    probes = [probe for path in modules for probe in _probes(path)]
    assert probes == []
