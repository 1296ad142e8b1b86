"""A few tokens with tiles from ``topk_ids`` against the aligned path (GPU, bf16, CUDA graph).

For each model shape and token count, ``TritonExperts`` runs three ways, set by
``IDS_TILES_MAX_TOKENS`` and ``IDS_TILES_MAX_SLOTS_PER_EXPERT``:
  * ``aligned`` (share 0): the alignment pass, both GEMMs, ``moe_sum`` (one token still takes
    its tiles from the ids);
  * ``shipped`` (the library's limits): tiles from the ids, each slot its own tile, and GEMM2's
    own top-k sum, where the call is within both limits;
  * ``forced`` (no limits): tiles from the ids for every token count, to show where the limits
    should be.
Each output must equal the aligned one bit for bit, also over CUDA-graph replays. Times are
medians of ``do_bench_cudagraph`` beside the floor of ``bench_fused_moe.py``. Writes JSON.

    python benchmarks/experts/bench_small_batch.py --out benchmarks/results/experts_small_batch_h100.json
"""

from __future__ import annotations

import sys
from pathlib import Path

TOKENS = (2, 3, 4, 6, 8, 16)


def main() -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from bench_fused_moe import SHAPES, cell_parser, measured_ceilings, routed_calls
    from common import compare_settings, environment, write_json

    from moekit.experts import triton_experts

    args = cell_parser(__doc__.splitlines()[0], TOKENS).parse_args()
    limits = {  # (IDS_TILES_MAX_TOKENS, IDS_TILES_MAX_SLOTS_PER_EXPERT)
        "aligned": (1, 0.0),
        "shipped": (triton_experts.IDS_TILES_MAX_TOKENS,
                    triton_experts.IDS_TILES_MAX_SLOTS_PER_EXPERT),
        "forced": (2**31, float("inf")),
    }  # fmt: skip
    settings = {path: {"IDS_TILES_MAX_TOKENS": tokens, "IDS_TILES_MAX_SLOTS_PER_EXPERT": share}
                for path, (tokens, share) in limits.items()}  # fmt: skip

    bandwidth, tflops = measured_ceilings()
    rows = []
    for call in routed_calls(args.shapes, args.tokens):
        num_experts, top_k, hidden, inter, _ = SHAPES[call.shape]
        floor = call.floor_us(bandwidth, tflops)
        timed, _ = compare_settings(call, triton_experts, settings, reference="aligned")
        row = dict(shape=call.shape, tokens=call.tokens, E=num_experts, top_k=top_k,
                   distinct_experts=int(call.ids.unique().numel()), floor_us=floor,
                   shipped_takes_ids=triton_experts.tiles_from_ids(
                       call.tokens, call.tokens * top_k, num_experts),
                   **timed)  # fmt: skip
        same = all(row[f"{p}_equal"] and row[f"{p}_replays_equal"] for p in limits
                   if p != "aligned")  # fmt: skip
        print(f"{call.shape:18s} M={call.tokens:3d} distinct {row['distinct_experts']:4d} floor "
              f"{floor:7.1f} " + " ".join(f"{p} {row[f'{p}_us']:7.1f}" for p in limits)
              + ("" if same else "  DIFFERS"), flush=True)  # fmt: skip
        rows.append(row)
    write_json(args.out, dict(environment=environment(), bandwidth_gbps=bandwidth,
                              matmul_tflops=tflops, limits=limits, rows=rows))  # fmt: skip


if __name__ == "__main__":
    main()
