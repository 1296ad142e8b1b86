"""Programmatic dependent launch (Hopper and later): a kernel launched with it may start its
programs before the previous kernel in the stream ends, so their launch overlaps its tail."""

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
    """The launch keyword of a kernel that starts with ``wait_for_prior_kernel``."""
    return {"launch_pdl": True} if wait_prior else {}


@triton.jit
def wait_for_prior_kernel(WAIT_PRIOR: tl.constexpr, LAUNCH_NEXT: tl.constexpr):
    """With ``WAIT_PRIOR``, wait until the previous kernel has ended and its writes are visible;
    every program calls this before it touches memory, so the kernel orders after the one before
    it as a plain launch would. With ``LAUNCH_NEXT`` too, the next kernel, if launched with
    ``launch_pdl``, may start its programs now (it waits in turn before touching memory)."""
    if WAIT_PRIOR:
        gdc_wait()
        if LAUNCH_NEXT:
            gdc_launch_dependents()
