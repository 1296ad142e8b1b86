"""How much the floor's bf16 matmul rate varies on one GPU: the 100 ms burst against the rate
timed like the cells (``bench_fused_moe.matmul_tflops``, with and without ``graph``), measured
in pairs after idle pauses of the given lengths. Writes JSON.

    python benchmarks/experts/matmul_rates.py --out rates.json --pauses 0 0 0 5 5 5 15
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path


def main() -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from bench_fused_moe import matmul_tflops
    from common import environment, write_json

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--pauses", nargs="+", type=float, default=[0, 0, 0, 5, 5, 5, 15],
                        help="seconds idle before each pair")  # fmt: skip
    args = parser.parse_args()
    runs = []
    for pause in args.pauses:
        time.sleep(pause)
        burst, graph = matmul_tflops(), matmul_tflops(graph=True)
        runs.append(dict(pause_s=pause, burst_tflops=burst, graph_tflops=graph))
        print(f"after {pause:4.1f} s idle: burst {burst:.0f}, timed like the cells {graph:.0f} "
              "TFLOP/s", flush=True)  # fmt: skip
    write_json(args.out, dict(environment=environment(), runs=runs))


if __name__ == "__main__":
    main()
