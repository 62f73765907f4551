"""Shared benchmark fixtures: the heavy-tailed document-length mix, the machine's name, and table printing."""

from __future__ import annotations

import platform

import numpy as np
import pytest
import torch

# Lognormal document lengths (median 1.5k tokens, sigma 1.5: p90 ~10k, p99 ~50k, a tail past 128k), a stand-in for
# a CWM-style mix of short traces and long agent trajectories.
MEDIAN_TOKENS, SIGMA, MIN_TOKENS = 1500, 1.5, 8


def sample_lengths(rng: np.random.Generator, n: int) -> list[int]:
    return np.maximum(MIN_TOKENS, rng.lognormal(np.log(MEDIAN_TOKENS), SIGMA, n).astype(np.int64)).tolist()


@pytest.fixture
def doc_lengths():
    """`doc_lengths(n, seed)`: n lengths from the mix; `doc_lengths.filling(total, seed)`: lengths summing to total."""

    class Lengths:
        def __call__(self, n: int, seed: int = 0) -> list[int]:
            return sample_lengths(np.random.default_rng(seed), n)

        def filling(self, total: int, seed: int = 0) -> list[int]:
            rng, lengths = np.random.default_rng(seed), []
            while sum(lengths) < total:
                lengths.append(min(sample_lengths(rng, 1)[0], total - sum(lengths)))
            return lengths

    return Lengths()


def machine() -> str:
    gpu = f", GPU {torch.cuda.get_device_name()}" if torch.cuda.is_available() else ", no GPU"
    cpu = platform.processor() or platform.machine()
    return f"{cpu} ({torch.get_num_threads()} torch threads){gpu}, torch {torch.__version__}"


@pytest.fixture
def show_table(pytestconfig):
    """Print a markdown table to the terminal even under pytest's output capture (paste-ready for RESULTS.md)."""
    capture = pytestconfig.pluginmanager.getplugin("capturemanager")

    def show(title: str, header: list[str], rows: list[list]) -> None:
        lines = [f"\n### {title}", f"machine: {machine()}", "", "| " + " | ".join(header) + " |",
                 "|" + "---|" * len(header)]
        lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
        with capture.global_and_fixture_disabled():
            print("\n".join(lines), flush=True)

    return show
