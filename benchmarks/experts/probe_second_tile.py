"""What an expert's second, mostly empty m-tile costs (GPU, bf16, CUDA graph).

Each cell runs its shipped entry on random routing (``make_routed_tokens``, seed 1) and on
routing that gives every expert exactly ``M·k/E`` slots, a multiple of the entry's ``BLOCK_M``,
so no expert has a second, mostly empty tile. GEMM1 and GEMM2 alone (as in ``ablate.py``) and
the whole path, each routing twice in turn. The floor is the same for both (every expert active).

    python benchmarks/experts/probe_second_tile.py --out second_tile.json
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
import ablate
from bench_fused_moe import SHAPES, floor_us, make_routed_tokens, make_weights, measured_ceilings
from common import environment, write_json

from moekit.experts import fused_experts
from moekit.experts._triton_impl.configs import get_config

CELLS = [("mixtral", 256), ("mixtral-tp2", 256), ("qwen3-30b-a3b", 1024),
         ("qwen3-30b-a3b-tp2", 1024), ("gpt-oss-120b", 4096), ("deepseek-v3-tp4", 4096),
         ("deepseek-v3", 4096)]  # fmt: skip


def balanced_ids(tokens: int, num_experts: int, top_k: int) -> torch.Tensor:
    """Token ``t`` takes experts ``t·k .. t·k + k - 1`` (mod E): distinct, each expert equally."""
    slots = torch.arange(tokens, device="cuda")[:, None] * top_k + torch.arange(
        top_k, device="cuda"
    )
    return (slots % num_experts).int()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    bandwidth, tflops = measured_ceilings()
    rows = []
    for name, tokens in CELLS:
        num_experts, top_k, hidden, inter, activation = SHAPES[name]
        w1, w2, b1, b2 = make_weights(num_experts, top_k, hidden, inter, activation)
        gen = torch.Generator(device="cuda").manual_seed(1)
        x, weights, random_ids = make_routed_tokens(tokens, num_experts, top_k, hidden, gen)
        config = get_config(tokens, top_k, num_experts, 2 * inter, x.dtype, x.device, False)
        routings = {"random": random_ids, "balanced": balanced_ids(tokens, num_experts, top_k)}
        for routing, ids in [*routings.items()] * 2:
            counts = torch.bincount(ids.flatten().long(), minlength=num_experts)
            parts, _ = ablate.steps(x, w1, w2, b1, b2, weights, ids, activation)

            def path(ids=ids):
                return fused_experts(x, w1, w2, weights, ids, activation=activation,
                                     w1_bias=b1, w2_bias=b2, check_ids=False)  # fmt: skip

            rows.append(dict(
                shape=name, tokens=tokens, routing=routing, block_m=config.BLOCK_M,
                m_tiles=int(((counts + config.BLOCK_M - 1) // config.BLOCK_M).sum()),
                floor_us=floor_us(ids, top_k, hidden, inter, bandwidth, tflops),
                gemm1_us=ablate.graph_us(parts["gemm1"]), gemm2_us=ablate.graph_us(parts["gemm2"]),
                path_us=ablate.graph_us(path),
            ))  # fmt: skip
            print(rows[-1], flush=True)
        write_json(args.out, dict(environment=environment(), bandwidth_gbps=bandwidth,
                                  matmul_tflops=tflops, rows=rows))  # fmt: skip
        torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
