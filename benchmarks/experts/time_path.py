"""Time the shipped Triton experts path alone, for comparing two source trees (GPU, bf16).

For each model shape and token count: the CUDA-graph median of ``fused_experts`` (the inputs of
``bench_fused_moe.py``), the floor, and a SHA-256 of the output's bytes, so that two runs (for
example with ``PYTHONPATH`` on two checkouts, alternated on one machine) can be checked to give
the same bits before their times are compared. No oracle and no ``TorchExperts``: for the whole
table use ``bench_fused_moe.py``. Writes JSON.

    python benchmarks/experts/time_path.py --tokens 1 16 64 256 1024 --out a.json
"""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path

import torch


def main() -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from bench_fused_moe import (
        TOKENS,
        cell_parser,
        measured_ceilings,
        routed_calls,
    )
    from common import environment, time_us, write_json

    args = cell_parser(__doc__.splitlines()[0], TOKENS).parse_args()
    bandwidth, tflops = measured_ceilings()
    rows = []
    for call in routed_calls(args.shapes, args.tokens):
        out = call()
        digest = hashlib.sha256(out.contiguous().view(torch.int16).cpu().numpy().tobytes())
        row = {
            "shape": call.shape,
            "tokens": call.tokens,
            "floor_us": call.floor_us(bandwidth, tflops),
            "graph_us": time_us(call, graph=True)[0],
            "output_sha256": digest.hexdigest(),
        }
        rows.append(row)
        print(f"{call.shape:18s} {call.tokens:5d}  {row['graph_us']:9.1f} us  "
              f"{row['graph_us'] / row['floor_us']:.3f}x floor", flush=True)  # fmt: skip
    write_json(args.out, {"environment": environment(), "bandwidth_gbps": bandwidth,
                          "matmul_tflops": tflops, "rows": rows})  # fmt: skip


if __name__ == "__main__":
    main()
