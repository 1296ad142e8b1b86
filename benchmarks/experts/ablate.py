"""Where the time of the Triton experts path goes, and what each fusion bought (GPU, bf16).

For each shape and token count, in CUDA graphs (median of do_bench_cudagraph):
  * ``path``: the whole ``fused_experts`` Triton call as shipped;
  * ``unfused``: the path before the activation was fused (GEMM1 writes ``[M*k, 2I]``, the torch
    activation reads it back), kept here as the ablation baseline;
  * ``align``, ``gemm1``, ``gemm2``, ``sum``: each step of the shipped path alone, in slot
    order (for a ``SORTED_ROWS`` entry the copy in the aligned order and the sorted A tiles are
    left out, so its steps time the slot-order form of the same tiles);
  * ``full_block_n``: the fused GEMM1 with the table's BLOCK_N per half instead of half of it;
  * ``grouped_mm_gemm1``, ``grouped_mm_gemm2``: ``torch._grouped_mm`` (the vendor grouped GEMM)
    on the same rows already sorted by expert, no activation: what a library GEMM reaches on
    these sizes, beside each Triton GEMM.
Also the largest difference between the fused and unfused outputs, relative to the output scale.

    python benchmarks/experts/ablate.py --out ablate.json
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from unittest import mock

import torch
import triton.testing
from triton.runtime.errors import OutOfResources

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_fused_moe import (
    SHAPES,
    add_skew_argument,
    busiest_over_mean,
    floor_us,
    measured_ceilings,
    routed_calls,
)
from common import environment, relative_error, write_json

from moekit.align import moe_align_block_size, moe_sum
from moekit.experts import MoEActivation, apply_activation
from moekit.experts._triton_impl import gate_up_gemm
from moekit.experts._triton_impl.configs import get_config
from moekit.experts._triton_impl.gate_up_gemm import invoke_gate_up_gemm
from moekit.experts._triton_impl.grouped_gemm import invoke_grouped_gemm
from moekit.experts._triton_impl.tile_source import TileSource


def graph_us(fn) -> float:
    fn()
    return 1e3 * triton.testing.do_bench_cudagraph(fn, rep=50, return_mode="median")


def steps(x, w1, w2, b1, b2, weights, ids, activation):
    """Callables for each step of the shipped path, and the unfused path, on shared buffers."""
    num_tokens, top_k = ids.shape
    num_experts, n, hidden = w1.shape
    act = MoEActivation.parse(activation)
    n_act = n // 2 if act.is_gated else n
    config = get_config(num_tokens, top_k, num_experts, n, x.dtype, x.device, False)
    tiles = TileSource(*moe_align_block_size(
        ids, config.BLOCK_M, num_experts, ignore_invalid_experts=True, backend="triton"
    ))  # fmt: skip
    slots = num_tokens * top_k
    activated = torch.empty(slots, n_act, device=x.device, dtype=x.dtype)
    gemm1_out = torch.empty(slots, n, device=x.device, dtype=x.dtype)
    gemm2_out = torch.empty(slots, hidden, device=x.device, dtype=x.dtype)
    out = torch.empty(num_tokens, hidden, device=x.device, dtype=x.dtype)
    flat_weights = weights.reshape(-1)

    def align():
        moe_align_block_size(ids, config.BLOCK_M, num_experts, ignore_invalid_experts=True,
                             backend="triton")  # fmt: skip

    def gemm1():
        invoke_gate_up_gemm(x, w1, activated, b1, tiles, top_k, act, config)

    def gemm2():
        invoke_grouped_gemm(activated, w2, gemm2_out, b2, flat_weights, tiles, 1, config.gemm2())

    def reduce():
        moe_sum(gemm2_out.view(num_tokens, top_k, hidden), out, ids, backend="triton")

    def unfused():
        aligned = TileSource(*moe_align_block_size(ids, config.BLOCK_M, num_experts,
                                                   ignore_invalid_experts=True, backend="triton"))  # fmt: skip
        invoke_grouped_gemm(x, w1, gemm1_out, b1, None, aligned, top_k, config)
        activated.copy_(apply_activation(gemm1_out, act))
        invoke_grouped_gemm(activated, w2, gemm2_out, b2, flat_weights, aligned, 1,
                            config.gemm2())  # fmt: skip
        moe_sum(gemm2_out.view(num_tokens, top_k, hidden), out, ids, backend="triton")
        return out

    return dict(align=align, gemm1=gemm1, gemm2=gemm2, sum=reduce), unfused


def grouped_mm_gemms(x, w1, w2, ids):
    """``torch._grouped_mm`` for GEMM1 and GEMM2 on rows sorted by expert (the sort excluded)."""
    top_k = ids.shape[1]
    flat = ids.reshape(-1).long()
    order = flat.argsort(stable=True)
    rows = x[order // top_k].contiguous()
    offsets = torch.bincount(flat, minlength=w1.shape[0]).cumsum(0).to(torch.int32)
    activated = torch.randn(rows.shape[0], w2.shape[2], device=x.device, dtype=x.dtype)
    w1_t, w2_t = w1.transpose(1, 2), w2.transpose(1, 2)  # [E, K, N], K contiguous

    def gemm1():
        return torch._grouped_mm(rows, w1_t, offs=offsets)

    def gemm2():
        return torch._grouped_mm(activated, w2_t, offs=offsets)

    return gemm1, gemm2


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--shapes", nargs="+", default=list(SHAPES))
    parser.add_argument("--tokens", nargs="+", type=int, default=[1, 16, 256, 1024, 4096])
    add_skew_argument(parser)
    args = parser.parse_args()
    bandwidth, tflops = measured_ceilings()
    rows = []
    for path in routed_calls(args.shapes, args.tokens, args.skew):
        name, tokens, x, weights, ids, w1, w2, b1, b2 = path
        num_experts, top_k, hidden, inter, activation = SHAPES[name]
        parts, unfused = steps(x, w1, w2, b1, b2, weights, ids, activation)
        fused_out, old_out = path().float(), unfused().float()
        row = dict(shape=name, tokens=tokens, E=num_experts, top_k=top_k, K=hidden, I=inter,
                   skew=args.skew, busiest_over_mean=busiest_over_mean(ids, num_experts),
                   fused_vs_unfused=relative_error(fused_out, old_out),
                   path_us=graph_us(path), unfused_us=graph_us(unfused))  # fmt: skip
        for part, fn in parts.items():
            row[f"{part}_us"] = graph_us(fn)
        with mock.patch.object(gate_up_gemm, "gate_up_block_n", lambda c, g: c.BLOCK_N):
            try:
                row["full_block_n_us"] = graph_us(path)
            except OutOfResources:  # twice the B tiles per stage
                row["full_block_n_us"] = float("nan")
        for part, fn in zip(("gemm1", "gemm2"), grouped_mm_gemms(x, w1, w2, ids)):
            try:
                row[f"grouped_mm_{part}_us"] = graph_us(fn)
            except (RuntimeError, AttributeError) as error:  # no _grouped_mm for this build
                print(f"  grouped_mm {part}: {error}", file=sys.stderr)
                row[f"grouped_mm_{part}_us"] = float("nan")
        row["floor_us"] = floor_us(ids, top_k, hidden, inter, bandwidth, tflops)
        print(" ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                       for k, v in row.items()), flush=True)  # fmt: skip
        rows.append(row)
    write_json(args.out, dict(environment=environment(), bandwidth_gbps=bandwidth,
                              matmul_tflops=tflops, rows=rows))  # fmt: skip


if __name__ == "__main__":
    main()
