"""Time the routing functions on a GPU: the fused Triton kernel vs the torch path and plain torch.

Every case is first checked: Triton ids must equal the torch path's, weights within 1e-5.
Cases: tokens x experts x top-k for softmax (fused_topk, renormalised), sigmoid + bias
(fused_topk_bias, scale 2.5) and grouped (DeepSeek-V3 settings: sigmoid, bias, 8 groups, 4 kept,
renormalise, scale 2.5). bf16 logits. Each time is taken eagerly and from a CUDA graph.

    python benchmarks/routing/bench_routing.py --out benchmarks/results/routing_h100.json
"""

from __future__ import annotations

import argparse
import itertools
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from common import copy_bandwidth_gbps, environment, time_us, write_json

from moekit.routing import fused_topk, fused_topk_bias, grouped_topk
from moekit.routing._checks import routing_problem
from moekit.routing._triton_impl.launch import route_triton

TOKENS = (1, 64, 1024, 4096, 8192, 32768)
EXPERTS = (64, 128, 256)
TOP_K = (2, 4, 8)
MODES = ("softmax", "sigmoid_bias", "grouped")
NUM_INPUT_SETS = 4


def routing_call(mode: str, logits: torch.Tensor, bias: torch.Tensor, top_k: int, backend: str):
    if mode == "softmax":
        return lambda: fused_topk(None, logits, top_k, True, backend=backend)
    if mode == "sigmoid_bias":
        return lambda: fused_topk_bias(None, logits, bias, top_k, True, scoring_func="sigmoid",
                                       routed_scaling_factor=2.5, backend=backend)  # fmt: skip
    return lambda: grouped_topk(None, logits, top_k, True, 8, 4, "sigmoid", 2.5, bias,
                                backend=backend)  # fmt: skip


def plain_torch(mode: str, logits: torch.Tensor, bias: torch.Tensor, top_k: int):
    """What a user writes without a routing library (unfused, ties unordered)."""
    if mode == "softmax":

        def run():
            weights, ids = torch.softmax(logits.float(), dim=-1).topk(top_k, dim=-1)
            return weights / weights.sum(-1, keepdim=True), ids.int()

        return run
    if mode == "sigmoid_bias":

        def run():
            scores = torch.sigmoid(logits.float())
            ids = (scores + bias).topk(top_k, dim=-1).indices
            weights = scores.gather(1, ids)
            return 2.5 * weights / weights.sum(-1, keepdim=True), ids.int()

        return run

    def run():
        scores = torch.sigmoid(logits.float())
        keyed = scores + bias
        grouped = keyed.view(logits.shape[0], 8, -1)
        group_scores = grouped.topk(2, dim=-1).values.sum(-1)
        kept = group_scores.topk(4, dim=-1).indices
        mask = torch.zeros_like(group_scores).scatter_(1, kept, 1.0).bool()
        keyed = keyed.masked_fill(~mask.repeat_interleave(grouped.shape[-1], 1), float("-inf"))
        ids = keyed.topk(top_k, dim=-1).indices
        weights = scores.gather(1, ids)
        return 2.5 * weights / (weights.sum(-1, keepdim=True) + 1e-20), ids.int()

    return run


def cycling(calls):
    """One call per input set in turn, so the cache does not flatter the kernel."""
    state = {"i": 0}

    def run():
        state["i"] = (state["i"] + 1) % len(calls)
        return calls[state["i"]]()

    return run


def make_inputs(tokens: int, experts: int, seed: int):
    gen = torch.Generator(device="cuda").manual_seed(seed)
    logits = torch.randn(tokens, experts, device="cuda", generator=gen).to(torch.bfloat16)
    bias = torch.randn(experts, device="cuda", generator=gen) * 0.1
    return logits, bias


def selection_keys(mode, logits, bias):
    scores = (
        torch.softmax(logits.float(), -1) if mode == "softmax" else torch.sigmoid(logits.float())
    )
    return scores if mode == "softmax" else scores + bias


def check(mode, logits, bias, top_k):
    """Triton vs the torch path. bf16 logits tie often and the two paths round their scores
    apart by an ulp, so ids may differ between keys closer than 1e-6; weights are compared
    where the ids agree. Returns the fraction of rows whose ids differ."""
    got_w, got_ids = routing_call(mode, logits, bias, top_k, "triton")()
    want_w, want_ids = routing_call(mode, logits, bias, top_k, "torch")()
    keys = selection_keys(mode, logits, bias)
    got_keys, want_keys = keys.gather(1, got_ids.long()), keys.gather(1, want_ids.long())
    same_rows = (got_ids == want_ids).all(dim=1)
    if not torch.allclose(got_keys, want_keys, atol=1e-6, rtol=0) or not torch.allclose(
        got_w[same_rows], want_w[same_rows], atol=1e-5
    ):
        raise AssertionError(f"triton != torch for {mode} {tuple(logits.shape)} k={top_k}")
    return 1.0 - same_rows.float().mean().item()


def bench(args) -> dict:
    bandwidth = copy_bandwidth_gbps()
    rows = []
    for mode, tokens, experts, top_k in itertools.product(args.modes, TOKENS, EXPERTS, TOP_K):
        if args.quick and (experts != 256 or top_k != 8):
            continue
        inputs = [make_inputs(tokens, experts, s) for s in range(NUM_INPUT_SETS)]
        differing_rows = check(mode, *inputs[0], top_k)
        floor_bytes = tokens * experts * 2 + tokens * top_k * 8
        row = dict(mode=mode, tokens=tokens, experts=experts, top_k=top_k,
                   floor_us=floor_bytes / (bandwidth * 1e3),
                   rows_with_near_tie_swaps=differing_rows)  # fmt: skip
        for name, maker in {
            "triton": lambda lg, b: routing_call(mode, lg, b, top_k, "triton"),
            "torch": lambda lg, b: routing_call(mode, lg, b, top_k, "torch"),
            "plain_torch": lambda lg, b: plain_torch(mode, lg, b, top_k),
        }.items():
            fn = cycling([maker(lg, b) for lg, b in inputs])
            row[f"{name}_graph_us"] = time_us(fn, graph=True)[0]
            if name == "triton" or (tokens <= 64 and not args.graph_only):
                row[f"{name}_eager_us"] = time_us(fn, graph=False)[0]
        rows.append(row)
        print(f"{mode:13s} T={tokens:6d} E={experts:3d} k={top_k}: triton "
              f"{row['triton_graph_us']:7.2f} us  torch {row['torch_graph_us']:8.2f}  plain "
              f"{row['plain_torch_graph_us']:8.2f}  floor {row['floor_us']:6.2f}", flush=True)  # fmt: skip
    return dict(bandwidth_gbps=bandwidth, rows=rows)


def sweep(args) -> list[dict]:
    """(BLOCK_T, num_warps) per size, for tuning launch_config."""
    results = []
    for mode, tokens in itertools.product(("softmax", "grouped"), (64, 1024, 8192, 32768)):
        inputs = [make_inputs(tokens, 256, s) for s in range(NUM_INPUT_SETS)]
        problems = [routing_problem(None, lg, 8, True, "sigmoid", None, bias=b,
                                    routed_scaling_factor=2.5, grouped=mode == "grouped",
                                    num_expert_group=8 if mode == "grouped" else None,
                                    topk_group=4 if mode == "grouped" else None)
                    for lg, b in inputs]  # fmt: skip
        for block_t, warps in itertools.product((1, 2, 4, 8, 16, 32), (1, 2, 4, 8)):
            fn = cycling([lambda p=p: route_triton(p, config=(block_t, warps)) for p in problems])
            us = time_us(fn, graph=True)[0]
            results.append(dict(mode=mode, tokens=tokens, block_t=block_t, warps=warps, us=us))
            print(f"sweep {mode} T={tokens} BLOCK_T={block_t} warps={warps}: {us:.2f} us",
                  flush=True)  # fmt: skip
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--quick", action="store_true", help="E=256, k=8 only")
    parser.add_argument("--sweep", action="store_true", help="also sweep launch configs")
    parser.add_argument("--no-bench", action="store_true", help="only the sweep")
    parser.add_argument("--graph-only", action="store_true", help="baselines from graphs only")
    parser.add_argument("--modes", nargs="+", default=list(MODES), choices=MODES)
    args = parser.parse_args()
    payload = dict(environment=environment(), **({} if args.no_bench else bench(args)))
    if args.sweep:
        payload["sweep"] = sweep(args)
    write_json(args.out, payload)


if __name__ == "__main__":
    main()
