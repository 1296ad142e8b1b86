"""GPU timing of the EPLB routing hook: map_to_physical_and_record, Triton vs the torch path.

DeepSeek-V3 layout (256 logical experts, 288 replicas, top-8), with load recording, inside a
CUDA graph (the hook runs once per layer per step, where launch overhead would hide it). The
floor is the bytes moved (ids in and out, the map rows read) over the measured copy bandwidth.

    python benchmarks/eplb/bench_hook.py --out benchmarks/results/eplb_hook_h100.json
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from common import copy_bandwidth_gbps, environment, time_us, write_json

from moekit.eplb import DefaultEplbPolicy, map_to_physical_and_record

TOKENS = (1, 16, 256, 1024, 4096, 16384)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    bandwidth = copy_bandwidth_gbps()
    rng = np.random.default_rng(0)
    weight = rng.zipf(1.3, (1, 256)).astype(np.float32)
    _, l2p, count = DefaultEplbPolicy.rebalance_experts(torch.from_numpy(weight), 288, 8, 4, 32)
    l2p, count = l2p[0].cuda(), count[0].cuda()
    rows = []
    for tokens in TOKENS:
        ids = torch.randint(0, 256, (tokens, 8), device="cuda", dtype=torch.int32)
        row = {"tokens": tokens, "top_k": 8}
        outputs = {}
        for backend in ("triton", "torch"):
            load = torch.zeros(288, dtype=torch.int64, device="cuda")
            outputs[backend] = (map_to_physical_and_record(ids, l2p, count, load, backend=backend),
                                load.clone())  # fmt: skip
            row[f"{backend}_graph_us"] = time_us(
                lambda b=backend, load=load: map_to_physical_and_record(ids, l2p, count, load,
                                                                         backend=b),
                graph=True,
            )[0]  # fmt: skip
        row["equal"] = bool(torch.equal(outputs["triton"][0], outputs["torch"][0])
                            and torch.equal(outputs["triton"][1], outputs["torch"][1]))  # fmt: skip
        moved = ids.numel() * 4 * 2 + ids.numel() * 8  # ids in/out + one map entry per slot
        row["floor_us"] = moved / (bandwidth * 1e3)
        rows.append(row)
        print(f"M={tokens:6d}: triton {row['triton_graph_us']:6.1f} us  torch "
              f"{row['torch_graph_us']:6.1f} us  floor {row['floor_us']:.2f} us  "
              f"equal {row['equal']}", flush=True)  # fmt: skip
    write_json(args.out, dict(environment=environment(), bandwidth_gbps=bandwidth, rows=rows))


if __name__ == "__main__":
    main()
