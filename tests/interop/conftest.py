"""pytest setup: which tether binary to test, and where each test's logs go."""

from __future__ import annotations

import os
import re
import shutil
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--tether-bin", default=os.environ.get("TETHER_BIN"),
                     help="the tether binary (default: $TETHER_BIN, else target/release/tether)")


@pytest.fixture(scope="session")
def tether_bin(request: pytest.FixtureRequest) -> str:
    path = request.config.getoption("--tether-bin")
    if not path:
        path = str(HERE.parent.parent / "target" / "release" / "tether")
    if not (os.path.isfile(path) and os.access(path, os.X_OK)):
        pytest.fail(f"no tether binary at {path} (pass --tether-bin or set TETHER_BIN)")
    return path


@pytest.fixture
def logdir(request: pytest.FixtureRequest) -> Path:
    """tests/interop/.artifacts/<test>/: the chat's events and stderr, the
    server's log and the Python peer's trace, kept after the run."""
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", request.node.name)
    path = HERE / ".artifacts" / name
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    return path
