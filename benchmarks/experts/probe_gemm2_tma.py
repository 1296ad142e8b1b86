"""Whole calls with GEMM2 reading its weights the other way than GEMM1 (GPU, bf16, CUDA graph).

A table entry's ``B_TMA`` serves both GEMMs. This probe flips it for GEMM2 alone (patching
``GemmConfig.gemm2``), to see whether a separate field would pay: each cell runs the shipped entry
and the flipped one in turn, in alternating order over the rounds, outputs compared bit for bit
(also over CUDA-graph replays), medians kept. Writes JSON.

    python benchmarks/experts/probe_gemm2_tma.py --out benchmarks/results/experts_gemm2_tma_h100.json
"""

from __future__ import annotations

import dataclasses
import statistics
import sys
from pathlib import Path

TOKENS = (16, 64, 256, 1024)


def main() -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from bench_fused_moe import cell_parser, measured_ceilings, routed_calls
    from common import compare_in_turn, environment, write_json

    from moekit.experts._triton_impl.configs import GemmConfig

    shipped = GemmConfig.gemm2

    def flipped(self: GemmConfig) -> GemmConfig:
        tile = shipped(self)
        return dataclasses.replace(tile, B_TMA=not tile.B_TMA)

    settings = {"shipped": {"gemm2": shipped}, "gemm2_tma_flipped": {"gemm2": flipped}}
    parser = cell_parser(__doc__.splitlines()[0], TOKENS)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    bandwidth, tflops = measured_ceilings()
    rows = []
    for call in routed_calls(args.shapes, args.tokens):
        floor = call.floor_us(bandwidth, tflops)
        times, equal = compare_in_turn(call, GemmConfig, settings, "shipped", args.rounds)
        same = equal["gemm2_tma_flipped"]
        base, other = (statistics.median(times[n]) for n in settings)
        row = dict(shape=call.shape, tokens=call.tokens, floor_us=floor, shipped_us=base,
                   flipped_us=other, change_pct=100 * (other / base - 1), bit_identical=same)  # fmt: skip
        rows.append(row)
        print(f"{call.shape:18s} M={call.tokens:5d} shipped {base:8.1f} ({base / floor:.3f}x) "
              f"GEMM2 TMA flipped {row['change_pct']:+.2f}%" + ("" if same else "  DIFFERS"),
              flush=True)  # fmt: skip
        write_json(args.out, dict(environment=environment(), bandwidth_gbps=bandwidth,
                                  matmul_tflops=tflops, rows=rows))  # fmt: skip


if __name__ == "__main__":
    main()
