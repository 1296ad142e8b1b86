"""Time tiles that ``tune.py`` never tries against the shipped entry (GPU, bf16, CUDA graph).

Each family varies the shipped table entry of a set of cells:
  * ``wide``: 256-row tiles with 16 warps (four warpgroups), 128-row tiles with 16 warps, and
    256 x 128 tiles with 8 warps; the whole path at 1024 tokens and in prefill.
  * ``block_k``: ``BLOCK_K = 256`` for GEMM1, GEMM2 or both, with the entry's stages or one
    fewer; the whole path at decode sizes.
  * ``block_m``: twice and half the entry's ``BLOCK_M``; GEMM1 and GEMM2 timed alone (as in
    ``ablate.py``) on cells with about 64 rows per expert.
  * ``block_m_fit``: twice the entry's ``BLOCK_M`` on the whole path, made to fit in shared
    memory with one stage fewer, with ``BLOCK_K = 64``, or with 8 warps and one stage fewer.
  * ``group_m``: ``GROUP_M`` (m-tiles walked per column of n-tiles) from 1 to 256, and groups
    that follow the experts (``EXPERT_GROUPS``, at most 8, 16 or 32 m-tiles); the whole path
    where an expert's rows span several m-tiles (256 tokens and more, tuned counts and counts
    between them).
  * ``tail``: an expert's short last m-tile folded into the program of the tile before it
    (variant ``tail{TAIL_M}_{TAIL_M2}``: GEMM1's and GEMM2's tails of 0, 16, 32 or 64 rows, at
    most ``BLOCK_M``, which folds an expert's last tile whatever its rows; ``tail0_0`` is the
    entry without them; a trailing ``s`` computes the tails' products transposed,
    ``TAIL_SWAP``); the whole path where the rows per expert sit near a multiple of
    ``BLOCK_M``, and each GEMM alone.
  * ``gemm2_tile``: GEMM2's own tile (``BLOCK_N2`` 32-256, ``BLOCK_K2`` 64 or 128, 3-5 stages,
    4 warps, and 8 warps for the wide tiles) around the entry, GEMM1 unchanged; the whole path
    at the decode cells whose GEMM2 runs furthest above its share of the floor.
  * ``stages``: GEMM1's and GEMM2's stages one fewer, the same or one more, each with GEMM1 at
    its entry's width or at the whole ``BLOCK_N`` per half (``BLOCK_N1``), on the decode cells
    nearest the goal, where ``tune.py --refine-only`` found such neighbours after lever 41.
  * ``half_tail``: half the entry's ``BLOCK_M`` with folded tails of a quarter of it (swapped
    on one GEMM or both, or unswapped on both), where the rows per expert sit near half the
    entry's ``BLOCK_M``: most experts fit one half-height tile, a few fold their last rows,
    and the MMAs skip the padding of the full-height tile; the whole path and each GEMM alone.
  * ``gemm1_wide``: GEMM1 at twice the entry's activation columns per tile (``BLOCK_N1``), made
    to fit with K steps of 64 and eight warps (2-5 stages, or steps of 128 over two): each
    program then reads its rows of hidden states from L2 once for twice the weight columns.
    Controls: the entry with eight warps, and with eight warps and K steps of 64 (four stages).
    Also the entry at two stages (two programs a multiprocessor where one fitted). The whole
    path and each GEMM alone, on the decode cells whose GEMM1 runs furthest above its share of
    the floor.
  * ``chunked``: both GEMMs' weights stored in K chunks (``chunk_weights``), so that each TMA
    box is one contiguous run (``weight_layout.py`` measured the raw stream 1-3% faster that
    way). Every variant reads the weights through TMA (``tma``: the entry so); ``chunked_e``
    reads ``tma``'s tiles from the chunks (a K step of 128 as two products), ``chunked`` steps
    both GEMMs by one chunk (GEMM2's stages doubled where it stepped 128), and ``k64`` is
    ``chunked``'s tiles on the weights as stored. The whole path on the decode cells of the
    aligned path.
  * ``row_order``: the entry with the rows in the other order (``SORTED_ROWS``: the hidden
    states copied in the aligned order, both GEMMs' A tiles through TMA); the whole path (each
    GEMM alone would time the slot order, see ``ablate.py``), where GEMM2 runs furthest above
    its share of the floor since its tails became whole tiles (lever 44).
Whole-path variants are checked against the torch path (2% of the output scale) and compared
bit for bit with the entry's output. A variant that strays, or does not compile (shared memory,
registers), is recorded with its error and not timed. Each row lists the GEMM kernels its
variant compiled first: registers, spills and how many dots became warpgroup MMAs (``wgmma``)
or per-warp MMAs (``mma_v2``).

    python benchmarks/experts/probe_tiles.py --family wide --out wide.json
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import sys
from pathlib import Path
from unittest import mock

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
import ablate
from bench_fused_moe import (
    SHAPES,
    add_skew_argument,
    busiest_over_mean,
    expert_popularity,
    floor_us,
    make_routed_tokens,
    make_weights,
    measured_ceilings,
)
from common import environment, relative_error, write_json

from moekit.experts import chunk_weights, fused_experts
from moekit.experts._triton_impl import gate_up_gemm, grouped_gemm
from moekit.experts._triton_impl.configs import GemmConfig, get_config
from moekit.experts._triton_impl.gate_up_gemm import gate_up_block_n
from moekit.experts._triton_impl.gate_up_gemm_kernel import gate_up_gemm_kernel
from moekit.experts._triton_impl.grouped_gemm_kernel import grouped_gemm_kernel
from moekit.experts.weight_chunks import CHUNK

CELLS = {
    "wide": [("mixtral", 1024), ("mixtral", 4096), ("mixtral-tp2", 1024), ("mixtral-tp2", 4096),
             ("mixtral-tp2", 16384), ("qwen3-30b-a3b", 4096), ("qwen3-30b-a3b", 16384),
             ("qwen3-30b-a3b-tp2", 16384), ("deepseek-v3-tp4", 16384), ("gpt-oss-120b", 4096),
             ("gpt-oss-120b", 16384)],
    "block_k": [("qwen3-30b-a3b-tp2", 16), ("qwen3-30b-a3b-tp2", 64), ("qwen3-30b-a3b-tp2", 256),
                ("qwen3-30b-a3b-tp2", 1024), ("qwen3-30b-a3b", 16), ("qwen3-30b-a3b", 256),
                ("qwen3-30b-a3b", 1024), ("mixtral", 256), ("mixtral-tp2", 256),
                ("deepseek-v3-tp4", 1024), ("gpt-oss-120b", 256), ("gpt-oss-120b", 1024)],
    "block_m": [("mixtral", 256), ("mixtral-tp2", 256), ("qwen3-30b-a3b-tp2", 256),
                ("qwen3-30b-a3b-tp2", 1024), ("qwen3-30b-a3b", 1024), ("deepseek-v3-tp4", 1024),
                ("gpt-oss-120b", 1024), ("mixtral", 1024)],
    "block_m_fit": [("mixtral", 256), ("mixtral-tp2", 256), ("qwen3-30b-a3b", 256),
                    ("qwen3-30b-a3b-tp2", 256), ("gpt-oss-120b", 1024), ("deepseek-v3-tp4", 1024)],
    "group_m": [(shape, tokens) for shape in ("mixtral", "mixtral-tp2", "qwen3-30b-a3b",
                                              "qwen3-30b-a3b-tp2", "deepseek-v3",
                                              "deepseek-v3-tp4", "gpt-oss-120b")
                for tokens in (256, 384, 512, 768, 1024, 2048, 4096, 16384)],
    "tail": [("gpt-oss-120b", 4096), ("deepseek-v3", 4096), ("deepseek-v3-tp4", 4096),
             ("qwen3-30b-a3b", 4096), ("qwen3-30b-a3b-tp2", 4096), ("mixtral", 1024),
             ("mixtral-tp2", 1024), ("mixtral", 4096), ("mixtral-tp2", 4096),
             ("qwen3-30b-a3b", 1024), ("qwen3-30b-a3b-tp2", 1024), ("deepseek-v3", 16384),
             ("gpt-oss-120b", 16384), ("deepseek-v3-tp4", 16384), ("mixtral", 256),
             ("mixtral-tp2", 256), ("mixtral", 192), ("mixtral-tp2", 192), ("deepseek-v3", 1024),
             ("deepseek-v3", 512), ("deepseek-v3", 1536), ("gpt-oss-120b", 512),
             ("gpt-oss-120b", 1536), ("gpt-oss-120b", 256), ("gpt-oss-120b", 320),
             ("gpt-oss-120b", 384), ("deepseek-v3-tp4", 256), ("deepseek-v3-tp4", 384),
             ("deepseek-v3", 384), ("qwen3-30b-a3b", 384),
             ("deepseek-v3", 256), ("qwen3-30b-a3b", 256),
             ("mixtral", 16384), ("deepseek-v3-tp4", 1024), ("gpt-oss-120b", 1024),
             ("qwen3-30b-a3b", 16384), ("qwen3-30b-a3b-tp2", 16384), ("qwen3-30b-a3b-tp2", 256)],
    "half_tail": [("deepseek-v3-tp4", 1024), ("gpt-oss-120b", 1024), ("deepseek-v3", 1024)],
    "gemm1_wide": [("mixtral", 256), ("mixtral-tp2", 256), ("qwen3-30b-a3b", 1024),
                   ("qwen3-30b-a3b-tp2", 1024), ("deepseek-v3-tp4", 1024), ("qwen3-30b-a3b", 256),
                   ("gpt-oss-120b", 1024), ("qwen3-30b-a3b", 512), ("qwen3-30b-a3b", 768),
                   ("qwen3-30b-a3b-tp2", 512), ("qwen3-30b-a3b-tp2", 768),
                   ("qwen3-30b-a3b-tp2", 256), ("mixtral", 128), ("mixtral", 192),
                   ("deepseek-v3", 512), ("deepseek-v3", 768), ("deepseek-v3", 1024),
                   ("deepseek-v3-tp4", 512), ("deepseek-v3-tp4", 768)],
    "chunked": [("mixtral", 256), ("mixtral-tp2", 256), ("qwen3-30b-a3b", 256),
                ("deepseek-v3", 256), ("deepseek-v3-tp4", 256), ("mixtral", 64),
                ("qwen3-30b-a3b", 64), ("deepseek-v3", 64), ("qwen3-30b-a3b", 1024),
                ("qwen3-30b-a3b-tp2", 1024), ("deepseek-v3", 1024), ("deepseek-v3-tp4", 1024),
                ("mixtral", 1024), ("mixtral-tp2", 1024), ("mixtral", 4096)],
    "row_order": [("mixtral", 256), ("mixtral-tp2", 256), ("mixtral", 192), ("mixtral-tp2", 192),
                  ("mixtral", 384), ("mixtral-tp2", 384), ("gpt-oss-120b", 1024)],
    "gemm2_tile": [("qwen3-30b-a3b", 256), ("qwen3-30b-a3b-tp2", 256), ("mixtral-tp2", 256),
                   ("qwen3-30b-a3b-tp2", 64), ("mixtral", 256)],
    "stages": [("qwen3-30b-a3b-tp2", 16), ("qwen3-30b-a3b-tp2", 64), ("qwen3-30b-a3b-tp2", 256),
               ("qwen3-30b-a3b", 16), ("qwen3-30b-a3b", 256), ("qwen3-30b-a3b-tp2", 1024),
               ("qwen3-30b-a3b", 1024), ("mixtral", 256), ("mixtral-tp2", 256),
               ("deepseek-v3-tp4", 1024), ("gpt-oss-120b", 1024)],
}  # fmt: skip
GROUP_M_VALUES = (1, 8, 16, 32, 64, 256)
# the chunked family's weights in K chunks, by the data pointer of the weights as stored, and
# the launches that could read them (TMA, K steps of whole chunks) since the list was cleared
WEIGHT_CHUNKS: dict[int, torch.Tensor] = {}
CHUNKED_LAUNCHES: list[str] = []
# a chunked variant's output against its variant on the weights as stored: the same tiles
CHUNKED_TWIN = {"chunked": "k64", "chunked_e": "tma"}


def from_chunks():
    """The GEMM launchers patched to read the weights from ``WEIGHT_CHUNKS``."""
    gate_up, grouped = gate_up_gemm.invoke_gate_up_gemm, grouped_gemm.invoke_grouped_gemm

    def count(name: str, config: GemmConfig) -> None:
        if config.B_TMA and config.BLOCK_K % CHUNK == 0:
            CHUNKED_LAUNCHES.append(name)

    def gate_up_from_chunks(a, w13, *args, **kwargs):
        count("gemm1", args[5])
        return gate_up(a, WEIGHT_CHUNKS[w13.data_ptr()], *args, **kwargs)

    def grouped_from_chunks(a, b, *args, **kwargs):
        count("gemm2", args[5])
        return grouped(a, WEIGHT_CHUNKS[b.data_ptr()], *args, **kwargs)

    patches = (mock.patch.object(gate_up_gemm, "invoke_gate_up_gemm", gate_up_from_chunks),
               mock.patch.object(grouped_gemm, "invoke_grouped_gemm", grouped_from_chunks))  # fmt: skip
    stack = contextlib.ExitStack()
    for patch in patches:
        stack.enter_context(patch)
    return stack


# families whose rows also time each GEMM alone: where a fold or GEMM1's width gains or loses
PER_GEMM_FAMILIES = ("tail", "half_tail", "gemm1_wide")


def variants(family: str, entry: GemmConfig) -> dict[str, GemmConfig]:
    """The entry and its variants of ``family``, GEMM2's own fields spelled out where the
    variant changes GEMM1's."""
    swap = dataclasses.replace
    gemm2 = entry.gemm2()
    own2 = swap(entry, BLOCK_N2=gemm2.BLOCK_N, BLOCK_K2=gemm2.BLOCK_K,
                num_warps2=gemm2.num_warps, num_stages2=gemm2.num_stages)  # fmt: skip
    if family == "wide":
        return {
            "entry": entry,
            "m256_w16": swap(
                own2, BLOCK_M=256, num_warps=16, num_warps2=16, num_stages=3, num_stages2=3
            ),
            "m128_w16": swap(entry, num_warps=16, num_warps2=16),
            "m256_n128_w8": swap(
                own2,
                BLOCK_M=256,
                BLOCK_N=128,
                BLOCK_N2=128,
                num_warps=8,
                num_warps2=8,
                num_stages=3,
                num_stages2=3,
            ),
        }
    if family == "block_k":
        fewer = max(2, entry.num_stages - 1)
        return {
            "entry": entry,
            "k256_gemm1": swap(own2, BLOCK_K=256),
            "k256_gemm1_fewer_stages": swap(own2, BLOCK_K=256, num_stages=fewer),
            "k256_both": swap(own2, BLOCK_K=256, BLOCK_K2=256),
            "k256_both_fewer_stages": swap(
                own2,
                BLOCK_K=256,
                BLOCK_K2=256,
                num_stages=fewer,
                num_stages2=max(2, own2.num_stages2 - 1),
            ),
            "k256_gemm2": swap(own2, BLOCK_K2=256),
        }
    if family == "block_m_fit":
        taller = swap(own2, BLOCK_M=2 * entry.BLOCK_M)
        fewer, fewer2 = max(2, entry.num_stages - 1), max(2, own2.num_stages2 - 1)
        return {
            "entry": entry,
            "twice_block_m_fewer_stages": swap(taller, num_stages=fewer, num_stages2=fewer2),
            "twice_block_m_block_k64": swap(taller, BLOCK_K=64, BLOCK_K2=64),
            "twice_block_m_8_warps_fewer_stages": swap(
                taller, num_warps=8, num_warps2=8, num_stages=fewer, num_stages2=fewer2
            ),
        }
    if family == "group_m":
        plain = {f"group_m{g}": swap(entry, GROUP_M=g, EXPERT_GROUPS=False)
                 for g in GROUP_M_VALUES if g != entry.GROUP_M or entry.EXPERT_GROUPS}  # fmt: skip
        by_expert = {f"expert_groups{g}": swap(entry, GROUP_M=g, EXPERT_GROUPS=True)
                     for g in (8, 16, 32)}  # fmt: skip
        return {"entry": entry} | plain | by_expert
    if family == "tail":
        sizes = [0] + [t for t in (16, 32, 64) if t <= entry.BLOCK_M]
        tails = {f"tail{t1}_{t2}": swap(entry, TAIL_M=t1, TAIL_M2=t2, TAIL_SWAP=False)
                 for t1 in sizes for t2 in sizes}  # fmt: skip
        swapped = {f"{name}s": swap(config, TAIL_SWAP=True)
                   for name, config in tails.items() if config.TAIL_M or config.TAIL_M2}  # fmt: skip
        return {"entry": entry} | tails | swapped
    if family == "gemm2_tile":
        tiles = [(n, k, stages, 4) for n in (32, 64, 128, 256) for k in (64, 128)
                 for stages in (3, 4, 5)]  # fmt: skip
        tiles += [(n, 64, stages, 8) for n in (128, 256) for stages in (3, 4)]
        mine = (own2.BLOCK_N2, own2.BLOCK_K2, own2.num_stages2, own2.num_warps2)
        return {"entry": entry} | {
            f"n{n}_k{k}_s{stages}_w{warps}": swap(
                own2, BLOCK_N2=n, BLOCK_K2=k, num_stages2=stages, num_warps2=warps
            )
            for n, k, stages, warps in tiles
            if (n, k, stages, warps) != mine
        }
    if family == "stages":
        width = {"gemm1_full_width": swap(own2, BLOCK_N1=entry.BLOCK_N)}
        depths = {
            f"stages{s1}_{s2}": swap(own2, num_stages=s1, num_stages2=s2)
            for s1 in (entry.num_stages - 1, entry.num_stages, entry.num_stages + 1)
            for s2 in (gemm2.num_stages - 1, gemm2.num_stages, gemm2.num_stages + 1)
            if min(s1, s2) >= 2 and (s1, s2) != (entry.num_stages, gemm2.num_stages)
        }
        wide_depths = {f"gemm1_full_width_{name}": swap(config, BLOCK_N1=entry.BLOCK_N)
                       for name, config in depths.items()}  # fmt: skip
        return {"entry": entry} | width | depths | wide_depths
    if family == "gemm1_wide":
        wide = swap(own2, BLOCK_N1=2 * gate_up_block_n(entry, gated=True), num_warps=8)
        others = {
            "entry_w8": swap(own2, num_warps=8),
            "entry_k64_w8": swap(own2, BLOCK_K=64, num_warps=8, num_stages=4),
            **{f"wide_k64_w8_s{s}": swap(wide, BLOCK_K=64, num_stages=s) for s in (2, 3, 4, 5)},
            "wide_k128_w8_s2": swap(wide, BLOCK_K=128, num_stages=2),
            # two stages: half the shared memory, so two programs share a multiprocessor
            "entry_s2": swap(own2, num_stages=2),
            "entry_s2_w8": swap(own2, num_stages=2, num_warps=8),
        }
        return {"entry": entry} | {n: c for n, c in others.items() if c != own2}
    if family == "chunked":
        chunk = CHUNK
        # through TMA (since the public layout, GEMM1 of eight warps steps one chunk at a time
        # whatever BLOCK_K: gate_up_gemm.chunk_step; the runs before had two products a step)
        tma = swap(own2, B_TMA=True)
        steps = swap(tma, BLOCK_K=chunk, BLOCK_K2=chunk,
                     num_stages2=min(8, own2.num_stages2 * own2.BLOCK_K2 // chunk))  # fmt: skip
        return {"entry": entry, "tma": tma, "chunked_e": tma, "k64": steps, "chunked": steps}
    if family == "row_order":
        return {"entry": entry, "other_row_order": swap(entry, SORTED_ROWS=not entry.SORTED_ROWS)}
    if family == "half_tail":
        half = entry.with_block_m(entry.BLOCK_M // 2)
        t = half.BLOCK_M // 2
        return {
            "entry": entry,
            "half_block_m": half,
            f"half_tail{t}_0s": swap(half, TAIL_M=t, TAIL_M2=0, TAIL_SWAP=True),
            f"half_tail0_{t}s": swap(half, TAIL_M=0, TAIL_M2=t, TAIL_SWAP=True),
            f"half_tail{t}_{t}s": swap(half, TAIL_M=t, TAIL_M2=t, TAIL_SWAP=True),
            f"half_tail{t}_{t}": swap(half, TAIL_M=t, TAIL_M2=t, TAIL_SWAP=False),
        }
    return {
        "entry": entry,
        "twice_block_m": swap(entry, BLOCK_M=2 * entry.BLOCK_M),
        "twice_block_m_8_warps": swap(entry, BLOCK_M=2 * entry.BLOCK_M, num_warps=8, num_warps2=8),
        "half_block_m": entry.with_block_m(max(16, entry.BLOCK_M // 2)),
    }


def compiled_gemms() -> dict[str, dict]:
    """Every GEMM kernel compiled so far, by cache key: registers, spills, and how many of its
    dots Triton lowered to warpgroup MMAs and how many to per-warp MMAs."""
    kernels = {}
    for jit_fn in (gate_up_gemm_kernel, grouped_gemm_kernel):
        for caches in jit_fn.device_caches.values():
            for key, kernel in caches[0].items():
                ttgir = kernel.asm.get("ttgir", "")
                # a cached kernel may lack its counts (one did at gpt-oss's 64-token cell)
                kernels[f"{jit_fn.__name__}/{key}"] = dict(
                    kernel=jit_fn.__name__, n_regs=getattr(kernel, "n_regs", None),
                    n_spills=getattr(kernel, "n_spills", None),
                    wgmma=ttgir.count("ttng.warp_group_dot "), mma_v2=ttgir.count("tt.dot "),
                )  # fmt: skip
    return kernels


def time_variants(family: str, routed, entry: GemmConfig, expected, names: list[str] | None,
                  rounds: int, per_gemm: bool) -> list[dict]:  # fmt: skip
    """Rows of ``routed``'s variants, each timed ``rounds`` times in turn (so that drift of the
    clock under the power limit falls on every variant alike); with ``per_gemm``, the tail
    families also time each GEMM alone."""
    x, w1, w2, b1, b2, weights, ids, activation, path = routed
    configs = {v: c for v, c in variants(family, entry).items() if not names or v in names}
    rows, entry_out, outputs = [], None, {}
    for round_ in range(rounds):
        for variant, config in configs.items():
            row = dict(variant=variant, round=round_, config=config.as_dict())
            compiled_before = compiled_gemms().keys()
            try:
                if family == "block_m":
                    with mock.patch.object(ablate, "get_config", lambda *_, c=config: c):
                        parts, _ = ablate.steps(x, w1, w2, b1, b2, weights, ids, activation)
                        row |= {f"{p}_us": ablate.graph_us(parts[p]) for p in ("gemm1", "gemm2")}
                else:
                    chunked = variant.startswith("chunked")
                    CHUNKED_LAUNCHES.clear()
                    with mock.patch("moekit.experts.triton_experts.get_config",
                                    lambda *_, c=config: c), \
                            from_chunks() if chunked else contextlib.nullcontext():  # fmt: skip
                        out = path()
                        if chunked:
                            row["chunked_launches"] = list(CHUNKED_LAUNCHES)
                        outputs.setdefault(variant, out.clone())
                        if variant in CHUNKED_TWIN and CHUNKED_TWIN[variant] in outputs:
                            twin = outputs[CHUNKED_TWIN[variant]]
                            row["bit_identical_to_twin"] = bool(torch.equal(out, twin))
                        row["rel_error"] = relative_error(out, expected)
                        if not row["rel_error"] < 2e-2:
                            raise ValueError("output strays from the torch path's")
                        if entry_out is None:
                            entry_out = out.clone()
                        row["bit_identical_to_entry"] = bool(torch.equal(out, entry_out))
                        row["path_us"] = ablate.graph_us(path)
                    if per_gemm and family in PER_GEMM_FAMILIES:
                        with mock.patch.object(ablate, "get_config", lambda *_, c=config: c):
                            parts, _ = ablate.steps(x, w1, w2, b1, b2, weights, ids, activation)
                            row |= {
                                f"{p}_us": ablate.graph_us(parts[p]) for p in ("gemm1", "gemm2")
                            }
            except Exception as error:  # wrong, or does not compile (shared memory, registers)
                row["error"] = f"{type(error).__name__}: {str(error)[:200]}"
            new = [k for key, k in compiled_gemms().items() if key not in compiled_before]
            if new:
                row["kernels"] = new
            rows.append(row)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--family", choices=list(CELLS), required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--tokens", type=int, nargs="*", help="only the family's cells of these "
                        "token counts")  # fmt: skip
    parser.add_argument("--shapes", nargs="*", help="only the family's cells of these shapes")
    parser.add_argument("--variants", nargs="*", help="only these variants ('entry' included)")
    parser.add_argument("--seeds", type=int, default=1, help="routings drawn from seeds 1..N")
    parser.add_argument("--rounds", type=int, default=1, help="times each variant in turn")
    add_skew_argument(parser)
    parser.add_argument("--path-only", action="store_true",
                        help="skip timing each GEMM alone (see PER_GEMM_FAMILIES)")  # fmt: skip
    args = parser.parse_args()
    cells = [(shape, m) for shape, m in CELLS[args.family]
             if (not args.tokens or m in args.tokens) and (not args.shapes or shape in args.shapes)]  # fmt: skip
    bandwidth, tflops = measured_ceilings()
    rows = []
    for name in dict.fromkeys(shape for shape, _ in cells):
        num_experts, top_k, hidden, inter, activation = SHAPES[name]
        w1, w2, b1, b2 = make_weights(num_experts, top_k, hidden, inter, activation)
        WEIGHT_CHUNKS.clear()
        if args.family == "chunked":
            for w in (w1, w2):
                WEIGHT_CHUNKS[w.data_ptr()] = chunk_weights(w)
        popularity = expert_popularity(num_experts, args.skew)
        for tokens in [m for shape, m in cells if shape == name]:
            for seed in range(1, args.seeds + 1):
                gen = torch.Generator(device="cuda").manual_seed(seed)
                x, weights, ids = make_routed_tokens(tokens, num_experts, top_k, hidden, gen,
                                                     popularity)  # fmt: skip

                def path(x=x, weights=weights, ids=ids, backend="triton"):
                    return fused_experts(x, w1, w2, weights, ids, activation=activation,
                                         w1_bias=b1, w2_bias=b2, backend=backend,
                                         check_ids=False)  # fmt: skip

                entry = get_config(tokens, top_k, num_experts, 2 * inter, x.dtype, x.device, False)
                cell = dict(shape=name, tokens=tokens, seed=seed, skew=args.skew,
                            busiest_over_mean=busiest_over_mean(ids, num_experts),
                            floor_us=floor_us(ids, top_k, hidden, inter, bandwidth, tflops))  # fmt: skip
                routed = (x, w1, w2, b1, b2, weights, ids, activation, path)
                for row in time_variants(args.family, routed, entry, path(backend="torch"),
                                         args.variants, args.rounds,
                                         not args.path_only):  # fmt: skip
                    rows.append(cell | row)
                    print(" ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                                   for k, v in rows[-1].items() if k != "config"), flush=True)  # fmt: skip
                # after every cell, so that a run cut short still leaves what it measured
                write_json(args.out, dict(environment=environment(), bandwidth_gbps=bandwidth,
                                          matmul_tflops=tflops, family=args.family, rows=rows))  # fmt: skip
        torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
