"""First check-and-time of moekit's fused experts on a GPU (bf16): Triton vs TorchExperts.

For each model shape of the spec and a range of token counts: the Triton result is compared
with a float32 computation on the same bf16 inputs (max error relative to the output's scale),
then both backends are timed (median of do_bench; the Triton path also inside a CUDA graph;
TorchExperts syncs once per call, so it is timed eagerly). Each time is reported beside its
floor: max(bytes of the active experts' weights / copy bandwidth, FLOPs / bf16 matmul rate).

    python benchmarks/experts/bench_fused_moe.py --out benchmarks/results/experts_h100.json
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
import triton.testing

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from common import copy_bandwidth_gbps, environment, time_us, write_json

from moekit.experts import fused_experts

SHAPES = {  # name: (E, top_k, K, I, activation)
    "mixtral": (8, 2, 4096, 14336, "silu"),
    "qwen3-30b-a3b": (128, 8, 2048, 768, "silu"),
    "deepseek-v3": (256, 8, 7168, 2048, "silu"),
    "gpt-oss-120b": (128, 4, 2880, 2880, "swigluoai"),
}
TOKENS = (1, 16, 64, 256, 1024, 4096)


def matmul_tflops() -> float:
    a = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
    ms = triton.testing.do_bench(lambda: a @ a, warmup=25, rep=100, return_mode="median")
    return 2 * 8192**3 / (ms * 1e-3) / 1e12


def oracle(x, w1, w2, weights, ids, activation, b1, b2):
    """float32 per-expert loop on the bf16 inputs."""
    from moekit.experts import apply_activation

    out = torch.zeros(x.shape[0], w2.shape[1], device=x.device, dtype=torch.float32)
    flat_ids = ids.reshape(-1)
    for expert in flat_ids.unique().tolist():
        slots = (flat_ids == expert).nonzero().squeeze(1)
        tokens = slots // ids.shape[1]
        h = x[tokens].float() @ w1[expert].float().T + b1[expert].float()
        y = apply_activation(h, activation) @ w2[expert].float().T + b2[expert].float()
        out.index_add_(0, tokens, y * weights.reshape(-1)[slots, None])
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--shapes", nargs="+", default=list(SHAPES))
    parser.add_argument("--tokens", nargs="+", type=int, default=list(TOKENS))
    args = parser.parse_args()
    bandwidth, tflops = copy_bandwidth_gbps(), matmul_tflops()
    print(f"copy {bandwidth:.0f} GB/s, bf16 matmul {tflops:.0f} TFLOP/s", flush=True)
    rows = []
    for name in args.shapes:
        num_experts, top_k, hidden, inter, activation = SHAPES[name]
        n = 2 * inter
        gen = torch.Generator(device="cuda").manual_seed(0)
        w1 = torch.randn(num_experts, n, hidden, device="cuda", generator=gen,
                         dtype=torch.bfloat16) / 10  # fmt: skip
        w2 = torch.randn(num_experts, hidden, inter, device="cuda", generator=gen,
                         dtype=torch.bfloat16) / 10  # fmt: skip
        has_bias = activation == "swigluoai"
        b1 = (
            torch.randn(num_experts, n, device="cuda", dtype=torch.bfloat16) / 10
            if has_bias
            else None
        )
        b2 = (
            torch.randn(num_experts, hidden, device="cuda", dtype=torch.bfloat16) / 10
            if has_bias
            else None
        )
        for tokens in args.tokens:
            x = torch.randn(tokens, hidden, device="cuda", generator=gen, dtype=torch.bfloat16)
            logits = torch.randn(tokens, num_experts, device="cuda", generator=gen)
            weights, ids = torch.softmax(logits, -1).topk(top_k, -1)
            ids = ids.int()

            def call(backend, x=x, weights=weights, ids=ids):
                return fused_experts(x, w1, w2, weights, ids, activation=activation,
                                     w1_bias=b1, w2_bias=b2, backend=backend, check_ids=False)  # fmt: skip

            got = call("triton").float()
            zeros1 = b1 if b1 is not None else torch.zeros(num_experts, n, device="cuda")
            zeros2 = b2 if b2 is not None else torch.zeros(num_experts, hidden, device="cuda")
            want = oracle(x, w1, w2, weights, ids, activation, zeros1, zeros2)
            scale = want.abs().max().item()
            error = (got - want).abs().max().item() / max(scale, 1e-6)
            torch_error = (call("torch").float() - want).abs().max().item() / max(scale, 1e-6)
            active = ids.unique().numel()
            weight_bytes = active * (n * hidden + hidden * inter) * 2
            flops = 2 * tokens * top_k * hidden * (n + inter)
            floor_us = max(weight_bytes / (bandwidth * 1e3), flops / (tflops * 1e6))
            row = dict(shape=name, tokens=tokens, E=num_experts, top_k=top_k, K=hidden, I=inter,
                       rel_error_triton=error, rel_error_torch=torch_error, floor_us=floor_us,
                       triton_eager_us=time_us(lambda: call("triton"), graph=False)[0],
                       torch_eager_us=time_us(lambda: call("torch"), graph=False)[0])  # fmt: skip
            # In a graph at every M: eager medians at M >= 1024 drift by up to 40% between runs.
            row["triton_graph_us"] = time_us(lambda: call("triton"), graph=True)[0]
            best = row["triton_graph_us"]
            print(f"{name:14s} M={tokens:5d}: err {error:.1e}/{torch_error:.1e}  triton "
                  f"{best:8.1f} us ({best / floor_us:4.2f}x floor)  torch "
                  f"{row['torch_eager_us']:8.1f} us  floor {floor_us:7.1f}", flush=True)  # fmt: skip
            rows.append(row)
        torch.cuda.empty_cache()
    write_json(args.out, dict(environment=environment(), bandwidth_gbps=bandwidth,
                              matmul_tflops=tflops, rows=rows))  # fmt: skip


if __name__ == "__main__":
    main()
