"""Which code a run or a snapshot was made by: the code that decides.

``code_version()`` is ``claire-de-binare <package version> domain:<12 hex digits>``: the
digits are a sha256 over the syntax trees of every ``domain/**/*.py`` file (by path),
with docstrings left out and without positions, so comments, docstrings and layout do
not count and everything else in ``domain/`` (every rule, constant, strategy, event
field) does. Run metadata records it and every snapshot carries it; a snapshot is only
restored by the code version that took it (``streams.snapshots``).

The trees are walked field by field, fields that are absent or empty left out, so the
digest is the same on Python versions whose syntax trees differ only by fields added
later (as 3.12's ``type_params``, empty in this code).

Worked out once per process, when first asked for: about 30 ms to parse the sources,
never at import, so ``cdb --help`` does not pay for it.
"""

from __future__ import annotations

import ast
import functools
import hashlib
from importlib import metadata
from pathlib import Path

import domain

PACKAGE = "claire-de-binare"
DOMAIN_ROOT = Path(domain.__file__).resolve().parent
_DIGEST_LENGTH = 12


@functools.cache
def code_version() -> str:
    """The version of the code that decides, recorded in run metadata and snapshots."""
    return f"{PACKAGE} {package_version()} domain:{domain_digest(DOMAIN_ROOT)}"


def package_version() -> str:
    try:
        return metadata.version(PACKAGE)
    except metadata.PackageNotFoundError:
        return "(not installed)"


def domain_digest(root: Path) -> str:
    """The digest of the deciding code under ``root`` (a copy of ``domain/`` will do)."""
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*.py"), key=lambda p: p.relative_to(root).as_posix()):
        name = path.relative_to(root).as_posix()
        tree = ast.parse(path.read_bytes(), filename=name)
        digest.update(f"{name}\0".encode() + "\0".join(_canonical(tree)).encode() + b"\n")
    return digest.hexdigest()[:_DIGEST_LENGTH]


def _canonical(tree: ast.AST) -> list[str]:
    out: list[str] = []
    _walk(tree, out)
    return out


def _is_docstring(node: ast.AST) -> bool:
    """A statement that is only a string: a docstring, or prose written as one."""
    return (
        isinstance(node, ast.Expr)
        and isinstance(node.value, ast.Constant)
        and isinstance(node.value.value, str)
    )


def _walk(node: ast.AST, out: list[str]) -> None:
    out.append(type(node).__name__)
    for name in node._fields:
        value = getattr(node, name, None)
        if value is None or value == []:
            continue
        out.append(name)
        if isinstance(value, ast.AST):
            _walk(value, out)
        elif isinstance(value, list):
            out.append("[")
            for item in value:
                if isinstance(item, ast.AST):
                    if not _is_docstring(item):
                        _walk(item, out)
                else:
                    out.append(repr(item))
            out.append("]")
        else:
            out.append(repr(value))
    out.append(")")
