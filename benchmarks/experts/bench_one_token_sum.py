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

import argparse
import sys
from pathlib import Path

PATHS = {"separate_sum": False, "fused_sum": True}


def run_path(name: str, call):  # type: ignore[no-untyped-def]
    """``call()`` with ``TritonExperts`` switched to path ``name``."""
    from moekit.experts import triton_experts

    saved = triton_experts.FUSED_TOPK_SUM
    triton_experts.FUSED_TOPK_SUM = PATHS[name]
    try:
        return call()
    finally:
        triton_experts.FUSED_TOPK_SUM = saved


def graph_replays_agree(fn, want, replays: int = 20) -> bool:  # type: ignore[no-untyped-def]
    import torch

    stream = torch.cuda.Stream()
    with torch.cuda.stream(stream):
        fn()  # compile and warm up outside the capture
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = fn()
    same = True
    for _ in range(replays):
        graph.replay()
        torch.cuda.synchronize()
        same &= bool(torch.equal(out, want))
    return same


def main() -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import torch
    from bench_fused_moe import (
        SHAPES,
        floor_us,
        make_routed_tokens,
        make_weights,
        matmul_tflops,
        oracle,
    )
    from common import copy_bandwidth_gbps, environment, relative_error, time_us, write_json

    from moekit.experts import fused_experts

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--shapes", nargs="+", default=list(SHAPES), choices=list(SHAPES))
    parser.add_argument("--tokens", nargs="+", type=int, default=[1],
                        help="more than one token always takes the separate sum")  # fmt: skip
    args = parser.parse_args()

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

            floor = floor_us(ids, top_k, hidden, inter, bandwidth, tflops)
            want = run_path("separate_sum", call)
            row = dict(shape=shape, tokens=tokens, E=num_experts, top_k=top_k, K=hidden,
                       I=inter, floor_us=floor,
                       rel_error=relative_error(want, oracle(x, w1, w2, weights, ids, activation,
                                                             b1, b2)))  # fmt: skip
            for path in PATHS:
                got = run_path(path, call)
                row[f"{path}_equal"] = bool(torch.equal(got, want))
                row[f"{path}_replays_equal"] = run_path(
                    path, lambda: graph_replays_agree(call, want)
                )
                row[f"{path}_us"] = run_path(path, lambda: time_us(call, graph=True)[0])
            cells = []
            for path in PATHS:
                same = row[f"{path}_equal"] and row[f"{path}_replays_equal"]
                us = row[f"{path}_us"]
                cells.append(f"{path} {us:7.1f} ({us / floor:.3f}x{'' if same else ' DIFFERS'})")
            print(f"{shape:18s} M={tokens:5d} floor {floor:7.1f}  " + "  ".join(cells),
                  flush=True)  # fmt: skip
            rows.append(row)
        torch.cuda.empty_cache()
    write_json(args.out, dict(environment=environment(), bandwidth_gbps=bandwidth,
                              matmul_tflops=tflops, rows=rows))  # fmt: skip


if __name__ == "__main__":
    main()
