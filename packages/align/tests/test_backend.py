"""Backend choice: auto, the MOEKIT_BACKEND override and clear errors."""

import importlib
import sys
import types

import pytest
import torch
import triton
import triton.language as tl

import moekit.align as align
from moekit.align import _backend
from moekit.align._backend import resolve_backend
from moekit.align._triton_impl import programmatic_launch

CPU = torch.device("cpu")


def test_auto_picks_torch_on_cpu(monkeypatch):
    monkeypatch.delenv("MOEKIT_BACKEND", raising=False)
    assert resolve_backend("auto", CPU) == "torch"


def test_env_overrides_auto_only(monkeypatch):
    monkeypatch.setenv("MOEKIT_BACKEND", "triton")
    assert resolve_backend("auto", CPU) == "triton"  # interpreter on in these tests
    assert resolve_backend("torch", CPU) == "torch"
    monkeypatch.setenv("MOEKIT_BACKEND", "bogus")
    with pytest.raises(ValueError, match="MOEKIT_BACKEND"):
        resolve_backend("auto", CPU)


def test_triton_on_cpu_needs_the_interpreter(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    with pytest.raises(ValueError, match="TRITON_INTERPRET"):
        resolve_backend("triton", CPU)


def test_programmatic_launch_is_off_the_gpu_and_under_the_interpreter():
    assert not align.programmatic_launch_supported(CPU)
    if torch.cuda.is_available():  # these tests set TRITON_INTERPRET=1
        assert not align.programmatic_launch_supported(torch.device("cuda"))


def test_programmatic_launch_where_unsupported_changes_no_value():
    """Asked for off a Hopper GPU, the kernels launch plainly: the interpreter's results equal
    the torch path's."""
    gen = torch.Generator().manual_seed(7)
    ids = torch.randint(-1, 6, (37, 3), generator=gen, dtype=torch.int32)
    want = align.moe_align_block_size(ids, 4, 6, backend="torch")
    got = align.moe_align_block_size(ids, 4, 6, backend="triton", programmatic_launch=True)
    for name, g, w in zip(("sorted_token_ids", "expert_ids", "num_tokens_post_pad"), got, want):
        assert torch.equal(g, w), (name, "seed=7")
    rows = torch.randn(37, 3, 40, generator=gen)
    want_sum = align.moe_sum(rows, torch.full((37, 40), float("nan")), ids, backend="torch")
    got_sum = align.moe_sum(rows, torch.full((37, 40), float("nan")), ids, backend="triton",
                            programmatic_launch=True)  # fmt: skip
    torch.testing.assert_close(got_sum, want_sum, rtol=0, atol=1e-6, msg="seed=7")


@triton.jit
def store_seven_after_wait(out_ptr):
    programmatic_launch.wait_for_prior_kernel(True, True)
    tl.store(out_ptr, 7)


def test_triton_without_grid_dependency_control(monkeypatch):
    """Triton before 3.4 has no ``griddepcontrol``: the support check says no, and the launch
    helper's stand-ins still compile into a kernel (the interpreter runs one here)."""
    monkeypatch.setitem(sys.modules, "triton.language.extra.cuda",
                        types.ModuleType("triton.language.extra.cuda"))  # fmt: skip
    _backend.grid_dependency_control_available.cache_clear()
    try:
        assert not _backend.grid_dependency_control_available()
        importlib.reload(programmatic_launch)  # the stand-ins, in place of Triton's
        out = torch.full((1,), -1, dtype=torch.int32)
        store_seven_after_wait[(1,)](out)
        assert out.item() == 7
    finally:
        monkeypatch.undo()
        _backend.grid_dependency_control_available.cache_clear()
        importlib.reload(programmatic_launch)
