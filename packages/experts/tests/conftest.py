import os

# The Triton kernels run under the CPU interpreter in these tests; it must be on before import.
os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest
import torch


@pytest.fixture(autouse=True)
def poisoned_workspaces(monkeypatch):
    """Every workspace and output starts as NaN, so an element nobody writes shows up."""
    import moekit.experts.kernel as kernel

    def poisoned(shape, device, dtype):
        return torch.full(shape, float("nan"), device=device, dtype=dtype)

    monkeypatch.setattr(kernel, "allocate_workspace", poisoned)
    try:
        from moekit.experts._triton_impl import grouped_gemm
    except ImportError:  # the torch-only environments have no Triton
        return
    real_counters = grouped_gemm.sum_counters

    def poisoned_counters(*args, **kwargs):  # GEMM1 must zero them
        return real_counters(*args, **kwargs).fill_(7)

    monkeypatch.setattr(grouped_gemm, "sum_counters", poisoned_counters)


def pytest_configure(config):
    config.addinivalue_line("markers", "distributed: spawns gloo processes (nox -s distributed)")
