"""Run each cell's shipped Triton path once inside a profiler range, for Nsight Compute (GPU).

Every call is first run twice outside the range, so that compilation and autotuning stay out of
the profile; then each cell's call runs once between ``cudaProfilerStart`` and
``cudaProfilerStop``, in the order printed. Run it under ``ncu --profile-from-start off``:

    ncu --profile-from-start off --clock-control none --section SpeedOfLight --csv \\
        --page details python benchmarks/experts/ncu_call.py --shapes qwen3-30b-a3b \\
        --tokens 256 --out cells.json > ncu.csv

Writes the cells' order (shape, tokens, active experts) as JSON, to read the CSV's kernels by.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch


def main() -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from bench_fused_moe import TOKENS, cell_parser, routed_calls
    from common import environment, write_json

    args = cell_parser(__doc__.splitlines()[0], TOKENS).parse_args()
    calls = list(routed_calls(args.shapes, args.tokens))
    for call in calls:
        call()
        call()
    torch.cuda.synchronize()
    cells = []
    for call in calls:
        torch.cuda.profiler.start()
        call()
        torch.cuda.synchronize()
        torch.cuda.profiler.stop()
        cells.append({"shape": call.shape, "tokens": call.tokens,
                      "active_experts": int(call.ids.unique().numel())})  # fmt: skip
        print(f"profiled {call.shape} {call.tokens}", file=sys.stderr, flush=True)
    write_json(args.out, {"environment": environment(), "cells": cells})


if __name__ == "__main__":
    main()
