"""Whether the weights' memory order holds the decode GEMMs above their floor (GPU).

At 256 tokens each GEMM streams its weights 4–8% slower than the copy rate (NOTES, levers 34
and 46): not the tile shape, L2, or the programs a multiprocessor holds. One thing left is the
order in which the tiles touch HBM. A TMA box of ``[BLOCK_N, BLOCK_K]`` over the weights as
stored, ``[E * N, K]`` row-major, is ``BLOCK_N`` runs of ``2 * BLOCK_K`` bytes, one per weight
row, ``2 * K`` bytes apart; every program walks its own rows, so HBM sees many short runs at
once. Stored in tile order instead (``[E, N / BLOCK_N, K / BLOCK_K, BLOCK_N, BLOCK_K]``), each box
is one contiguous run.

This script streams the same weights both ways through a kernel shaped like the GEMMs'
(one program per expert and column block, a K loop of TMA boxes into ``tl.dot`` with
``BLOCK_M`` rows of A from L2; ``pairs``: a gate and an up box per step, as GEMM1's), checks
each result against torch, and times them in turn: weight bytes over time, beside a plain
contiguous read of the same buffer (``read_rate.read_kernel``) and the copy rate. Writes JSON.

    python benchmarks/experts/weight_layout.py --out benchmarks/results/experts_weight_layout_h100.json
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
import triton
import triton.language as tl
import triton.testing

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import copy_bandwidth_gbps, environment, write_json
from read_rate import BLOCK as READ_BLOCK
from read_rate import read_kernel
from triton.tools.tensor_descriptor import TensorDescriptor

# (name, experts, weight rows N, K, pairs): the GEMMs of the 256-token cells that miss 1.05x,
# and DeepSeek-V3's, which meet it, as a control
GEMMS = (
    ("mixtral-tp2 gemm1", 8, 14336, 4096, True),
    ("mixtral-tp2 gemm2", 8, 4096, 7168, False),
    ("mixtral gemm1", 8, 28672, 4096, True),
    ("mixtral gemm2", 8, 4096, 14336, False),
    ("qwen3-30b-a3b-tp2 gemm1", 128, 768, 2048, True),
    ("qwen3-30b-a3b-tp2 gemm2", 128, 2048, 384, False),
    ("deepseek-v3 gemm1", 64, 4096, 7168, True),
    ("deepseek-v3 gemm2", 64, 7168, 2048, False),
)
BLOCK_M = 64
# Boxes of 64 rows for GEMM1 (a gate and an up box: the entries' 128 weight rows a tile), 128 for
# GEMM2. (BLOCK_K, stages, layout): the entries' K steps and stages first, then each in tile
# order, with twice the stages where the step is halved (the same bytes in flight); "stagger"
# reads the weights as stored with each program's K loop starting at its own step.
GEMM1_BOX_ROWS = 64
GEMM2_BOX_ROWS = 128
GEMM1_VARIANTS = ((128, 4, "rows"), (128, 4, "tiled"), (128, 4, "stagger"), (64, 4, "rows"),
                  (64, 8, "tiled"), (64, 4, "stagger"))  # fmt: skip
GEMM2_VARIANTS = ((64, 3, "rows"), (64, 3, "tiled"), (64, 3, "stagger"), (64, 6, "tiled"),
                  (128, 3, "rows"), (128, 3, "tiled"), (128, 3, "stagger"))  # fmt: skip


@triton.jit
def stream_kernel(a_ptr, w_desc, out_ptr, K, rows_per_expert, column_tiles, HALF_ROWS,
                  TILED: tl.constexpr, PAIRS: tl.constexpr, BLOCK_M: tl.constexpr,
                  BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
                  STAGGER: tl.constexpr = False):  # fmt: skip
    """Program ``(expert, column tile)``: ``A [BLOCK_M, K] @ W[expert, tile rows].T`` over K, with
    ``PAIRS`` plus the same with the rows ``HALF_ROWS`` further; stores the column sums. With
    ``STAGGER`` program ``p`` starts its K loop at step ``p % k_steps`` and wraps around, so
    that programs running side by side read different columns of their rows at each moment."""
    pid = tl.program_id(0)
    expert = pid // column_tiles
    tile = pid % column_tiles
    offs_m = tl.arange(0, BLOCK_M)
    offs_k = tl.arange(0, BLOCK_K)
    acc = tl.zeros([BLOCK_M, BLOCK_N], dtype=tl.float32)
    k_steps = K // BLOCK_K
    tiles_per_expert = rows_per_expert // BLOCK_N
    for i in range(0, k_steps):
        step = (i + pid) % k_steps if STAGGER else i
        a = tl.load(a_ptr + offs_m[:, None] * K + step * BLOCK_K + offs_k[None, :])
        if TILED:
            box = (expert * tiles_per_expert + tile) * k_steps + step
            b = w_desc.load([box * BLOCK_N, 0])
        else:
            b = w_desc.load([expert * rows_per_expert + tile * BLOCK_N, step * BLOCK_K])
        acc = tl.dot(a, b.T, acc)
        if PAIRS:
            if TILED:
                up_box = box + (HALF_ROWS // BLOCK_N) * k_steps
                up = w_desc.load([up_box * BLOCK_N, 0])
            else:
                up_row = expert * rows_per_expert + HALF_ROWS + tile * BLOCK_N
                up = w_desc.load([up_row, step * BLOCK_K])
            acc = tl.dot(a, up.T, acc)
    tl.store(out_ptr + pid * BLOCK_N + tl.arange(0, BLOCK_N), tl.sum(acc, axis=0))


def tile_order(weights: torch.Tensor, box_rows: int, block_k: int) -> torch.Tensor:
    """``weights [E, N, K]`` as ``[E * N / box_rows * K / block_k * box_rows, block_k]``: box
    ``(e, n, k)`` is ``box_rows`` consecutive rows."""
    e, n, k = weights.shape
    tiled = weights.view(e, n // box_rows, box_rows, k // block_k, block_k).permute(0, 1, 3, 2, 4)
    return tiled.contiguous().view(-1, block_k)


def expected_sums(a: torch.Tensor, weights: torch.Tensor, pairs: bool) -> torch.Tensor:
    """What each program stores: column sums of ``A @ W[e].T``, gate plus up with ``pairs``."""
    sums = torch.stack([(a.float() @ w.float().T).sum(0) for w in weights])  # [E, N]
    if pairs:
        half = weights.shape[1] // 2
        sums = sums[:, :half] + sums[:, half:]
    return sums.reshape(-1)


def measure_gemm(name: str, experts: int, n: int, k: int, pairs: bool, rounds: int,
                 copy_gbps: float) -> list[dict]:  # fmt: skip
    gen = torch.Generator(device="cuda").manual_seed(0)
    weights = torch.randn(experts, n, k, device="cuda", dtype=torch.bfloat16, generator=gen)
    a = torch.randn(BLOCK_M, k, device="cuda", dtype=torch.bfloat16, generator=gen) / k**0.5
    want = expected_sums(a, weights, pairs)
    box_rows = GEMM1_BOX_ROWS if pairs else GEMM2_BOX_ROWS
    column_tiles = (n // 2 if pairs else n) // box_rows
    programs = experts * column_tiles
    out = torch.empty(programs * box_rows, device="cuda", dtype=torch.float32)
    calls = {}
    for block_k, stages, layout in GEMM1_VARIANTS if pairs else GEMM2_VARIANTS:
        if k % block_k:
            continue
        tiled = layout == "tiled"
        matrix = tile_order(weights, box_rows, block_k) if tiled else weights.view(-1, k)
        desc = TensorDescriptor.from_tensor(matrix, [box_rows, block_k])

        def call(desc=desc, block_k=block_k, stages=stages, tiled=tiled,
                 stagger=layout == "stagger") -> None:  # fmt: skip
            stream_kernel[(programs,)](a, desc, out, k, n, column_tiles, n // 2, TILED=tiled,
                                       PAIRS=pairs, BLOCK_M=BLOCK_M, BLOCK_N=box_rows,
                                       BLOCK_K=block_k, STAGGER=stagger, num_warps=4,
                                       num_stages=stages)  # fmt: skip

        out.fill_(float("nan"))
        call()
        err = ((out - want).abs().max() / want.abs().max()).item()
        if not err < 1e-2:
            raise AssertionError(f"{name} k{block_k} s{stages} {layout}: error {err}")
        calls[f"{layout}_k{block_k}_s{stages}"] = (call, matrix)
    flat = weights.view(-1)
    read_out = torch.empty(4 * 132 * READ_BLOCK, device="cuda", dtype=torch.float32)

    def contiguous_read() -> None:
        read_kernel[(4 * 132,)](flat, read_out, flat.numel() // READ_BLOCK, 1, BLOCK=READ_BLOCK,
                                num_warps=8)  # fmt: skip

    calls["contiguous_read"] = (contiguous_read, None)
    rows = []
    for rnd in range(rounds):
        for variant, (call, _) in calls.items():
            ms = triton.testing.do_bench(call, warmup=25, rep=200, return_mode="median")
            rows.append(dict(gemm=name, variant=variant, round=rnd, us=1e3 * ms,
                             weight_gbps=weights.nbytes / ms / 1e6,
                             copy_rate_us=weights.nbytes / copy_gbps / 1e3))  # fmt: skip
            print(rows[-1], flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--gemms", nargs="+", default=None, help="names from GEMMS (default all)")
    args = parser.parse_args()
    copy_gbps = copy_bandwidth_gbps()
    rows = []
    for name, experts, n, k, pairs in GEMMS:
        if args.gemms is None or name in args.gemms:
            rows += measure_gemm(name, experts, n, k, pairs, args.rounds, copy_gbps)
            torch.cuda.empty_cache()
    write_json(args.out, dict(environment=environment(), copy_gbps=copy_gbps, rows=rows))


if __name__ == "__main__":
    main()
