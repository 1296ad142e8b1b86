"""Where one fused-experts call spends its time inside a CUDA graph: each kernel, and the gaps
between kernels (GPU, bf16).

For each model shape and token count, ``CALLS`` calls of the shipped Triton path are captured in
one CUDA graph and the graph is replayed under ``torch.profiler``. From the kernel records, in
call order: each kernel's median duration and the median gap before it (its start minus the end
of the kernel before it, the previous call's last kernel for the first one), the median span of
a call (first start to last end) and its period (start to the next call's start). Beside them
the path's ``do_bench_cudagraph`` median and the floor of ``bench_fused_moe.py``: the profiler
may stretch the period, the durations and gaps are what it is for. Writes JSON.

    python benchmarks/experts/timeline.py --shapes qwen3-30b-a3b-tp2 --tokens 16 256 --out t.json
"""

from __future__ import annotations

import json
import statistics
import sys
import tempfile
from pathlib import Path

CALLS = 8
REPLAYS = 6


def kernel_records(fn, calls: int, replays: int) -> list[dict]:
    """Kernel records (name, start, end in µs) of ``replays`` replays of ``calls`` calls of
    ``fn`` captured in one CUDA graph, in time order."""
    import torch
    from common import capture_graph
    from torch.profiler import ProfilerActivity, profile

    graph, _ = capture_graph(fn, calls)
    graph.replay()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(replays):
            graph.replay()
        torch.cuda.synchronize()
    with tempfile.NamedTemporaryFile(suffix=".json") as trace:
        prof.export_chrome_trace(trace.name)
        events = json.loads(Path(trace.name).read_text())["traceEvents"]
    kernels = [
        {"name": e["name"], "start": float(e["ts"]), "end": float(e["ts"]) + float(e["dur"])}
        for e in events
        if e.get("cat") == "kernel"
    ]
    return sorted(kernels, key=lambda k: k["start"])


def split_calls(kernels: list[dict], calls: int, replays: int) -> list[list[dict]]:
    """The records cut into calls of equally many kernels (each replay holds ``calls`` calls)."""
    total = calls * replays
    if not kernels or len(kernels) % total:
        raise RuntimeError(f"{len(kernels)} kernel records do not split into {total} calls")
    per_call = len(kernels) // total
    return [kernels[i : i + per_call] for i in range(0, len(kernels), per_call)]


def summarise(calls_records: list[list[dict]], calls: int) -> dict:
    """Median duration and gap before each kernel of a call, median span and period."""
    per_call = len(calls_records[0])
    names = [k["name"] for k in calls_records[0]]
    durations: list[list[float]] = [[] for _ in range(per_call)]
    gaps: list[list[float]] = [[] for _ in range(per_call)]
    spans, periods = [], []
    for index, call in enumerate(calls_records):
        if [k["name"] for k in call] != names:
            raise RuntimeError("calls ran different kernels")
        first_of_replay = index % calls == 0
        for j, kernel in enumerate(call):
            durations[j].append(kernel["end"] - kernel["start"])
            if j > 0:
                gaps[j].append(kernel["start"] - call[j - 1]["end"])
            elif not first_of_replay:
                gaps[0].append(kernel["start"] - calls_records[index - 1][-1]["end"])
        spans.append(call[-1]["end"] - call[0]["start"])
        if index % calls != calls - 1:
            periods.append(calls_records[index + 1][0]["start"] - call[0]["start"])
    return {
        "kernels": [
            {"name": name, "us": statistics.median(d), "gap_before_us": statistics.median(g)}
            for name, d, g in zip(names, durations, gaps)
        ],
        "span_us": statistics.median(spans),
        "period_us": statistics.median(periods),
        "kernels_us": sum(statistics.median(d) for d in durations),
        "gaps_us": sum(statistics.median(g) for g in gaps),
    }


def main() -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from bench_fused_moe import cell_parser, measured_ceilings, routed_calls
    from common import environment, time_us, write_json

    parser = cell_parser(__doc__.splitlines()[0], (16, 64, 256, 1024))
    args = parser.parse_args()
    bandwidth, tflops = measured_ceilings()
    rows = []
    for call in routed_calls(args.shapes, args.tokens):
        records = kernel_records(call, CALLS, REPLAYS)
        row = {
            "shape": call.shape,
            "tokens": call.tokens,
            "floor_us": call.floor_us(bandwidth, tflops),
            "path_graph_us": time_us(call, graph=True)[0],
            **summarise(split_calls(records, CALLS, REPLAYS), CALLS),
        }
        rows.append(row)
        steps = "  ".join(
            f"[{k['gap_before_us']:.1f}] {k['name'][:24]} {k['us']:.1f}" for k in row["kernels"]
        )
        print(
            f"{call.shape:18s} {call.tokens:5d}  path {row['path_graph_us']:.1f}  "
            f"period {row['period_us']:.1f}  floor {row['floor_us']:.1f}  {steps}",
            flush=True,
        )
    write_json(args.out, {"environment": environment(), "bandwidth_gbps": bandwidth,
                          "matmul_tflops": tflops, "calls_per_graph": CALLS,
                          "replays": REPLAYS, "rows": rows})  # fmt: skip


if __name__ == "__main__":
    main()
