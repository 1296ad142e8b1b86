"""One token's call with GEMM2 summing the top-k slots against the separate sum launch (GPU, bf16).

For each model shape, one token through ``TritonExperts`` with ``FUSED_TOPK_SUM`` off
(``separate_sum``: GEMM1, GEMM2, ``moe_sum``) and on (``fused_sum``: GEMM1, GEMM2). The fused
output must equal the separate one bit for bit, also over repeated CUDA-graph replays (its sum
order is fixed). Times are medians of ``do_bench_cudagraph``, each beside the floor of
``bench_fused_moe.py``. Writes JSON.

At commits 533738f and e838a35, as ``bench_decode_paths.py``, this script also timed decode
tiles found by scanning ``topk_ids`` (no alignment pass) for 16–256 tokens, with and without
the fused sum. The results are ``benchmarks/results/experts_decode_paths_h100_*.json``, and
lever 18 of ``NOTES.md`` says why that path was dropped.

    python benchmarks/experts/bench_one_token_sum.py --out benchmarks/results/experts_one_token_sum_h100.json
"""

from __future__ import annotations

import sys
from pathlib import Path

PATHS = {"separate_sum": {"FUSED_TOPK_SUM": False}, "fused_sum": {"FUSED_TOPK_SUM": True}}


def main() -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from bench_fused_moe import (
        SHAPES,
        cell_parser,
        floor_us,
        measured_ceilings,
        oracle,
        routed_calls,
    )
    from common import (
        compare_settings,
        environment,
        relative_error,
        write_json,
    )

    from moekit.experts import triton_experts

    args = cell_parser(
        __doc__.splitlines()[0], (1,), "calls that align (tiles_from_ids) sum separately either way"
    ).parse_args()

    bandwidth, tflops = measured_ceilings()
    rows = []
    for call in routed_calls(args.shapes, args.tokens):
        shape, tokens, x, weights, ids, w1, w2, b1, b2 = call
        num_experts, top_k, hidden, inter, activation = SHAPES[shape]
        floor = floor_us(ids, top_k, hidden, inter, bandwidth, tflops)
        timed, want = compare_settings(call, triton_experts, PATHS, reference="separate_sum")
        error = relative_error(want, oracle(x, w1, w2, weights, ids, activation, b1, b2))
        row = dict(shape=shape, tokens=tokens, E=num_experts, top_k=top_k, K=hidden, I=inter,
                   floor_us=floor, rel_error=error, **timed)  # fmt: skip
        same = row["fused_sum_equal"] and row["fused_sum_replays_equal"]
        cells = [f"{path} {row[f'{path}_us']:7.1f} ({row[f'{path}_us'] / floor:.3f}x)"
                 for path in PATHS]  # fmt: skip
        print(f"{shape:18s} M={tokens:5d} floor {floor:7.1f}  " + "  ".join(cells)
              + ("" if same else "  DIFFERS"), flush=True)  # fmt: skip
        rows.append(row)
    write_json(args.out, dict(environment=environment(), bandwidth_gbps=bandwidth,
                              matmul_tflops=tflops, rows=rows))  # fmt: skip


if __name__ == "__main__":
    main()
