"""The installed package's type hints work: mypy accepts typed use of the
public API and rejects misuse, line by line (typecheck/)."""

import pathlib
import re
import subprocess
import sys

import pytest

HERE = pathlib.Path(__file__).resolve().parent / "typecheck"


def mypy(path):
    pytest.importorskip("mypy", reason="mypy is not installed (crates/ffi/test.sh installs it)")
    return subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--allow-untyped-calls", "--no-incremental", "--python-version", "3.10", str(path)],
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_typed_use_of_the_public_api_passes_mypy_strict():
    result = mypy(HERE / "good.py")
    assert result.returncode == 0, result.stdout + result.stderr


def test_misuse_is_a_type_error_on_each_marked_line():
    source = (HERE / "bad.py").read_text().splitlines()
    marked = {i + 1 for i, line in enumerate(source) if line.rstrip().endswith("# error")}
    result = mypy(HERE / "bad.py")
    assert result.returncode == 1, result.stdout + result.stderr
    flagged = {int(m.group(1)) for m in re.finditer(r"bad\.py:(\d+): error", result.stdout)}
    assert flagged == marked, result.stdout
