"""Kernel tests run the Triton kernels in the CPU interpreter. Triton reads TRITON_INTERPRET when a kernel is
defined, so it is set here, before any test module imports the kernel modules."""

import os

import pytest
import torch

os.environ.setdefault("TRITON_INTERPRET", "1")


def _interpreter_active() -> bool:
    from kernels.attention_fwd import INTERPRETED

    return INTERPRETED


@pytest.fixture
def triton_on_cpu():
    """Skip (with the reason) when the kernels were already defined in compiled mode and there is no GPU."""
    if not torch.cuda.is_available() and not _interpreter_active():
        pytest.skip("kernels were imported before TRITON_INTERPRET=1 was set and there is no CUDA: run tests/kernels on its own")
