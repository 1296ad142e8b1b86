"""Whether rows stored with an L2 eviction policy stay in L2 behind a weight stream, and whether
they linger there once read (GPU; lever 41 of ``NOTES.md``).

For each policy and row size: a kernel stores the rows with the policy; optionally a plain read
of them follows (the next kernel of a call, which consumes them); then a plain read of a stream
buffer several times the L2 size (the weights); then the rows are read once more, timed with
CUDA events. A read at the L2 rate after the stream means the rows stayed in L2. If they stay
also after the consuming read and four streams, the policy outlives the call and takes L2 room
from whatever runs next. ``hot`` times a read straight after the store; ``cold`` one after the
stream with the default policy. Writes JSON.

    python benchmarks/experts/probe_row_eviction.py --out benchmarks/results/experts_row_eviction_probe_h100.json
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import torch
import triton
import triton.language as tl

_BLOCK = 4096


@triton.jit
def _store_rows(dst_ptr, numel, value, BLOCK: tl.constexpr, EVICTION: tl.constexpr):
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    rows = tl.full([BLOCK], value, tl.float32) + offs.to(tl.float32) * 1e-3
    tl.store(dst_ptr + offs, rows.to(dst_ptr.dtype.element_ty), mask=offs < numel,
             eviction_policy=EVICTION)  # fmt: skip


@triton.jit
def _read_rows(src_ptr, sums_ptr, numel, BLOCK: tl.constexpr):
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    rows = tl.load(src_ptr + offs, mask=offs < numel, other=0.0)
    tl.store(sums_ptr + tl.program_id(0), tl.sum(rows.to(tl.float32)))


def store(rows: torch.Tensor, policy: str) -> None:
    grid = (triton.cdiv(rows.numel(), _BLOCK),)
    _store_rows[grid](rows, rows.numel(), 1.0, BLOCK=_BLOCK, EVICTION=policy)


def read(rows: torch.Tensor, sums: torch.Tensor) -> None:
    grid = (triton.cdiv(rows.numel(), _BLOCK),)
    _read_rows[grid](rows, sums, rows.numel(), BLOCK=_BLOCK)


def timed_read(rows: torch.Tensor, sums: torch.Tensor) -> float:
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    read(rows, sums)
    end.record()
    end.synchronize()
    return 1e3 * start.elapsed_time(end)


def trial(rows, stream, busy, sums, policy: str, consumed: bool, streams: int) -> float:
    read(busy, sums)  # keeps the GPU busy while the next launches queue, so events time kernels
    store(rows, policy)
    if consumed:
        read(rows, sums)
    for _ in range(streams):
        read(stream, sums)
    return timed_read(rows, sums)


def main() -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from common import environment, write_json

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--row-mib", nargs="+", type=int, default=[4, 8, 16, 32])
    parser.add_argument("--stream-mib", nargs="+", type=int, default=[128, 256, 512, 1024])
    parser.add_argument("--trials", type=int, default=30)
    args = parser.parse_args()
    busy = torch.empty(256 << 19, dtype=torch.bfloat16, device="cuda")
    store(busy, "")
    largest = max(args.stream_mib) << 19
    sums = torch.empty(triton.cdiv(largest, _BLOCK), dtype=torch.float32, device="cuda")
    results = []
    for stream_mib in args.stream_mib:
        stream = torch.empty(stream_mib << 19, dtype=torch.bfloat16, device="cuda")
        store(stream, "")
        for mib in args.row_mib:
            rows = torch.empty(mib << 19, dtype=torch.bfloat16, device="cuda")
            cases = {  # name: (policy, consumed, streams)
                "hot": ("", False, 0),
                "cold": ("", False, 1),
                "evict_last": ("evict_last", False, 1),
                "evict_last_consumed": ("evict_last", True, 1),
                "evict_last_consumed_4_streams": ("evict_last", True, 4),
            }
            for case in cases.values():
                trial(rows, stream, busy, sums, *case)  # compiles and warms up
            row: dict[str, object] = dict(stream_mib=stream_mib, row_mib=mib)
            for name, case in cases.items():
                times = [trial(rows, stream, busy, sums, *case) for _ in range(args.trials)]
                row[f"{name}_us"] = statistics.median(times)
            print("  ".join(f"{k} {v:.2f}" if isinstance(v, float) else f"{k} {v}"
                            for k, v in row.items()), flush=True)  # fmt: skip
            results.append(row)
            del rows
        del stream
    write_json(args.out, dict(environment=environment(), trials=args.trials, rows=results))


if __name__ == "__main__":
    main()
