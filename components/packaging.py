"""The one handler archive: the ``handlers/`` package at the archive's root.

Resolved relative to this file (never the working directory). Bytecode, caches
and test files are left out, and files are listed in sorted order, so the same
sources always give the same archive and the same digest: a ``pulumi preview``
with no handler change shows no code diff.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import pulumi

HANDLERS_DIR = Path(__file__).resolve().parent.parent / "handlers"
_SKIPPED_DIRS = {"__pycache__", "tests", ".pytest_cache", ".mypy_cache"}
_SKIPPED_SUFFIXES = (".pyc", ".pyo", ".so.tmp")


@dataclass(frozen=True)
class HandlerArchive:
    archive: pulumi.AssetArchive
    files: tuple[str, ...]
    """Paths inside the archive, e.g. ``handlers/broadcaster.py``."""
    digest: str
    """sha256 over every (path, content) pair: equal digests, equal archives."""


def archive_files(root: Path = HANDLERS_DIR) -> list[tuple[str, Path]]:
    """(path in archive, file on disk) for every file that belongs in the archive, sorted."""
    if not (root / "__init__.py").is_file():
        raise FileNotFoundError(f"handler package not found at {root} (no __init__.py)")
    found: list[tuple[str, Path]] = []
    for path in root.rglob("*"):
        relative = path.relative_to(root)
        if not path.is_file() or any(part in _SKIPPED_DIRS for part in relative.parts):
            continue
        name = path.name
        if (
            name.endswith(_SKIPPED_SUFFIXES)
            or name.startswith(("test_", "."))
            or name == "conftest.py"
        ):
            continue
        found.append((f"{root.name}/{relative.as_posix()}", path))
    return sorted(found)


def handler_archive(root: Path = HANDLERS_DIR) -> HandlerArchive:
    files = archive_files(root)
    digest = hashlib.sha256()
    for archive_path, disk_path in files:
        digest.update(archive_path.encode() + b"\0")
        digest.update(hashlib.sha256(disk_path.read_bytes()).digest())
    archive = pulumi.AssetArchive(
        {archive_path: pulumi.FileAsset(str(disk_path)) for archive_path, disk_path in files}
    )
    return HandlerArchive(archive, tuple(p for p, _ in files), digest.hexdigest())
