"""GEMM1's gate and up tiles as two products a K step, or as one box and one product (GPU).

``gate_up_gemm_kernel`` reads a K step's gate tile and up tile as two ``[BLOCK_N, BLOCK_K]``
boxes and issues two products of ``BLOCK_N`` columns. A 3-D descriptor over ``W13`` seen as
``[2E, I, K]`` reads both as one ``[2, BLOCK_N, BLOCK_K]`` box, which Triton views in shared memory
as ``[2 * BLOCK_N, BLOCK_K]`` (``memdesc_reshape``, no copy through registers), so one product of
``2 * BLOCK_N`` columns does the work of two: the A tile leaves shared memory once instead of
twice, and an MMA of 256 columns is the widest Hopper has. The accumulator is split into its gate
and up halves once per tile, in the epilogue.

This probe times both forms at the H100 table's GEMM1 tiles, in turn, on one dense expert
(prefill-sized and decode-sized rows) and on whole 4096-token calls whose experts each hold a
whole number of tiles: no gather and no padding rows, the tile's MMAs and weight stream alone.
It checks that the two forms give the same bits and prints their largest error against float32
products. Writes JSON; also records whether the compiled loop kept the reshape in shared memory.

    python benchmarks/experts/probe_gate_up_box.py --out gate_up_box.json
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
import triton
import triton.language as tl
import triton.testing
from triton.tools.tensor_descriptor import TensorDescriptor

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_fused_moe import measured_ceilings
from common import environment, write_json

# (experts E, rows per expert M, hidden K, intermediate I): one expert's prefill tiles of
# Mixtral TP2 and Qwen3, decode-sized rows, and whole 4096-token calls with every expert's rows
# a whole number of tiles (the mean count of random routing)
SHAPES = {
    "mixtral-tp2-prefill": (1, 4096, 4096, 7168),
    "qwen3-prefill": (1, 2048, 2048, 768),
    "mixtral-rows-64": (1, 64, 4096, 14336),
    "mixtral-rows-256": (1, 256, 4096, 14336),
    "qwen3-rows-64": (1, 64, 2048, 768 * 16),
    "mixtral-tp2-4096": (8, 1024, 4096, 7168),
    "qwen3-4096": (128, 256, 2048, 768),
    "deepseek-v3-tp4-4096": (256, 128, 7168, 512),
}
# (BLOCK_M, activation columns, BLOCK_K, warps, stages): the H100 table's GEMM1 tiles
TILES = ((128, 128, 64, 8, 4), (128, 128, 64, 8, 3), (64, 64, 64, 4, 3), (64, 64, 128, 4, 4),
         (32, 64, 128, 4, 4))  # fmt: skip


@triton.jit
def tile_start(expert_m_tiles, num_n_tiles):
    """(m tile, n tile, the expert's first W13 row): each expert's m-tiles walk one column of
    n-tiles after another, so that they share each weight tile in L2."""
    pid = tl.program_id(0)
    per_expert = expert_m_tiles * num_n_tiles
    expert = pid // per_expert
    local = pid % per_expert
    pid_m = expert * expert_m_tiles + local % expert_m_tiles
    return pid_m, local // expert_m_tiles, expert


@triton.jit
def store_silu_mul(gate, up, c_ptr, pid_m, pid_n, I, BM: tl.constexpr, BN: tl.constexpr):
    out = gate * tl.sigmoid(gate) * up
    rows = pid_m * BM + tl.arange(0, BM)
    cols = pid_n * BN + tl.arange(0, BN)
    tl.store(c_ptr + rows[:, None].to(tl.int64) * I + cols[None, :], out.to(tl.bfloat16))


@triton.jit
def two_products_kernel(a_desc, w_desc, c_ptr, K, I, expert_m_tiles,
                        BM: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr):  # fmt: skip
    pid_m, pid_n, expert = tile_start(expert_m_tiles, I // BN)
    gate_row = expert * 2 * I + pid_n * BN
    gate = tl.zeros([BM, BN], tl.float32)
    up = tl.zeros([BM, BN], tl.float32)
    for k in range(0, K, BK):
        a = a_desc.load([pid_m * BM, k])
        gate = tl.dot(a, w_desc.load([gate_row, k]).T, gate)
        up = tl.dot(a, w_desc.load([gate_row + I, k]).T, up)
    store_silu_mul(gate, up, c_ptr, pid_m, pid_n, I, BM, BN)


@triton.jit
def one_box_kernel(a_desc, w3_desc, c_ptr, K, I, expert_m_tiles,
                   BM: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr):  # fmt: skip
    pid_m, pid_n, expert = tile_start(expert_m_tiles, I // BN)
    acc = tl.zeros([BM, 2 * BN], tl.float32)
    for k in range(0, K, BK):
        a = a_desc.load([pid_m * BM, k])
        both = w3_desc.load([2 * expert, pid_n * BN, k]).reshape(2 * BN, BK)
        acc = tl.dot(a, both.T, acc)
    gate, up = acc.reshape(BM, 2, BN).permute(0, 2, 1).split()
    store_silu_mul(gate, up, c_ptr, pid_m, pid_n, I, BM, BN)


def loop_facts(compiled) -> dict:
    ttgir = compiled.asm.get("ttgir", "")
    return {
        "memdesc_reshape": "memdesc_reshape" in ttgir,
        "local_load": ttgir.count("ttg.local_load"),
        "registers": getattr(compiled, "n_regs", None),
        "spills": getattr(compiled, "n_spills", None),
        "shared_bytes": compiled.metadata.shared,
    }


def expected(a: torch.Tensor, w13: torch.Tensor) -> torch.Tensor:
    """silu(gate) * up of every expert's rows, in float32."""
    experts, n, _ = w13.shape
    out = []
    for rows, w in zip(a.float().chunk(experts), w13.float(), strict=True):
        out.append(torch.nn.functional.silu(rows @ w[: n // 2].T) * (rows @ w[n // 2 :].T))
    return torch.cat(out)


def probe(shape: str, tile: tuple[int, ...], rounds: int, tflops: float, gbps: float) -> dict:
    experts, expert_rows, hidden, inter = SHAPES[shape]
    rows = experts * expert_rows
    bm, bn, bk, warps, stages = tile
    gen = torch.Generator(device="cuda").manual_seed(sum(map(ord, shape)) + sum(tile))
    a = torch.randn(rows, hidden, device="cuda", dtype=torch.bfloat16, generator=gen)
    w13 = torch.randn(experts, 2 * inter, hidden, device="cuda", dtype=torch.bfloat16,
                      generator=gen)  # fmt: skip
    w13 /= hidden**0.5
    a_desc = TensorDescriptor.from_tensor(a, [bm, bk])
    w_desc = TensorDescriptor.from_tensor(w13.view(-1, hidden), [bn, bk])
    w3_desc = TensorDescriptor.from_tensor(w13.view(2 * experts, inter, hidden), [2, bn, bk])
    outs = {name: torch.full((rows, inter), float("nan"), device="cuda", dtype=torch.bfloat16)
            for name in ("two_products", "one_box")}  # fmt: skip
    grid = (rows // bm * (inter // bn),)
    opts = {"BM": bm, "BN": bn, "BK": bk, "num_warps": warps, "num_stages": stages}
    calls = {
        "two_products": lambda: two_products_kernel[grid](
            a_desc, w_desc, outs["two_products"], hidden, inter, expert_rows // bm,
            **opts),
        "one_box": lambda: one_box_kernel[grid](
            a_desc, w3_desc, outs["one_box"], hidden, inter, expert_rows // bm,
            **opts),
    }  # fmt: skip
    row: dict = {"shape": shape, "experts": experts, "rows": rows, "K": hidden, "I": inter,
                 "BLOCK_M": bm, "BLOCK_N1": bn, "BLOCK_K": bk, "num_warps": warps,
                 "num_stages": stages}  # fmt: skip
    try:
        facts = {name: loop_facts(call()) for name, call in calls.items()}
    except Exception as error:  # a tile that does not fit is a finding
        row["error"] = f"{type(error).__name__}: {str(error)[:300]}"
        return row
    torch.cuda.synchronize()
    want = expected(a, w13)
    row["compiled"] = facts
    row["bit_identical"] = bool(torch.equal(outs["two_products"], outs["one_box"]))
    row["max_error"] = {name: float((out.float() - want).abs().max()) for name, out in outs.items()}
    times: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(rounds):
        for name, call in calls.items():
            times[name].append(1e3 * triton.testing.do_bench(call, warmup=25, rep=100,
                                                              return_mode="median"))  # fmt: skip
    row["us"] = times
    flops = 2 * rows * hidden * 2 * inter
    weight_bytes = w13.numel() * 2
    row["tflops"] = {name: flops / (min(t) * 1e-6) / 1e12 for name, t in times.items()}
    row["floor_us"] = max(flops / (tflops * 1e12), weight_bytes / (gbps * 1e9)) * 1e6
    best = {name: min(t) for name, t in times.items()}
    row["one_box_change"] = best["one_box"] / best["two_products"] - 1
    print(f"{shape:22s} {tile} two {best['two_products']:8.1f} one {best['one_box']:8.1f} "
          f"({100 * row['one_box_change']:+.1f}%) floor {row['floor_us']:.1f} "
          f"same bits {row['bit_identical']} max error {max(row['max_error'].values()):.2e} "
          f"reshape in smem {facts['one_box']['memdesc_reshape']}", flush=True)  # fmt: skip
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--shapes", nargs="+", default=list(SHAPES), choices=list(SHAPES))
    args = parser.parse_args()
    gbps, tflops = measured_ceilings()
    rows = [
        probe(shape, tile, args.rounds, tflops, gbps)
        for shape in args.shapes
        for tile in TILES
        if SHAPES[shape][1] % tile[0] == 0 and SHAPES[shape][3] % tile[1] == 0
    ]
    write_json(args.out, {"environment": environment(), "bandwidth_gbps": gbps,
                          "matmul_tflops": tflops, "rows": rows})  # fmt: skip


if __name__ == "__main__":
    main()
