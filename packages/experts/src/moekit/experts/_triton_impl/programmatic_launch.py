"""Programmatic dependent launch of the experts' kernels (Hopper and later): a kernel launched
with it may start its programs before the previous kernel in the stream ends, so that its launch
overlaps that kernel's tail. ``moekit.align.programmatic_launch_supported`` says where it is
supported (Hopper and later, Triton 3.4 and later)."""

from __future__ import annotations

import triton
import triton.language as tl

try:
    from triton.language.extra.cuda import gdc_launch_dependents, gdc_wait
except ImportError:  # Triton before 3.4: never called, as no launch asks for it there

    @triton.jit
    def gdc_wait():  # type: ignore[no-redef]
        pass

    @triton.jit
    def gdc_launch_dependents():  # type: ignore[no-redef]
        pass


def launch_options(wait_prior: bool) -> dict[str, bool]:
    """The launch keyword of a kernel whose programs start with ``wait_for_prior_kernel``."""
    return {"launch_pdl": True} if wait_prior else {}


@triton.jit
def wait_for_prior_kernel(WAIT_PRIOR: tl.constexpr, LAUNCH_NEXT: tl.constexpr):
    """With ``WAIT_PRIOR``, wait until the previous kernel has ended and its writes are visible.
    Every program calls this first, before it touches memory, so the kernel is ordered after
    the one before it as by a plain launch, and so, through that one's own wait, after every
    earlier one. With ``LAUNCH_NEXT`` too, the next kernel, launched with ``launch_pdl``, may
    start its programs now; only a kernel whose successor waits this way may pass it."""
    if WAIT_PRIOR:
        gdc_wait()
        if LAUNCH_NEXT:
            gdc_launch_dependents()
