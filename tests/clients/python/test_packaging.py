"""The client is an installable package: a wheel builds offline, with its types and its one
dependency, and the import the tests use is that package's source."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import realtime_client

from emulator.program import ROOT

PACKAGE = ROOT / "clients" / "python"


def test_the_client_builds_a_wheel_with_its_types_and_dependency(tmp_path: Path) -> None:
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
         "--disable-pip-version-check", "--no-index", "--wheel-dir", str(tmp_path), str(PACKAGE)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert built.returncode == 0, built.stdout + built.stderr
    (wheel,) = tmp_path.glob("realtime_channel_client-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        (metadata,) = [n for n in names if n.endswith(".dist-info/METADATA")]
        text = archive.read(metadata).decode()
    assert {"realtime_client/__init__.py", "realtime_client/client.py"} <= names
    assert "realtime_client/py.typed" in names
    assert "Requires-Dist: websockets" in text
    assert "Requires-Python: >=3.11" in text


def test_the_tests_import_the_package_from_this_repository() -> None:
    assert Path(realtime_client.__file__).resolve().is_relative_to(PACKAGE / "src")
    assert realtime_client.__version__ in (PACKAGE / "pyproject.toml").read_text()
