"""Choice between the Triton kernels and the plain-torch path (``backend=`` of every op)."""

from __future__ import annotations

import functools
import os
from typing import Literal

import torch

Backend = Literal["auto", "triton", "torch"]
_BACKENDS = ("auto", "triton", "torch")
BACKEND_ENV_VAR = "MOEKIT_BACKEND"


@functools.cache
def triton_available() -> bool:
    """Whether ``import triton`` succeeds (checked once)."""
    try:
        import triton  # noqa: F401
    except ImportError:
        return False
    return True


def interpreter_enabled() -> bool:
    """Whether Triton kernels run under the CPU interpreter (``TRITON_INTERPRET=1``)."""
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def programmatic_launch_supported(device: torch.device) -> bool:
    """Whether Triton kernels on ``device`` can use programmatic dependent launch: a GPU of
    compute capability 9.0 or later, not under the interpreter (which has no grid dependency
    control), with Triton 3.4 or later."""
    if device.type != "cuda" or interpreter_enabled() or not grid_dependency_control_available():
        return False
    index = device.index if device.index is not None else torch.cuda.current_device()
    return _compute_capability_major(index) >= 9


@functools.cache
def grid_dependency_control_available() -> bool:
    """Whether the installed Triton has the ``griddepcontrol`` instructions and the
    ``launch_pdl`` launch option (Triton 3.4 and later)."""
    try:
        from triton.language.extra.cuda import gdc_wait  # noqa: F401
    except ImportError:
        return False
    return True


@functools.cache
def _compute_capability_major(index: int) -> int:
    return torch.cuda.get_device_capability(index)[0]


def resolve_backend(backend: str, device: torch.device) -> Literal["triton", "torch"]:
    """Turn ``backend`` (or ``MOEKIT_BACKEND`` when ``backend="auto"``) into a concrete path.

    ``auto`` picks ``triton`` for GPU tensors when Triton imports, ``torch`` otherwise.
    Asking for ``triton`` on CPU tensors is only valid under the Triton interpreter.
    """
    if backend not in _BACKENDS:
        raise ValueError(f"backend must be one of {_BACKENDS}, got {backend!r}")
    if backend == "auto":
        backend = os.environ.get(BACKEND_ENV_VAR, "auto") or "auto"
        if backend not in _BACKENDS:
            raise ValueError(f"{BACKEND_ENV_VAR} must be one of {_BACKENDS}, got {backend!r}")
    if backend == "auto":
        return "triton" if device.type == "cuda" and triton_available() else "torch"
    if backend == "triton":
        if not triton_available():
            raise RuntimeError("backend='triton' was asked for but triton is not installed")
        if device.type != "cuda" and not interpreter_enabled():
            raise ValueError(
                f"backend='triton' needs GPU tensors (got device {device}) "
                "or the Triton interpreter (TRITON_INTERPRET=1 set before triton is imported)"
            )
    return backend  # type: ignore[return-value]
