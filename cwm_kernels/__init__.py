"""Triton kernels for packed-document attention, with float64 references beside them.

Kernel modules are imported lazily: Triton decides interpreter vs compiled mode when a kernel is defined,
so importing `cwm_kernels` alone never fixes that choice.
"""

from cwm_kernels.packed import packed_attention

__all__ = ["packed_attention"]
