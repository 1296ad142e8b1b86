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

import argparse
import sys
from pathlib import Path

TOKENS = (2, 3, 4, 6, 8, 16)


def main() -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import torch
    from bench_fused_moe import SHAPES, floor_us, make_routed_tokens, make_weights, matmul_tflops
    from bench_one_token_sum import graph_replays_agree
    from common import copy_bandwidth_gbps, environment, time_us, write_json

    from moekit.experts import fused_experts, triton_experts

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--shapes", nargs="+", default=list(SHAPES), choices=list(SHAPES))
    parser.add_argument("--tokens", nargs="+", type=int, default=list(TOKENS))
    args = parser.parse_args()
    shipped = (triton_experts.IDS_TILES_MAX_TOKENS, triton_experts.IDS_TILES_MAX_SLOTS_PER_EXPERT)
    limits = {"aligned": (1, 0.0), "shipped": shipped, "forced": (2**31, float("inf"))}

    def with_limits(path: str, fn):  # type: ignore[no-untyped-def]
        (triton_experts.IDS_TILES_MAX_TOKENS,
         triton_experts.IDS_TILES_MAX_SLOTS_PER_EXPERT) = limits[path]  # fmt: skip
        try:
            return fn()
        finally:
            triton_experts.IDS_TILES_MAX_TOKENS, triton_experts.IDS_TILES_MAX_SLOTS_PER_EXPERT = (
                shipped
            )

    bandwidth, tflops = copy_bandwidth_gbps(), matmul_tflops()
    print(f"copy {bandwidth:.0f} GB/s, bf16 matmul {tflops:.0f} TFLOP/s", flush=True)
    rows = []
    for shape in args.shapes:
        num_experts, top_k, hidden, inter, activation = SHAPES[shape]
        w1, w2, b1, b2 = make_weights(num_experts, top_k, hidden, inter, activation)
        gen = torch.Generator(device="cuda").manual_seed(1)
        for tokens in args.tokens:
            x, weights, ids = make_routed_tokens(tokens, num_experts, top_k, hidden, gen)

            def call(x=x, weights=weights, ids=ids):  # type: ignore[no-untyped-def]
                return fused_experts(x, w1, w2, weights, ids, activation=activation,
                                     w1_bias=b1, w2_bias=b2, backend="triton", check_ids=False)  # fmt: skip

            want = with_limits("aligned", call)
            floor = floor_us(ids, top_k, hidden, inter, bandwidth, tflops)
            row = dict(shape=shape, tokens=tokens, E=num_experts, top_k=top_k,
                       distinct_experts=int(ids.unique().numel()), floor_us=floor,
                       shipped_takes_ids=triton_experts.tiles_from_ids(
                           tokens, tokens * top_k, num_experts))  # fmt: skip
            for path in limits:
                if path != "aligned":
                    row[f"{path}_equal"] = bool(torch.equal(with_limits(path, call), want))
                    row[f"{path}_replays_equal"] = with_limits(
                        path, lambda: graph_replays_agree(call, want)
                    )
                row[f"{path}_us"] = with_limits(path, lambda: time_us(call, graph=True)[0])
            same = all(row[f"{p}_equal"] and row[f"{p}_replays_equal"] for p in limits
                       if p != "aligned")  # fmt: skip
            print(f"{shape:18s} M={tokens:3d} distinct {row['distinct_experts']:4d} floor "
                  f"{floor:7.1f} " + " ".join(f"{p} {row[f'{p}_us']:7.1f}" for p in limits)
                  + ("" if same else "  DIFFERS"), flush=True)  # fmt: skip
            rows.append(row)
        torch.cuda.empty_cache()
    write_json(args.out, dict(environment=environment(), bandwidth_gbps=bandwidth,
                              matmul_tflops=tflops, limits=limits, rows=rows))  # fmt: skip


if __name__ == "__main__":
    main()
