"""Helpers shared by the GPU benchmark scripts: environment record, ceilings, timing."""

from __future__ import annotations

import json
import os
import platform
import subprocess
from collections.abc import Callable
from pathlib import Path
from unittest import mock

import torch
import triton
import triton.testing


def git_commit() -> str:
    env = os.environ.get("MOEKIT_COMMIT")
    if env:
        return env
    try:
        return subprocess.check_output(["git", "rev-parse", "HEAD"], text=True).strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def environment() -> dict[str, str]:
    return {
        "device": torch.cuda.get_device_name(),
        "torch": torch.__version__,
        "triton": triton.__version__,
        "python": platform.python_version(),
        "commit": git_commit(),
    }


def copy_bandwidth_gbps(num_bytes: int = 1 << 30) -> float:
    """Device-to-device copy rate, counting bytes read plus bytes written (GB/s)."""
    src = torch.empty(num_bytes // 4, dtype=torch.float32, device="cuda").uniform_()
    dst = torch.empty_like(src)
    ms = triton.testing.do_bench(lambda: dst.copy_(src), warmup=50, rep=200, return_mode="median")
    return 2 * num_bytes / (ms * 1e-3) / 1e9


def time_us(fn: Callable[[], object], graph: bool) -> tuple[float, float, float]:
    """(median, p20, p80) in microseconds; with ``graph`` the calls replay from a CUDA graph."""
    if graph:
        ms = triton.testing.do_bench_cudagraph(fn, rep=100, quantiles=[0.5, 0.2, 0.8])
    else:
        ms = triton.testing.do_bench(fn, warmup=25, rep=100, quantiles=[0.5, 0.2, 0.8])
    return tuple(1e3 * m for m in ms)  # type: ignore[return-value]


def write_json(path: Path, payload: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=1) + "\n")


def relative_error(got: torch.Tensor, want: torch.Tensor) -> float:
    """Largest absolute difference over the largest magnitude of ``want`` (floor 1e-6)."""
    scale = max(want.float().abs().max().item(), 1e-6)
    return (got.float() - want.float()).abs().max().item() / scale


def capture_graph(fn: Callable[[], object], calls: int = 1) -> tuple[torch.cuda.CUDAGraph, object]:
    """``calls`` calls of ``fn`` captured in one CUDA graph (after a warm-up call outside it, which
    compiles), and what the last captured call returned."""
    stream = torch.cuda.Stream()
    with torch.cuda.stream(stream):
        fn()
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    out = None
    with torch.cuda.graph(graph):
        for _ in range(calls):
            out = fn()
    return graph, out


def graph_replays_agree(fn: Callable[[], torch.Tensor], want: torch.Tensor,
                        replays: int = 20) -> bool:  # fmt: skip
    """Whether ``fn`` captured in a CUDA graph gives ``want`` bit for bit on every replay."""
    graph, out = capture_graph(fn)
    same = True
    for _ in range(replays):
        graph.replay()
        torch.cuda.synchronize()
        same &= bool(torch.equal(out, want))
    return same


def compare_settings(fn: Callable[[], torch.Tensor], module: object,
                     settings: dict[str, dict[str, object]],
                     reference: str) -> tuple[dict[str, object], torch.Tensor]:  # fmt: skip
    """``fn`` under each named set of ``module`` attributes (``mock.patch.multiple``): for each
    set but ``reference``, ``{name}_equal`` and ``{name}_replays_equal`` (its output against the
    reference's, bit for bit, once and over CUDA-graph replays); for each set, ``{name}_us``
    (CUDA-graph median). Returns those fields and the reference's output."""
    with mock.patch.multiple(module, **settings[reference]):
        want = fn()
    row: dict[str, object] = {}
    for name, values in settings.items():
        with mock.patch.multiple(module, **values):
            if name != reference:
                row[f"{name}_equal"] = bool(torch.equal(fn(), want))
                row[f"{name}_replays_equal"] = graph_replays_agree(fn, want)
            row[f"{name}_us"] = time_us(fn, graph=True)[0]
    return row, want


def compare_in_turn(fn: Callable[[], torch.Tensor], target: object,
                    settings: dict[str, dict[str, object]], reference: str,
                    rounds: int) -> tuple[dict[str, list[float]], dict[str, bool]]:  # fmt: skip
    """``compare_settings`` over ``rounds`` rounds, the settings' order reversed every other round
    (``target`` is the module or class whose attributes they patch). Returns each setting's
    CUDA-graph medians, one per round, and for each setting but ``reference`` whether its output
    and graph replays equalled the reference's bit for bit in every round."""
    times: dict[str, list[float]] = {name: [] for name in settings}
    same = {name: True for name in settings if name != reference}
    for round_index in range(rounds):
        order = list(settings) if round_index % 2 == 0 else list(reversed(settings))
        timed, _ = compare_settings(fn, target, {n: settings[n] for n in order},
                                    reference=reference)  # fmt: skip
        for name in settings:
            times[name].append(timed[f"{name}_us"])  # type: ignore[arg-type]
        for name in same:
            same[name] &= bool(timed[f"{name}_equal"] and timed[f"{name}_replays_equal"])
    return times, same
