"""GEMM2 in token order with the top-k sum (``token_sum_gemm``) against the shipped decode path
(GPU, bf16, CUDA graph).

For each model shape and token count, ``TritonExperts`` runs:
  * ``shipped``: the library's rule (``token_sum_gemm2``);
  * ``without``: never in token order (the alignment pass or tiles from ``topk_ids`` as before,
    GEMM2 writing per-slot rows, ``moe_sum`` or GEMM2's counter sum);
  * ``everywhere``: always in token order, GEMM1's tiles then from ``topk_ids`` (two launches);
  * ``everywhere_loop``: the same with the K steps in a loop rather than unrolled;
  * ``everywhere_n{BLOCK_N}_k{BLOCK_K}_w{warps}`` (``--tiles``): other token-order tiles.
The token-order sum rounds each slot row as GEMM2 does, but its products add in another order,
so outputs are compared by relative error against ``without``'s and ``TorchExperts``', and
each variant against itself over CUDA-graph replays. Times are medians of
``do_bench_cudagraph`` beside the floor of ``bench_fused_moe.py``. Writes JSON.

    python benchmarks/experts/probe_token_sum.py --out benchmarks/results/experts_token_sum_h100.json
"""

from __future__ import annotations

import sys
from pathlib import Path
from unittest import mock

TOKENS = (1, 2, 3, 4, 6, 8, 10, 16)
TILES = ((32, 256, 4), (64, 128, 4), (0, 64, 4), (0, 128, 8))  # (BLOCK_N, BLOCK_K, warps)


def main() -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from bench_fused_moe import SHAPES, cell_parser, measured_ceilings, routed_calls
    from common import (
        environment,
        graph_replays_agree,
        relative_error,
        time_us,
        write_json,
    )

    from moekit.experts import triton_experts
    from moekit.experts._triton_impl import token_sum_gemm

    parser = cell_parser(__doc__.splitlines()[0], TOKENS)
    parser.add_argument("--tiles", action="store_true", help="also the other GEMM2 tiles")
    args = parser.parse_args()
    every = {"token_sum_gemm2": lambda *_: True, "IDS_TILES_GROUP_M": 512}
    variants = {  # name: (triton_experts attributes, token-order tile or None)
        "without": ({"token_sum_gemm2": lambda *_: False}, None),
        "shipped": ({"token_sum_gemm2": triton_experts.token_sum_gemm2}, None),
        "everywhere": (every, None),
        "everywhere_loop": (every, token_sum_gemm.TokenSumTile(max_unrolled_steps=0)),
    }
    if args.tiles:
        for block_n, block_k, warps in TILES:
            tile = token_sum_gemm.TokenSumTile(block_n, block_k, warps, max_unrolled_steps=8)
            variants[f"everywhere_n{block_n}_k{block_k}_w{warps}"] = (every, tile)

    bandwidth, tflops = measured_ceilings()
    rows = []
    for call in routed_calls(args.shapes, args.tokens):
        num_experts, top_k, hidden, inter, _ = SHAPES[call.shape]
        floor = call.floor_us(bandwidth, tflops)
        torch_out = call("torch")
        row: dict[str, object] = dict(shape=call.shape, tokens=call.tokens, E=num_experts,
                                      top_k=top_k, floor_us=floor)  # fmt: skip
        without = None
        for name, (attributes, tile) in variants.items():
            tile = tile if tile is not None else token_sum_gemm.DEFAULT_TILE
            with mock.patch.multiple(triton_experts, **attributes), \
                    mock.patch.object(token_sum_gemm, "DEFAULT_TILE", tile):  # fmt: skip
                try:
                    out = call()
                except Exception as error:  # a tile that does not compile: record, go on
                    row[f"{name}_error"] = f"{type(error).__name__}: {error}"[:300]
                    print(f"  {name} failed: {row[f'{name}_error']}", flush=True)
                    continue
                without = out if name == "without" else without
                row[f"{name}_rel_err_vs_torch"] = relative_error(out, torch_out)
                if without is not None:
                    row[f"{name}_rel_err_vs_without"] = relative_error(out, without)
                row[f"{name}_replays_equal"] = graph_replays_agree(call, out)
                row[f"{name}_us"] = time_us(call, graph=True)[0]
        print(f"{call.shape:18s} M={call.tokens:3d} floor {floor:7.1f} "
              + " ".join(f"{n} {row[f'{n}_us']:7.1f}" for n in variants if f"{n}_us" in row),
              flush=True)  # fmt: skip
        rows.append(row)
    write_json(args.out, dict(environment=environment(), bandwidth_gbps=bandwidth,
                              matmul_tflops=tflops, rows=rows))  # fmt: skip


if __name__ == "__main__":
    main()
