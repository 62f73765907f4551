"""Fixtures for the cwm-trace tests; helpers live in trace_cli_helpers (importable: this folder is put on sys.path,
as --import-mode=importlib does not)."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from trace_cli_helpers import SHOP, cli, fast_python  # noqa: E402


@pytest.fixture(scope="session")
def target_python() -> str:
    return fast_python()


@pytest.fixture(scope="session")
def traced_shop(tmp_path_factory, target_python) -> Path:
    """examples/shop traced once, uninterrupted: the reference for several tests."""
    out = tmp_path_factory.mktemp("shop") / "traces"
    proc = cli(SHOP, "-o", out, "--workers", "2", "--python", target_python)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out
