"""Kernel tests run the Triton kernels on a GPU when there is one, else in Triton's CPU interpreter.
Triton reads TRITON_INTERPRET when a kernel is defined, so it is set here, before any test module imports the
kernel modules (and only without CUDA: on a GPU the same tests exercise the compiled kernels)."""

import os

import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")


@pytest.fixture(scope="session")
def device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


@pytest.fixture
def triton_on_cpu():
    """Skip (with the reason) when the kernels were already defined in compiled mode and there is no GPU."""
    from cwm_kernels.attention_fwd import INTERPRETED

    if not torch.cuda.is_available() and not INTERPRETED:
        pytest.skip("kernels were imported before TRITON_INTERPRET=1 was set and there is no CUDA: run tests/kernels on its own")
