"""Time ``moe_align_block_size`` on a GPU: Triton vs torch backends, eager and CUDA graph.

Every case is first checked: the Triton outputs must equal the torch path's exactly.

    python benchmarks/align/bench_align.py --out benchmarks/results/align_h100.json
"""

from __future__ import annotations

import argparse
import itertools
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from common import copy_bandwidth_gbps, environment, time_us, write_json

from moekit.align import moe_align_block_size
from moekit.align._sizes import cdiv, sorted_ids_length

TOKENS = (1, 16, 256, 4096, 16384)
TOP_K = (2, 8)
EXPERTS = (8, 128, 256)
BLOCKS = (16, 64)
GRAPH_MAX_TOKENS = 16384  # every size is also timed inside a CUDA graph
NUM_INPUT_SETS = 4


def skewed_topk_ids(num_tokens: int, top_k: int, num_experts: int, seed: int) -> torch.Tensor:
    """Distinct experts per token, drawn with Zipf-like popularity (Gumbel top-k)."""
    gen = torch.Generator(device="cuda").manual_seed(seed)
    popularity = 1.0 / torch.arange(1, num_experts + 1, device="cuda").float() ** 1.2
    popularity = popularity[torch.randperm(num_experts, device="cuda", generator=gen)]
    uniform = torch.rand(num_tokens, num_experts, device="cuda", generator=gen)
    gumbel = -torch.log(-torch.log(uniform.clamp_min(1e-20)))
    return (popularity.log() + gumbel).topk(top_k, dim=1).indices.to(torch.int32)


def check_case(ids: torch.Tensor, block: int, experts: int, programmatic: bool = False) -> None:
    got = moe_align_block_size(
        ids, block, experts, backend="triton", programmatic_launch=programmatic
    )
    ref = moe_align_block_size(ids, block, experts, backend="torch")
    for name, g, r in zip(("sorted_token_ids", "expert_ids", "num_tokens_post_pad"), got, ref):
        if not torch.equal(g, r):
            raise AssertionError(f"{name} differs: tokens={ids.shape} block={block} E={experts}")


def sweep_layout_configs(args: argparse.Namespace) -> list[dict]:
    """Time the Triton path under several launch configurations (for tuning launch_config):
    ids of each of ``--sweep-top-k`` over each of ``--sweep-experts``, block 16. Placement
    ``groups``: every chunk shorter than the slots and one chunk of all slots up to 4096 slots,
    every experts-per-program and warp count asked for; ``sorted``: one program sorts each
    chunk (``--sweep-sort-chunks``, ``--sweep-sort-epp``); ``default``: the shipped rule. With
    ``--programmatic`` the kernels launch as inside a ``TritonExperts`` call on Hopper."""
    import moekit.align._triton_impl.block_align as launcher
    from moekit.align._triton_impl.launch_config import LayoutConfig

    default = launcher.layout_config
    results = []
    for tokens, top_k, experts in itertools.product(
        args.sweep_tokens, args.sweep_top_k, args.sweep_experts
    ):
        inputs = [skewed_topk_ids(tokens, top_k, experts, s) for s in range(NUM_INPUT_SETS)]
        numel = tokens * top_k
        configs: list[LayoutConfig | None] = []
        if "default" in args.sweep_placements:
            configs.append(None)
        if "groups" in args.sweep_placements:
            chunks = [c for c in args.sweep_chunks if c < numel]
            if numel <= 4096:
                chunks.append(max(16, 1 << (numel - 1).bit_length()))
            for chunk, epp, warps in itertools.product(chunks, args.sweep_epp, args.sweep_warps):
                configs.append(LayoutConfig(chunk, min(chunk, 4096 // epp), epp, warps))
        if "sorted" in args.sweep_placements:
            for chunk, epp, warps in itertools.product(
                args.sweep_sort_chunks, args.sweep_sort_epp, args.sweep_warps
            ):
                configs.append(LayoutConfig(chunk, chunk, epp, warps, sort_chunks=True))
        for config in configs:
            if config is not None:
                launcher.layout_config = lambda n, b, c=config: c
            try:
                check_case(inputs[0], 16, experts, args.programmatic)
                us = time_us(
                    lambda: moe_align_block_size(
                        inputs[0],
                        16,
                        experts,
                        backend="triton",
                        programmatic_launch=args.programmatic,
                    ),
                    graph=True,
                )[0]
            finally:
                launcher.layout_config = default
            shown = config or default(numel, experts)
            results.append(
                {
                    "tokens": tokens,
                    "top_k": top_k,
                    "experts": experts,
                    "placement": "default" if config is None else
                    ("sorted" if config.sort_chunks else "groups"),
                    "chunk": shown.chunk,
                    "experts_per_program": shown.experts_per_program,
                    "num_warps": shown.num_warps,
                    "sort_chunks": shown.sort_chunks,
                    "programmatic": args.programmatic,
                    "graph_us": us,
                }
            )  # fmt: skip
            print(
                f"sweep T={tokens} k={top_k} E={experts} {results[-1]['placement']} "
                f"chunk={shown.chunk} epp={shown.experts_per_program} warps={shown.num_warps}"
                f" sorted={shown.sort_chunks}: {us:.1f} us",
                flush=True,
            )
    return results


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--quick", action="store_true", help="one shape per token count")
    parser.add_argument("--sweep", action="store_true", help="also sweep launch configurations")
    parser.add_argument("--sweep-only", action="store_true", help="only the sweep")
    parser.add_argument("--sweep-tokens", nargs="+", type=int, default=[16, 256, 1024, 4096, 16384])
    parser.add_argument("--sweep-experts", nargs="+", type=int, default=[256])
    parser.add_argument("--sweep-top-k", nargs="+", type=int, default=[8])
    parser.add_argument(
        "--sweep-placements",
        nargs="+",
        choices=["default", "groups", "sorted"],
        default=["groups"],
    )
    parser.add_argument("--sweep-sort-chunks", nargs="+", type=int, default=[1024, 2048, 4096])
    parser.add_argument("--sweep-sort-epp", nargs="+", type=int, default=[8])
    parser.add_argument("--sweep-chunks", nargs="+", type=int, default=[1024, 2048, 4096, 8192])
    parser.add_argument("--sweep-epp", nargs="+", type=int, default=[2, 4, 8, 16])
    parser.add_argument("--sweep-warps", nargs="+", type=int, default=[4, 8])
    parser.add_argument(
        "--programmatic", action="store_true", help="sweep with programmatic dependent launch"
    )
    args = parser.parse_args()

    bandwidth = copy_bandwidth_gbps()
    rows = []
    cases = list(itertools.product(TOKENS, TOP_K, EXPERTS, BLOCKS))
    if args.quick:
        cases = [c for c in cases if c[1:] == (8, 256, 16)]
    if args.sweep_only:
        cases = []
    for tokens, top_k, experts, block in cases:
        inputs = [skewed_topk_ids(tokens, top_k, experts, s) for s in range(NUM_INPUT_SETS)]
        for ids in inputs:
            check_case(ids, block, experts)
        numel = tokens * top_k
        length = sorted_ids_length(numel, experts, block, False)
        min_bytes = 4 * (numel + length + cdiv(length, block) + 1)
        row = {
            "tokens": tokens,
            "top_k": top_k,
            "experts": experts,
            "block_size": block,
            "floor_us": min_bytes / (bandwidth * 1e3),
        }
        for backend in ("triton", "torch"):
            state = {"i": 0}

            def call(backend: str = backend) -> None:
                state["i"] = (state["i"] + 1) % NUM_INPUT_SETS
                moe_align_block_size(inputs[state["i"]], block, experts, backend=backend)

            row[f"{backend}_us"] = time_us(call, graph=False)[0]
            if tokens <= GRAPH_MAX_TOKENS:
                ids = inputs[0]
                try:
                    row[f"{backend}_graph_us"] = time_us(
                        lambda b=backend, x=ids: moe_align_block_size(x, block, experts, backend=b),
                        graph=True,
                    )[0]
                except RuntimeError as error:  # a path that cannot be captured is reported
                    print(f"{backend}: no CUDA graph: {error}", flush=True)
        best_triton = row.get("triton_graph_us", row["triton_us"])
        best_torch = row.get("torch_graph_us", row["torch_us"])
        row["speedup_vs_torch"] = best_torch / best_triton
        rows.append(row)
        print(
            f"T={tokens:6d} k={top_k} E={experts:3d} B={block:2d} "
            f"triton {row['triton_us']:7.1f} us (graph {row.get('triton_graph_us', float('nan')):6.1f})"
            f"  torch {row['torch_us']:7.1f} us (graph {row.get('torch_graph_us', float('nan')):6.1f})"
            f"  x{row['speedup_vs_torch']:.1f}",
            flush=True,
        )
    payload = {"environment": environment(), "copy_bandwidth_gbps": bandwidth, "rows": rows}
    if args.sweep or args.sweep_only:
        payload["sweep"] = sweep_layout_configs(args)
    write_json(args.out, payload)


if __name__ == "__main__":
    main()
