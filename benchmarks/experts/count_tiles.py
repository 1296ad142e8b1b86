"""How many m-tiles a GEMM runs per column block, by fold rule, on random routing (CPU, no GPU).

A GEMM program streams one column block of its expert's weights for all of K whatever rows it
holds, so where that stream sets the time, the time follows this count. Routing is the top-k of
random logits plus ``skew`` times a normal draw per expert, as ``bench_fused_moe.py --skew``
draws it, but from CPU generators, so the routings are alike, not the same. Rules:
``aligned`` (one program per tile), ``tail`` (an expert's last tile folds into the one before
when its rows fit ``--tail``), ``whole`` (the last tile folds whatever its rows) and ``pairs``
(every two tiles of an expert in one program).

    python benchmarks/experts/count_tiles.py --experts 128 --top-k 8 --tokens 1024 --block-m 64
"""

from __future__ import annotations

import argparse
import math

import torch
from bench_fused_moe import busiest_over_mean


def programs(counts: list[int], block_m: int, rule: str, tail: int) -> int:
    """Programs per column block for experts of ``counts`` rows under ``rule``."""
    total = 0
    for rows in counts:
        tiles = math.ceil(rows / block_m)
        if rule == "pairs":
            total += math.ceil(tiles / 2)
        elif tiles >= 2 and (
            rule == "whole" or (rule == "tail" and rows - (tiles - 1) * block_m <= tail)
        ):
            total += tiles - 1
        else:
            total += tiles
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--experts", type=int, default=128)
    parser.add_argument("--top-k", type=int, default=8)
    parser.add_argument("--tokens", type=int, default=1024)
    parser.add_argument("--block-m", type=int, default=64)
    parser.add_argument("--tail", type=int, default=16)
    parser.add_argument("--skews", type=float, nargs="*", default=[0.0, 0.25, 0.5])
    parser.add_argument("--seeds", type=int, default=2)
    args = parser.parse_args()
    for skew in args.skews:
        offsets = skew * torch.randn(args.experts, generator=torch.Generator().manual_seed(2))
        for seed in range(1, args.seeds + 1):
            logits = torch.randn(args.tokens, args.experts,
                                 generator=torch.Generator().manual_seed(seed))  # fmt: skip
            ids = (logits + offsets).topk(args.top_k, -1).indices
            counts = torch.bincount(ids.flatten(), minlength=args.experts).tolist()
            busiest = busiest_over_mean(ids, args.experts)
            found = {rule: programs(counts, args.block_m, rule, args.tail)
                     for rule in ("aligned", "tail", "whole", "pairs")}  # fmt: skip
            print(f"skew {skew} seed {seed} busiest/mean {busiest:.2f} " +
                  " ".join(f"{rule} {n}" for rule, n in found.items()))  # fmt: skip


if __name__ == "__main__":
    main()
