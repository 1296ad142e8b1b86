"""Clocks and board power of the fused experts under sustained load, and the time the power
limit allows (GPU, bf16).

Each workload replays from a CUDA graph back to back for a few seconds while ``nvidia-smi``
samples the SM clock, the board power and the clock-event (throttle) reasons every 50 ms. First
the calibration: the idle board power ``P0``; a 1 GiB elementwise copy, giving the energy of one HBM
byte ``e_b = (P - P0) / bytes per second`` (bytes read plus written); and an 8192³ bf16 matmul,
giving the energy of one FLOP ``e_f`` at the clocks the power limit leaves a matmul. Then each
cell of the fused experts path: time per call, clocks, power, and the power estimate

    power_us = (e_b * bytes + e_f * FLOPs) / (power limit - P0)

with the bytes of a path with per-slot rows (``rows_path_bytes`` of ``bench_fused_moe.py``) and
FLOPs 6·M·k·K·I: by this model, the board would draw more than its limit below that time. The issue's floor
takes the larger of the weight time and the FLOP time, as if both could run at full rate at
once; where both are large, the power limit makes their energies add instead. The estimate is
a model, not a bound: ``e_f`` comes from a matmul at capped clocks, and a kernel's padding rows
and on-chip traffic cost energy it does not count. Writes JSON.

    python benchmarks/experts/power_probe.py --out power.json --cells mixtral:16,1024 qwen3-30b-a3b:4096
    python benchmarks/experts/power_probe.py --from benchmarks/results/experts_power_h100.json
    python benchmarks/experts/power_probe.py --from benchmarks/results/experts_power_h100.json \
        --estimate benchmarks/results/experts_h100.json

The last form needs no GPU: it takes the calibration of a JSON already written and gives the
estimate of every cell of a ``bench_fused_moe.py`` table (random routing's expected active
experts) beside that table's time, both over the table's floor.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

QUERY = "clocks.sm,power.draw,clocks_throttle_reasons.active"
SW_POWER_CAP = 0x4  # the clock-event reason of the board's power limit
CELLS = ("mixtral:16,256,1024,4096", "mixtral-tp2:256,1024,4096", "qwen3-30b-a3b:256,1024,4096",
         "qwen3-30b-a3b-tp2:1024,4096", "deepseek-v3:1024,4096",
         "deepseek-v3-tp4:1024,4096,16384", "gpt-oss-120b:1024,4096,16384")  # fmt: skip


def query_gpu(field: str) -> str:
    return subprocess.check_output(["nvidia-smi", f"--query-gpu={field}",
                                    "--format=csv,noheader,nounits"], text=True).strip()  # fmt: skip


def sample_while(run: Callable[[], tuple[int, float]], ramp_fraction: float = 0.2) -> dict:
    """``run()`` (returns its calls and seconds) with ``nvidia-smi`` sampling every 50 ms; the
    first ``ramp_fraction`` of the samples, before the clocks settle, are dropped."""
    command = ["nvidia-smi", f"--query-gpu={QUERY}", "--format=csv,noheader,nounits", "-lms", "50"]
    sampler = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    try:
        calls, seconds = run()
    finally:
        sampler.terminate()
    lines = sampler.communicate()[0].strip().splitlines()
    samples = [line.split(", ") for line in lines[int(len(lines) * ramp_fraction) :]]
    if not samples:
        raise RuntimeError("nvidia-smi gave no samples")
    clocks = [float(s[0]) for s in samples]
    capped = [int(s[2], 16) & SW_POWER_CAP != 0 for s in samples]
    return dict(samples=len(samples), sm_mhz_median=statistics.median(clocks),
                sm_mhz_min=min(clocks), power_w_median=statistics.median(float(s[1]) for s in samples),
                power_capped_fraction=sum(capped) / len(samples),
                us_per_call=seconds * 1e6 / calls if calls else 0.0)  # fmt: skip


def sustained(fn: Callable[[], object], seconds: float = 2.5) -> dict:
    """``fn`` captured in a CUDA graph and replayed back to back for ``seconds``, sampled."""
    import torch

    stream = torch.cuda.Stream()
    with torch.cuda.stream(stream):
        fn()  # compile and warm up outside the capture
        fn()
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        fn()

    def run() -> tuple[int, float]:
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        calls, began = 0, time.time()
        start.record()
        while time.time() - began < seconds:
            for _ in range(20):
                graph.replay()
            calls += 20
            if calls % 200 == 0:  # keep the queue short, so the loop ends on time
                torch.cuda.current_stream().synchronize()
        end.record()
        torch.cuda.synchronize()
        return calls, start.elapsed_time(end) * 1e-3

    return sample_while(run)


def idle_power_w(seconds: float = 1.0) -> float:
    time.sleep(seconds)  # let the last workload's power decay
    return sample_while(lambda: (0, time.sleep(seconds) or seconds))["power_w_median"]


def calibrate(seconds: float) -> dict:
    """The board's power limit, its idle power, and the energy of one HBM byte (a 1 GiB copy,
    bytes read plus written) and of one bf16 FLOP (an 8192³ matmul), each over idle."""
    import torch

    src = torch.empty(1 << 28, dtype=torch.float32, device="cuda").uniform_()
    dst = torch.empty_like(src)
    # an elementwise kernel, not copy_: a captured copy_ becomes a memcpy node, which moved
    # 19-35% fewer bytes per second than the same copy as a kernel
    copy = sustained(lambda: torch.mul(src, 2.0, out=dst), seconds)
    idle_w = idle_power_w()
    a = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
    matmul = sustained(lambda: a @ a, seconds)
    copy_bytes_per_s = 2 * src.numel() * 4 / (copy["us_per_call"] * 1e-6)
    matmul_flops_per_s = 2 * 8192**3 / (matmul["us_per_call"] * 1e-6)
    return dict(power_limit_w=float(query_gpu("power.limit")), idle_w=idle_w, copy=copy,
                matmul=matmul, copy_gbps=copy_bytes_per_s / 1e9,
                matmul_tflops=matmul_flops_per_s / 1e12,
                pj_per_byte=(copy["power_w_median"] - idle_w) / copy_bytes_per_s * 1e12,
                pj_per_flop=(matmul["power_w_median"] - idle_w) / matmul_flops_per_s * 1e12)  # fmt: skip


def parse_cells(specs: list[str]) -> list[tuple[str, list[int]]]:
    cells = []
    for spec in specs:
        shape, _, tokens = spec.partition(":")
        cells.append((shape, [int(t) for t in tokens.split(",")]))
    return cells


def table(result: dict) -> str:
    """Markdown: per cell, sustained time, floor, power estimate, clocks and capped share."""
    lines = ["| shape | M | µs | floor | power estimate | time / estimate | SM MHz (min) | W | "
             "power-capped |", "|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for row in result["rows"]:
        lines.append(f"| {row['shape']} | {row['tokens']} | {row['us_per_call']:.0f} | "
                     f"{row['floor_us']:.0f} | {row['power_us']:.0f} | "
                     f"{row['us_per_call'] / row['power_us']:.2f} | {row['sm_mhz_median']:.0f} "
                     f"({row['sm_mhz_min']:.0f}) | {row['power_w_median']:.0f} | "
                     f"{row['power_capped_fraction']:.0%} |")  # fmt: skip
    return "\n".join(lines)


def power_estimate_us(calibration: dict, num_bytes: float, flops: float) -> float:
    """The module's estimate: the time below which ``num_bytes`` of HBM traffic and ``flops``
    would draw more than the board's limit, by ``calibration`` (see ``calibrate``)."""
    energy_j = (calibration["pj_per_byte"] * num_bytes + calibration["pj_per_flop"] * flops) * 1e-12
    return energy_j / (calibration["power_limit_w"] - calibration["idle_w"]) * 1e6


def estimates(bench: dict, calibration: dict) -> str:
    """Markdown: each cell of a ``bench_fused_moe.py`` result, its time (CUDA graph) and the
    power estimate from ``calibration``, both over the result's floor."""
    from bench_fused_moe import expected_active_experts, rows_path_bytes

    lines = ["| shape | M | time / floor | estimate / floor | time / estimate |",
             "|---|---|---|---|---|"]  # fmt: skip
    for row in bench["rows"]:
        tokens, top_k, hidden, inter = row["tokens"], row["top_k"], row["K"], row["I"]
        active = expected_active_experts(row["E"], top_k, tokens)
        power_us = power_estimate_us(calibration,
                                     sum(rows_path_bytes(active, tokens, top_k, hidden, inter)),
                                     6 * tokens * top_k * hidden * inter)  # fmt: skip
        time_us, floor = row["triton_graph_us"], row["floor_us"]
        lines.append(f"| {row['shape']} | {tokens} | {time_us / floor:.2f} | "
                     f"{power_us / floor:.2f} | {time_us / power_us:.2f} |")  # fmt: skip
    return "\n".join(lines)


def main() -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from bench_fused_moe import SHAPES, measured_ceilings, routed_calls, rows_path_bytes
    from common import environment, write_json

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, help="measure on the GPU and write JSON here")
    parser.add_argument("--from", dest="source", type=Path, help="print a JSON already written")
    parser.add_argument("--cells", nargs="+", default=list(CELLS),
                        help="shape:M,M,... (shapes of bench_fused_moe.py)")  # fmt: skip
    parser.add_argument("--seconds", type=float, default=2.5)
    parser.add_argument("--estimate", type=Path, help="with --from: a bench_fused_moe.py JSON "
                        "whose cells to estimate with that calibration")  # fmt: skip
    args = parser.parse_args()
    if (args.out is None) == (args.source is None):
        parser.error("give exactly one of --out (measure) and --from (an existing JSON)")
    if args.estimate is not None and args.source is None:
        parser.error("--estimate needs --from (the JSON that holds the calibration)")
    if args.source is not None:
        source = json.loads(args.source.read_text())
        if args.estimate is not None:
            print(estimates(json.loads(args.estimate.read_text()), source["calibration"]))
        else:
            print(table(source))
        return
    cells = parse_cells(args.cells)
    for shape, _ in cells:
        if shape not in SHAPES:
            parser.error(f"--cells: unknown shape {shape!r}")

    bandwidth, tflops = measured_ceilings()
    calibration = calibrate(args.seconds)
    limit_w, idle_w = calibration["power_limit_w"], calibration["idle_w"]
    print(f"copy {bandwidth:.0f} GB/s, bf16 matmul {tflops:.0f} TFLOP/s (do_bench); limit "
          f"{limit_w:.0f} W, idle {idle_w:.0f} W; sustained copy at "
          f"{calibration['copy']['power_w_median']:.0f} W ({calibration['pj_per_byte']:.1f} "
          f"pJ/B), matmul at {calibration['matmul']['power_w_median']:.0f} W and "
          f"{calibration['matmul']['sm_mhz_median']:.0f} MHz ({calibration['pj_per_flop']:.2f} "
          f"pJ/FLOP)", flush=True)  # fmt: skip

    rows = []
    for shape, tokens in cells:
        num_experts, top_k, hidden, inter, _ = SHAPES[shape]
        for call in routed_calls([shape], tokens):
            active = call.ids.unique().numel()
            num_bytes = sum(rows_path_bytes(active, call.tokens, top_k, hidden, inter))
            flops = 6 * call.tokens * top_k * hidden * inter
            row = dict(shape=shape, tokens=call.tokens, bytes=num_bytes, flops=flops,
                       floor_us=call.floor_us(bandwidth, tflops),
                       power_us=power_estimate_us(calibration, num_bytes, flops),
                       **sustained(call, args.seconds))  # fmt: skip
            print(f"{shape:18s} M={call.tokens:5d}: {row['us_per_call']:8.1f} us, floor "
                  f"{row['floor_us']:8.1f}, power estimate {row['power_us']:8.1f} "
                  f"({row['us_per_call'] / row['power_us']:.2f}x); SM "
                  f"{row['sm_mhz_median']:.0f} MHz (min {row['sm_mhz_min']:.0f}), "
                  f"{row['power_w_median']:.0f} W, power-capped "
                  f"{row['power_capped_fraction']:.0%} of samples", flush=True)  # fmt: skip
            rows.append(row)
    result = dict(environment=environment(), bandwidth_gbps=bandwidth, matmul_tflops=tflops,
                  calibration=calibration, rows=rows)  # fmt: skip
    write_json(args.out, result)
    print(table(result))


if __name__ == "__main__":
    main()
