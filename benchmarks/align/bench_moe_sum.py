"""Time ``moe_sum``'s Triton kernel over its launch shapes (GPU, CUDA graph), for tuning
``sum_launch``: columns per program and warps, on the ``[M, k, K]`` slot rows of the experts
shapes. Every launch's output must equal the torch path's bit for bit. With
``--programmatic`` the kernel launches as inside a ``TritonExperts`` call on Hopper.

The rows are replayed from a graph, so they stay in L2 where they fit. In an experts call they
have likely left L2 behind GEMM2's weight stream (NOTES lever 37), so confirm a launch shape
with ``benchmarks/experts/bench_call_variants.py --groups sum``. Writes JSON, with the
bytes over the measured copy rate beside.

    python benchmarks/align/bench_moe_sum.py --out benchmarks/results/align_moe_sum_h100.json
"""

from __future__ import annotations

import argparse
import itertools
import sys
from pathlib import Path
from unittest import mock

import torch
import triton

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from common import copy_bandwidth_gbps, environment, time_us, write_json

from moekit.align import moe_sum

SHAPES = {"k8-2048": (8, 2048), "k8-7168": (8, 7168), "k4-2880": (4, 2880), "k2-4096": (2, 4096)}


def main() -> None:
    import moekit.align._triton_impl.reduce as launcher

    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--tokens", nargs="+", type=int, default=[16, 64, 256, 1024])
    parser.add_argument("--shapes", nargs="+", default=list(SHAPES), choices=list(SHAPES))
    parser.add_argument("--block-h", nargs="+", type=int, default=[256, 512, 1024, 2048])
    parser.add_argument("--warps", nargs="+", type=int, default=[1, 2, 4, 8])
    parser.add_argument("--programmatic", action="store_true")
    args = parser.parse_args()

    bandwidth = copy_bandwidth_gbps()
    gen = torch.Generator(device="cuda").manual_seed(0)
    rows = []
    for shape, tokens in itertools.product(args.shapes, args.tokens):
        top_k, hidden = SHAPES[shape]
        rows_in = torch.randn(tokens, top_k, hidden, device="cuda", generator=gen)
        rows_in = rows_in.to(torch.bfloat16)
        want = moe_sum(rows_in, torch.empty(tokens, hidden, device="cuda", dtype=torch.bfloat16),
                       backend="torch")  # fmt: skip
        out = torch.empty_like(want)
        shipped = launcher.sum_launch(tokens, hidden)
        floor = 2 * (tokens * top_k * hidden + tokens * hidden) / (bandwidth * 1e3)
        for block_h, warps in itertools.product(args.block_h, args.warps):
            if block_h < 64 * warps or block_h > triton.next_power_of_2(hidden):
                continue  # under two columns a thread, or wider than the row
            with mock.patch.object(launcher, "sum_launch", lambda t, h, c=(block_h, warps): c):
                out.fill_(float("nan"))
                moe_sum(rows_in, out, backend="triton", programmatic_launch=args.programmatic)
                same = bool(torch.equal(out, want))
                us = time_us(lambda: moe_sum(rows_in, out, backend="triton",
                                             programmatic_launch=args.programmatic),
                             graph=True)[0]  # fmt: skip
            row = dict(shape=shape, tokens=tokens, block_h=block_h, num_warps=warps,
                       shipped=(block_h, warps) == shipped, graph_us=us, floor_us=floor,
                       equal=same, programmatic=args.programmatic)  # fmt: skip
            rows.append(row)
            print(f"{shape:8s} M={tokens:5d} block_h={block_h:5d} warps={warps} "
                  f"{us:6.2f} us (floor {floor:5.2f})" + (" shipped" if row["shipped"] else "")
                  + ("" if same else "  DIFFERS"), flush=True)  # fmt: skip
        write_json(args.out, dict(environment=environment(), copy_bandwidth_gbps=bandwidth,
                                  rows=rows))  # fmt: skip


if __name__ == "__main__":
    main()
