"""Tune the grouped GEMM's tile configs for one MoE shape and write the table moekit loads.

For each token count M, every candidate config (the default heuristic's always among them) runs
the whole ``fused_experts`` Triton path on random routing: align with that BLOCK_M, both grouped
GEMMs, the activation and the top-k sum, since a tile that wins on the GEMMs alone can lose on
the path. The fastest (median of do_bench_cudagraph) is kept, then GEMM1's own tile width
(``BLOCK_N1``), one more or fewer pipeline stage and TMA descriptors for the weights are tried
on it, then GEMM2's own tile. Every candidate's output is checked against the torch path first.
``--refine-only`` skips the grid and refines the current entry (run it twice: each phase starts
from the best before it). With ``--chunks W`` the path runs on the weights in K chunks of ``W``
columns (``chunk_weights``), starts from the entries tuned on the weights as stored where the
table of chunk entries has none, and writes that table (``...,chunks=W.json``), which holds
only the token counts tuned on chunks. With ``--precompile N``, N
processes compile the candidates first (Triton's disk cache keeps them), so the timing loop does
not wait on the compiler one kernel at a time. The table goes to
``packages/experts/src/moekit/experts/configs/E=..,N=..,dtype=..,device=....json`` (``--out-dir``),
merged into the file already there.

    python benchmarks/experts/tune.py --experts 128 --top-k 8 --hidden 2048 --inter 768 --quick
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import multiprocessing
import sys
from pathlib import Path
from unittest import mock

import torch
import triton.testing

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from common import relative_error

from moekit.experts import chunk_weights, fused_experts
from moekit.experts._triton_impl.configs import CONFIG_DIR, GemmConfig, default_config, table_name
from moekit.experts.weight_chunks import CHUNK_WIDTHS

TOKENS = (1, 16, 64, 256, 1024, 4096, 16384)


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


def refinements(best: GemmConfig) -> list[GemmConfig]:
    """GEMM1's own tile width (a quarter or all of BLOCK_N), one stage more or fewer, the other
    BLOCK_K values (256 won on gpt-oss at 256 tokens: ``probe_tiles.py``), half or twice BLOCK_M,
    the weights read through TMA descriptors or not, and the other ``GROUP_M`` values.

    ``GROUP_M`` 32 walks every m-tile of a few-expert shape (Mixtral up to 1024 tokens) in one
    group: where an expert's tiles fall into two groups of many n-tiles each, its weights stream
    from HBM twice (up to 7% at 256 tokens), but only for some routings, so confirm a change with
    ``probe_tiles.py --family group_m --seeds 3``. ``GROUP_M`` 1 gained 0.3-2% on the top-8 and
    top-4 shapes at 256-4096 tokens. Groups that follow the experts (``EXPERT_GROUPS``, at most
    8 or 16 m-tiles) never split one and gained 2-9% on Mixtral at 512-4096 tokens and on
    DeepSeek-V3 and gpt-oss at 4096. Folded tails (``TAIL_M``, ``TAIL_M2`` of 0, 16, 32 or 64
    rows each), their products swapped (``TAIL_SWAP``) or not, gained 1-12% at 4096 tokens on
    the top-8 and top-4 shapes, 1-2% on Qwen3 and its TP2 slice at 1024, and lost or tied
    elsewhere (``probe_tiles.py --family tail``; confirm with ``--seeds 3 --rounds 2``, and
    with ``--skew``: a tail changes how many programs a GEMM runs, and near one wave of the SMs
    that count decides the time, so whole-tile tails, ``BLOCK_M`` rows, can pay there). The
    rows each GEMM stores for the next kernel with L2's default policy (``ROWS_DEFAULT_POLICY``)
    rather than ``row_cache``'s were 0.4-0.5% faster on Mixtral at 64 and 256 tokens and lost up
    to 3.5% on the top-8 shapes (``bench_call_variants.py --groups rows``). Both GEMMs as one
    program per expert (``EXPERT_PROGRAMS``, where ``TritonExperts``'s row limit lets it run)
    took 2-7% off Qwen3-30B TP2 at 9-256 tokens on the H100 (``--groups programs``); an entry
    with it times its other fields only on the calls the path leaves."""
    widths = [dataclasses.replace(best, BLOCK_N1=w) for w in (best.BLOCK_N // 4, best.BLOCK_N)
              if w >= 16]  # fmt: skip
    stages = [dataclasses.replace(best, num_stages=s) for s in (best.num_stages - 1,
              best.num_stages + 1) if s >= 2]  # fmt: skip
    block_k = [dataclasses.replace(best, BLOCK_K=k) for k in (64, 128, 256) if k != best.BLOCK_K]
    block_m = [
        best.with_block_m(m) for m in (best.BLOCK_M // 2, best.BLOCK_M * 2) if 16 <= m <= 128
    ]
    group_m = [dataclasses.replace(best, GROUP_M=g, EXPERT_GROUPS=False) for g in (1, 8, 32)]
    group_m += [dataclasses.replace(best, GROUP_M=g, EXPERT_GROUPS=True) for g in (8, 16)]
    group_m = [c for c in group_m if c != best]
    tma = [dataclasses.replace(best, B_TMA=not best.B_TMA)]
    rows_policy = [dataclasses.replace(best, ROWS_DEFAULT_POLICY=not best.ROWS_DEFAULT_POLICY)]
    programs = [dataclasses.replace(best, EXPERT_PROGRAMS=not best.EXPERT_PROGRAMS,
                                    EXPERT_PROGRAMS_ROWS=0)]  # fmt: skip
    tails = [dataclasses.replace(best, TAIL_M=t1, TAIL_M2=t2, TAIL_SWAP=swap)
             for t1, t2, swap in itertools.product((0, 16, 32, 64), (0, 16, 32, 64), (False, True))
             if max(t1, t2) <= best.BLOCK_M and (t1 or t2 or not swap)]  # fmt: skip
    tails = [c for c in tails if c != best]
    return widths + stages + block_k + block_m + tma + rows_policy + programs + group_m + tails


def row_layouts(best: GemmConfig) -> list[GemmConfig]:
    """``best`` with the rows in the aligned order (a copy of the hidden states first, every A
    tile then one block of rows, through TMA where possible) or back in slot order."""
    return [dataclasses.replace(best, SORTED_ROWS=not best.SORTED_ROWS)]


def gemm2_tiles(best: GemmConfig) -> list[GemmConfig]:
    """GEMM2's own tile on top of ``best`` (GEMM2's K is the intermediate size and its N the
    hidden size, so it may want another tile than GEMM1)."""
    grid = itertools.product((64, 128, 256), (64, 128, 256), (4, 8), (3, 4))
    return [dataclasses.replace(best, BLOCK_N2=n, BLOCK_K2=k, num_warps2=w, num_stages2=s)
            for n, k, w, s in grid]  # fmt: skip


def _compile_some(configs: list[GemmConfig], activation: str, top_k: int, chunks: int) -> None:
    """Run a small problem once per config and token-count class so Triton compiles and caches
    every kernel specialisation the timing loop will meet (all dimensions here and in the real
    shapes are multiples of 16, so the cached binaries match)."""
    import warnings

    warnings.filterwarnings("ignore")
    num_experts, hidden, inter = 4, 256, 128
    w1 = torch.randn(num_experts, 2 * inter, hidden, device="cuda", dtype=torch.bfloat16)
    w2 = torch.randn(num_experts, hidden, inter, device="cuda", dtype=torch.bfloat16)
    if chunks:  # the kernels read chunks through other descriptors and offsets
        w1, w2 = chunk_weights(w1, chunks), chunk_weights(w2, chunks)
    bias = activation == "swigluoai"
    b1 = torch.zeros(num_experts, 2 * inter, device="cuda", dtype=torch.bfloat16) if bias else None
    b2 = torch.zeros(num_experts, hidden, device="cuda", dtype=torch.bfloat16) if bias else None
    for config in configs:
        for tokens in (1, 2, 16):  # one token (no align), odd and multiple-of-16 slot counts
            x = torch.randn(tokens, hidden, device="cuda", dtype=torch.bfloat16)
            ids = torch.stack([torch.randperm(num_experts)[:top_k] for _ in range(tokens)]).int()
            weights = torch.rand(tokens, top_k, device="cuda")
            with mock.patch("moekit.experts.triton_experts.get_config", lambda *_: config):
                try:
                    fused_experts(x, w1, w2, weights, ids.cuda(), activation=activation,
                                  w1_bias=b1, w2_bias=b2, backend="triton", check_ids=False)  # fmt: skip
                except Exception:  # does not fit; the timing loop reports it
                    break
    torch.cuda.synchronize()


def precompile(configs: list[GemmConfig], activation: str, top_k: int, workers: int,
               chunks: int) -> None:  # fmt: skip
    shares = [configs[i::workers] for i in range(workers)]
    context = multiprocessing.get_context("spawn")
    with context.Pool(workers) as pool:
        pool.starmap(_compile_some, [(share, activation, min(top_k, 4), chunks)
                                     for share in shares])  # fmt: skip


def time_config(config: GemmConfig, run, expected: torch.Tensor) -> float:
    """Median in a CUDA graph: eager medians hide small kernels behind the host and drift by up
    to 40% between runs at large M. A candidate whose output strays from ``expected`` (the
    torch path's) is refused, so a fast wrong tile can never enter a table."""
    try:
        with mock.patch("moekit.experts.triton_experts.get_config", lambda *_: config):
            error = relative_error(run(), expected)  # also compiles outside the capture
            if not error < 2e-2:
                print(f"  WRONG {config}: relative error {error:.3g}", file=sys.stderr)
                return float("inf")
            return triton.testing.do_bench_cudagraph(run, rep=20, return_mode="median")
    except Exception as error:  # a config that does not fit (shared memory, registers)
        print(f"  skip {config}: {type(error).__name__}", file=sys.stderr)
        return float("inf")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--experts", type=int, required=True)
    parser.add_argument("--top-k", type=int, required=True)
    parser.add_argument("--hidden", type=int, required=True)
    parser.add_argument("--inter", type=int, required=True)
    parser.add_argument("--activation", default="silu")
    parser.add_argument("--tokens", type=int, nargs="+", default=list(TOKENS))
    parser.add_argument("--quick", action="store_true", help="a smaller candidate grid")
    parser.add_argument(
        "--refine-only",
        action="store_true",
        help="skip the grid: refine the current entry (or the default) only",
    )
    parser.add_argument(
        "--seed-from",
        metavar="DEVICE",
        help="start from this device's table when this device has none (e.g. 'NVIDIA H100 80GB HBM3')",
    )
    parser.add_argument("--chunks", type=int, choices=(0, *CHUNK_WIDTHS), default=0,
                        help="tune on the weights in K chunks of this width (0: as stored)")  # fmt: skip
    parser.add_argument("--out-dir", type=Path, default=CONFIG_DIR)
    parser.add_argument("--precompile", type=int, default=0, metavar="N",
                        help="compile the candidates first in N processes")  # fmt: skip
    args = parser.parse_args()
    dtype = torch.bfloat16
    n = 2 * args.inter
    w1 = torch.randn(args.experts, n, args.hidden, device="cuda", dtype=dtype) / 10
    w2 = torch.randn(args.experts, args.hidden, args.inter, device="cuda", dtype=dtype) / 10
    # gpt-oss (the swigluoai model) has biases; the tuned path must be the one it runs
    bias = args.activation == "swigluoai"
    b1 = torch.randn(args.experts, n, device="cuda", dtype=dtype) / 10 if bias else None
    b2 = torch.randn(args.experts, args.hidden, device="cuda", dtype=dtype) / 10 if bias else None
    triton_weights = (w1, w2)
    if args.chunks:
        triton_weights = (chunk_weights(w1, args.chunks), chunk_weights(w2, args.chunks))
    device_name = torch.cuda.get_device_name()
    args.out_dir.mkdir(parents=True, exist_ok=True)
    path = args.out_dir / table_name(args.experts, n, dtype, device_name, args.chunks)
    # Merged into an existing table, so a long tuning can be split over several runs.
    table = json.loads(path.read_text()) if path.is_file() else {}
    starts = dict(table)
    if args.chunks:  # counts without a chunk entry start from the weights as stored's
        stored = args.out_dir / table_name(args.experts, n, dtype, device_name)
        starts = {**(json.loads(stored.read_text()) if stored.is_file() else {}), **table}
    if not starts and args.seed_from:  # e.g. an H200 starts from the H100's entries
        seed = args.out_dir / table_name(args.experts, n, dtype, args.seed_from, args.chunks)
        starts = json.loads(seed.read_text()) if seed.is_file() else {}
        print(f"seeded from {seed.name}: {len(starts)} entries", flush=True)
        if not args.chunks:  # the new table starts as a copy of the seed
            table = dict(starts)
    current = {int(t): GemmConfig(**entry) for t, entry in starts.items()}
    if args.precompile:
        every: set[GemmConfig] = set()
        for t in args.tokens:
            if not args.refine_only:
                every |= set(candidates(args.quick, t * args.top_k / args.experts))
                every.add(default_config(t, args.top_k, args.experts, False))
            if t in current:  # the phases' candidates around the current entry's variants
                for tma, rows in itertools.product((False, True), (False, True)):
                    base = dataclasses.replace(current[t], B_TMA=tma, SORTED_ROWS=rows)
                    every |= {base, *refinements(base), *gemm2_tiles(base)}
        precompile(sorted(every, key=str), args.activation, args.top_k, args.precompile,
                   args.chunks)  # fmt: skip
        print(f"precompiled {len(every)} configs", flush=True)
    for tokens in args.tokens:
        x = torch.randn(tokens, args.hidden, device="cuda", dtype=dtype)
        weights, ids = torch.randn(tokens, args.experts, device="cuda").softmax(-1).topk(args.top_k)
        ids = ids.int()

        def run(x=x, weights=weights, ids=ids, backend="triton"):
            # the torch path, the reference, takes only the weights as stored
            a, b = (w1, w2) if backend == "torch" else triton_weights
            return fused_experts(x, a, b, weights, ids, activation=args.activation, w1_bias=b1,
                                 w2_bias=b2, backend=backend, check_ids=False)  # fmt: skip

        expected = run(backend="torch")
        default = default_config(tokens, args.top_k, args.experts, interpreter=False)
        rows_per_expert = tokens * args.top_k / args.experts
        grid = [default] + [c for c in candidates(args.quick, rows_per_expert) if c != default]
        if tokens in current:  # a re-tune keeps the current entry unless a candidate beats it
            grid = [current[tokens]] + [c for c in grid if c != current[tokens]]
        if args.refine_only:
            grid = grid[:1]
        if tokens == 1:  # one token runs 16-row tiles whatever the table says
            grid = list(dict.fromkeys(c.with_block_m(16) for c in grid))
        timed = [(time_config(c, run, expected), c) for c in grid]
        # Each phase refines the best so far: the row layout, GEMM1's width, stages and TMA,
        # then GEMM2's tile.
        for phase in (row_layouts, refinements, gemm2_tiles):
            best = min(timed, key=lambda item: item[0])[1]
            tried = {c for _, c in timed}
            # one token runs 16-row tiles in slot order: other BLOCK_M values or the aligned
            # row order would only repeat a timing
            fresh = [c for c in phase(best) if c not in tried
                     and (tokens > 1 or (c.BLOCK_M == 16 and not c.SORTED_ROWS))]  # fmt: skip
            timed += [(time_config(c, run, expected), c) for c in fresh]
        best_ms, best = min(timed, key=lambda item: item[0])
        if best_ms == float("inf"):
            raise SystemExit(f"M={tokens}: no candidate ran and matched the torch path")
        table[str(tokens)] = best.as_dict()
        print(f"M={tokens}: {best_ms * 1e3:.1f} us with {best} (first candidate, the current "
              f"entry or the default: {timed[0][0] * 1e3:.1f} us)", flush=True)  # fmt: skip
        # Written after every M: compiling each candidate costs ~1.5 s, so runs are long.
        ordered = dict(sorted(table.items(), key=lambda item: int(item[0])))
        path.write_text(json.dumps(ordered, indent=1) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
