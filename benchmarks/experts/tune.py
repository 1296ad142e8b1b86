"""Tune the grouped GEMM's tile configs for one MoE shape and write the table moekit loads.

For each token count M, every candidate config runs the two grouped GEMMs of ``TritonExperts``
(GEMM1 [E, 2I, K] and GEMM2 [E, K, I] on ``moe_align_block_size`` output, random routing); the
fastest (median of do_bench) is kept. The table goes to
``packages/experts/src/moekit/experts/configs/E=..,N=..,dtype=..,device=....json`` (``--out-dir``).

    python benchmarks/experts/tune.py --experts 128 --top-k 8 --hidden 2048 --inter 768
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
from pathlib import Path

import torch
import triton.testing

from moekit.align import moe_align_block_size
from moekit.experts._triton_impl.configs import CONFIG_DIR, GemmConfig, table_name
from moekit.experts._triton_impl.grouped_gemm import invoke_grouped_gemm

TOKENS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384)


def candidates(quick: bool, rows_per_expert: float) -> list[GemmConfig]:
    """The full grid, or with ``quick`` only tiles whose BLOCK_M suits the rows per expert
    (compiling a candidate costs ~1.5 s; the compiled kernels are reused across M)."""
    block_m = (16, 32, 64, 128)
    if quick:
        block_m = (
            (16, 32) if rows_per_expert <= 16 else (32, 64) if rows_per_expert <= 64 else (64, 128)
        )
        grid = itertools.product(block_m, (64, 128, 256), (64, 128), (8,), (4, 8), (3, 4))
    else:
        grid = itertools.product(block_m, (32, 64, 128, 256), (64, 128), (1, 8), (4, 8),
                                 (2, 3, 4, 5))  # fmt: skip
    return [GemmConfig(m, n, k, g, w, s) for m, n, k, g, w, s in grid]


def time_config(config, x, w1, w2, ids, weights, num_experts) -> float:
    sorted_ids, expert_ids, post_pad = moe_align_block_size(ids, config.BLOCK_M, num_experts)
    slots = ids.numel()
    c1 = torch.empty(slots, w1.shape[1], device="cuda", dtype=x.dtype)
    a2 = torch.randn(slots, w2.shape[2], device="cuda", dtype=x.dtype)
    c2 = torch.empty(slots, w2.shape[1], device="cuda", dtype=x.dtype)

    def run():
        invoke_grouped_gemm(x, w1, c1, None, None, sorted_ids, expert_ids, post_pad,
                            ids.shape[1], config)  # fmt: skip
        invoke_grouped_gemm(a2, w2, c2, None, weights, sorted_ids, expert_ids, post_pad, 1,
                            config)  # fmt: skip

    try:
        return triton.testing.do_bench(run, warmup=5, rep=25, return_mode="median")
    except Exception as error:  # a config that does not fit (shared memory, registers)
        print(f"  skip {config}: {type(error).__name__}", file=sys.stderr)
        return float("inf")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--experts", type=int, required=True)
    parser.add_argument("--top-k", type=int, required=True)
    parser.add_argument("--hidden", type=int, required=True)
    parser.add_argument("--inter", type=int, required=True)
    parser.add_argument("--tokens", type=int, nargs="+", default=list(TOKENS))
    parser.add_argument("--quick", action="store_true", help="a smaller candidate grid")
    parser.add_argument("--out-dir", type=Path, default=CONFIG_DIR)
    args = parser.parse_args()
    dtype = torch.bfloat16
    n = 2 * args.inter
    w1 = torch.randn(args.experts, n, args.hidden, device="cuda", dtype=dtype) / 10
    w2 = torch.randn(args.experts, args.hidden, args.inter, device="cuda", dtype=dtype) / 10
    name = table_name(args.experts, n, dtype, torch.cuda.get_device_name())
    args.out_dir.mkdir(parents=True, exist_ok=True)
    path = args.out_dir / name
    # Merged into an existing table, so a long tuning can be split over several runs.
    table = json.loads(path.read_text()) if path.is_file() else {}
    for tokens in args.tokens:
        x = torch.randn(tokens, args.hidden, device="cuda", dtype=dtype)
        weights, ids = torch.rand(tokens, args.experts, device="cuda").topk(args.top_k, dim=-1)
        ids, weights = ids.int(), weights.reshape(-1)
        rows_per_expert = tokens * args.top_k / args.experts
        timed = [(time_config(c, x, w1, w2, ids, weights, args.experts), c)
                 for c in candidates(args.quick, rows_per_expert)]  # fmt: skip
        best_ms, best = min(timed, key=lambda item: item[0])
        table[str(tokens)] = best.as_dict()
        print(f"M={tokens}: {best_ms * 1e3:.1f} us with {best}", flush=True)
        # Written after every M: compiling each candidate costs ~1.5 s, so runs are long.
        path.write_text(
            json.dumps(dict(sorted(table.items(), key=lambda kv: int(kv[0]))), indent=1) + "\n"
        )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
