"""Each call's kernels with and without programmatic dependent launch (GPU, bf16, CUDA graph).

``TritonExperts`` runs each cell two ways, set by ``triton_experts.PROGRAMMATIC_LAUNCH``:
  * ``plain``: every kernel (alignment, the row copy, GEMM1, GEMM2, ``moe_sum``) launches after
    the one before it has ended;
  * ``programmatic``: each kernel launches with programmatic dependent launch and waits for the
    one before it as its programs start; each but the last lets the next one start early (GEMM1
    as ``triton_experts.gemm2_starts_early`` says), so each launch overlaps the tail of the
    kernel before it. The per-boundary variants of lever 36 are in this script at 9c353cc.
The programmatic output must equal the plain one bit for bit, also over CUDA-graph replays.
Each round times both settings, in turn, in alternating order; the row keeps each setting's
median over the rounds, beside the floor of ``bench_fused_moe.py``. Writes JSON.

    python benchmarks/experts/bench_programmatic_launch.py --out benchmarks/results/experts_pdl_chain_h100.json
"""

from __future__ import annotations

import statistics
import sys
from pathlib import Path

TOKENS = (1, 2, 8, 16, 64, 256, 1024, 4096)
SETTINGS = {"plain": {"PROGRAMMATIC_LAUNCH": False}, "programmatic": {"PROGRAMMATIC_LAUNCH": True}}


def main() -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from bench_fused_moe import cell_parser, measured_ceilings, routed_calls
    from common import compare_in_turn, environment, write_json

    from moekit.experts import triton_experts

    parser = cell_parser(__doc__.splitlines()[0], TOKENS)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    bandwidth, tflops = measured_ceilings()
    rows = []
    for call in routed_calls(args.shapes, args.tokens):
        floor = call.floor_us(bandwidth, tflops)
        times, equal = compare_in_turn(call, triton_experts, SETTINGS, "plain", args.rounds)
        same = equal["programmatic"]
        medians = {f"{name}_us": statistics.median(t) for name, t in times.items()}
        row = dict(shape=call.shape, tokens=call.tokens, floor_us=floor, bit_identical=same,
                   **medians, rounds_us=times,
                   change_pct=100 * (medians["programmatic_us"] / medians["plain_us"] - 1))  # fmt: skip
        print(f"{call.shape:18s} M={call.tokens:5d} floor {floor:8.1f} plain "
              f"{row['plain_us']:8.1f} ({row['plain_us'] / floor:.3f}x) programmatic "
              f"{row['change_pct']:+.2f}%" + ("" if same else "  DIFFERS"), flush=True)  # fmt: skip
        rows.append(row)
        write_json(args.out, dict(environment=environment(), bandwidth_gbps=bandwidth,
                                  matmul_tflops=tflops, rows=rows))  # fmt: skip


if __name__ == "__main__":
    main()
