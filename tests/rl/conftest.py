"""Fixtures of the RL tests; helpers live in rl_helpers (importable: this folder is put on sys.path, as
--import-mode=importlib does not)."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))


@pytest.fixture(autouse=True)
def _few_threads(one_torch_thread):
    """Two shared cores: one intra-op thread per test (tests/conftest.py)."""
