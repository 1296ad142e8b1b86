"""Backend choice: auto, the MOEKIT_BACKEND override and clear errors."""

import pytest
import torch

from moekit.align._backend import resolve_backend

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
