"""The handler archive: exactly the handler sources, deterministic, found wherever pytest runs."""

from __future__ import annotations

import compileall
import py_compile
import re
import shutil
from pathlib import Path

import pulumi
import pytest

from components import packaging
from components.packaging import archive_files, handler_archive

HANDLERS = Path(__file__).resolve().parents[2] / "handlers"


def _expected_sources(root: Path) -> list[str]:
    """Every Python source of the package, computed without the packaging module."""
    return sorted(
        f"handlers/{path.relative_to(root).as_posix()}"
        for path in root.rglob("*.py")
        if "__pycache__" not in path.parts
    )


def _copy_handlers(destination: Path) -> Path:
    copy = destination / "handlers"
    shutil.copytree(HANDLERS, copy, ignore=shutil.ignore_patterns("__pycache__"))
    return copy


# -- what goes in ------------------------------------------------------------------------------


def test_archive_lists_exactly_the_handler_sources() -> None:
    paths = [archive_path for archive_path, _ in archive_files()]
    assert paths == _expected_sources(HANDLERS)
    assert "handlers/__init__.py" in paths
    assert "handlers/broadcaster.py" in paths


def test_archive_paths_are_under_handlers_and_sorted() -> None:
    paths = [archive_path for archive_path, _ in archive_files()]
    assert all(path.startswith("handlers/") for path in paths)
    assert paths == sorted(paths)
    assert len(set(paths)) == len(paths)


def test_archive_path_names_the_file_it_comes_from() -> None:
    for archive_path, disk_path in archive_files():
        assert disk_path == HANDLERS / archive_path.removeprefix("handlers/")
        assert disk_path.is_file()


def test_archive_leaves_out_caches_bytecode_and_tests() -> None:
    paths = [archive_path for archive_path, _ in archive_files()]
    assert not [p for p in paths if "__pycache__" in p]
    assert not [p for p in paths if p.endswith((".pyc", ".pyo"))]
    assert not [p for p in paths if Path(p).name.startswith("test_") or "/tests/" in p]


def test_asset_archive_holds_the_listed_files() -> None:
    archive = handler_archive()
    assert isinstance(archive.archive, pulumi.AssetArchive)
    assert list(archive.archive.assets) == list(archive.files)
    for archive_path, asset in archive.archive.assets.items():
        assert isinstance(asset, pulumi.FileAsset)
        assert Path(asset.path) == HANDLERS / archive_path.removeprefix("handlers/")


# -- determinism -------------------------------------------------------------------------------


def test_digest_does_not_depend_on_where_the_package_lives(tmp_path: Path) -> None:
    assert handler_archive(_copy_handlers(tmp_path)).digest == handler_archive().digest


def test_digest_and_files_ignore_bytecode_stray_tests_and_dotfiles(tmp_path: Path) -> None:
    copy = _copy_handlers(tmp_path)
    before = handler_archive(copy)

    assert compileall.compile_dir(copy, quiet=1)
    py_compile.compile(str(copy / "config.py"), cfile=str(copy / "config.pyc"))
    (copy / "tests").mkdir()
    (copy / "tests" / "__init__.py").write_text("")
    (copy / "tests" / "test_x.py").write_text("def test_x():\n    assert True\n")
    (copy / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1")
    assert list((copy / "__pycache__").glob("*.pyc")), "bytecode was written"

    after = handler_archive(copy)
    assert after.files == before.files
    assert after.digest == before.digest


def test_digest_changes_when_one_byte_of_a_handler_changes(tmp_path: Path) -> None:
    copy = _copy_handlers(tmp_path)
    before = handler_archive(copy)
    source = copy / "config.py"
    data = bytearray(source.read_bytes())
    data[-1] = ord(" ") if data[-1] != ord(" ") else ord("\n")
    source.write_bytes(bytes(data))

    after = handler_archive(copy)
    assert after.files == before.files
    assert after.digest != before.digest


# -- where it is found -------------------------------------------------------------------------


def test_archive_resolves_relative_to_the_component_not_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert packaging.HANDLERS_DIR.is_absolute()
    assert list(handler_archive().files) == _expected_sources(HANDLERS)


def test_root_without_init_raises_file_not_found_naming_the_path(tmp_path: Path) -> None:
    root = tmp_path / "handlers"
    root.mkdir()
    (root / "connect.py").write_text("def handler(event, context):\n    return {}\n")
    with pytest.raises(FileNotFoundError, match=re.escape(str(root))):
        handler_archive(root)
