"""How fast the SMs can read a buffer that stays in L2, against one that streams from HBM (GPU).

A GEMM tile reads its weights once from HBM, but its rows of hidden states (GEMM1) or of
activated rows (GEMM2) come from L2 for every column block of the tile grid. Where those bytes
are about half the weight bytes (64-row tiles over 128 weight rows), the tiles pull half as much
again through L2 as through HBM. This script gives that ceiling: a read-only kernel sums a bf16
buffer of each size, every program taking blocks in turn, ``passes`` times over (each pass
offset, and loads that skip L1, so that the bytes come from L2 or HBM). Rate = bytes read / time
(median of ``do_bench``). Writes JSON.

    python benchmarks/experts/read_rate.py --out benchmarks/results/read_rate_h100.json
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
from common import environment, write_json

BLOCK = 4096  # bf16 elements a program reads per load: 8 KB
SIZES_MB = (4, 8, 16, 24, 32, 40, 48, 64, 256, 1024)
BYTES_PER_CALL = 1 << 30  # L2-sized buffers are read this many bytes per timed call


@triton.jit
def read_kernel(x_ptr, out_ptr, num_blocks, passes, BLOCK: tl.constexpr):
    """Each program sums its blocks of ``x`` (``num_blocks`` of ``BLOCK``) ``passes`` times into
    its ``BLOCK`` float32 entries of ``out``, so that no load is dead code."""
    pid = tl.program_id(0)
    programs = tl.num_programs(0)
    offs = tl.arange(0, BLOCK)
    acc = tl.zeros([BLOCK], tl.float32)
    for p in range(passes):
        # each pass shifts which program reads which block, so that no block is read twice by
        # one multiprocessor in a row
        for b in range(pid, num_blocks, programs):
            block = (b + p * 97) % num_blocks
            acc += tl.load(x_ptr + block * BLOCK + offs, cache_modifier=".cg").to(tl.float32)
    tl.store(out_ptr + pid * BLOCK + offs, acc)


def read_rate_gbps(size_mb: int, programs: int) -> dict:
    """The read rate of a ``size_mb`` buffer over ``programs`` programs."""
    x = torch.randn(size_mb * (1 << 20) // 2, device="cuda", dtype=torch.bfloat16)
    num_blocks = x.numel() // BLOCK
    passes = max(1, BYTES_PER_CALL // x.nbytes)
    out = torch.empty(programs * BLOCK, device="cuda", dtype=torch.float32)

    def call() -> None:
        read_kernel[(programs,)](x, out, num_blocks, passes, BLOCK=BLOCK, num_warps=8)

    call()
    ms = triton.testing.do_bench(call, warmup=50, rep=300, return_mode="median")
    read = passes * num_blocks * BLOCK * 2
    return dict(size_mb=size_mb, passes=passes, programs=programs, ms=ms, gbps=read / ms / 1e6)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--programs-per-sm", type=int, nargs="+", default=[2, 4])
    args = parser.parse_args()
    sms = torch.cuda.get_device_properties(0).multi_processor_count
    rows = []
    for per_sm in args.programs_per_sm:
        for size_mb in SIZES_MB:
            rows.append(read_rate_gbps(size_mb, per_sm * sms))
            print(rows[-1], flush=True)
    write_json(args.out, dict(environment=environment(), rows=rows))


if __name__ == "__main__":
    main()
