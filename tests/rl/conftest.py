"""Fixtures of the RL tests; helpers live in rl_helpers (importable: this folder is put on sys.path, as
--import-mode=importlib does not)."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))


@pytest.fixture(autouse=True)
def _few_threads():
    """Two shared cores: one intra-op thread per test process."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
