"""Programmatic dependent launch (PDL) for the fast backend's Triton kernels (Hopper+).

Contract: a kernel launched with ``**pdl_launch(True)`` may start while the kernel before it
in the stream is still finishing; it MUST call ``gdc_wait()`` (wait for the previous
kernel to complete, its writes visible) before it reads anything that kernel may write and
before it writes anything that kernel may read. Only reads of data no kernel writes (the
weights) may come before the wait. Every kernel of ours waits unconditionally, so kernel
N's work starts only after kernel N-1 completed, which itself waited for N-2: the usual
stream order holds by induction while launch latency and the previous kernel's tail
overlap. ``gdc_launch_dependents()`` lets the next kernel launch once every program of this
one has called it. Inside a CUDA graph capture the dependency becomes a programmatic edge.
``pdl_supported()``: this Triton can compile and launch it and the GPU is sm_90 or newer.
"""
from __future__ import annotations

import dataclasses

import triton
import triton.language as tl

try:
    from triton.language.extra.cuda import gdc_launch_dependents, gdc_wait
except ImportError:     # an older Triton: keep the names (kernels only call them when PDL)
    @triton.jit
    def gdc_wait():
        pass

    @triton.jit
    def gdc_launch_dependents():
        pass
    _HAS_GDC = False
else:
    _HAS_GDC = True

__all__ = ["OFF", "WAIT_FIRST", "TRIGGER_FIRST", "pdl_enter", "pdl_launch", "pdl_supported"]

OFF, WAIT_FIRST, TRIGGER_FIRST = 0, 1, 2


@triton.jit
def pdl_enter(PDL: tl.constexpr):
    """A kernel's entry under PDL mode ``PDL``: OFF does nothing; WAIT_FIRST waits for the
    previous kernel, then lets the next one launch; TRIGGER_FIRST lets the next one launch
    at once, then waits (the next kernel's programs can then start, and load their weights,
    while this one and the one before it still run: still safe, as each waits before its
    real work). Call it before any access to data another kernel writes or reads."""
    if PDL == 2:
        gdc_launch_dependents()
    if PDL != 0:
        gdc_wait()
    if PDL == 1:
        gdc_launch_dependents()


def pdl_launch(mode: int) -> dict:
    """Launch keyword arguments for a kernel compiled with PDL mode ``mode``."""
    return {"launch_pdl": True} if mode else {}


def pdl_supported() -> bool:
    import torch
    try:
        from triton.backends.nvidia.compiler import CUDAOptions
    except ImportError:
        return False
    has_option = any(f.name == "launch_pdl" for f in dataclasses.fields(CUDAOptions))
    return (_HAS_GDC and has_option and torch.cuda.is_available()
            and torch.cuda.get_device_capability()[0] >= 9)
