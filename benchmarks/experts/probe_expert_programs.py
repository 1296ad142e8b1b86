"""Decode with one program per expert (GPU; lever 42 of ``NOTES.md``): whether a kernel in which
each program finds its expert's slots in ``topk_ids``, runs that expert's GEMM1 over all of its
columns, then its GEMM2, beats the shipped path (alignment pass, GEMM1, GEMM2, top-k sum) on
the small-expert shapes at decode.

Why it might: the shipped path's GEMMs each run 2-7% above their own bandwidth floors at 16
tokens on Qwen3 TP2, and the alignment pass, the sum and the boundaries between four launches
cost another 5-8% (``ablate.py``). Here every active expert is one program that streams its
own weights once, so the programs are as many as the active experts (no wave quantisation
while they fit on the SMs), all finish together (each streams the same bytes), there is no
alignment launch (each program scans ``topk_ids`` once: lever 18's scan cost thousands of
programs, here it costs one per expert) and no GEMM1 -> GEMM2 boundary. What is left is
``moe_sum``. Each GEMM is one flat loop over (column block, K step), so that Triton pipelines
the weight loads across column blocks instead of draining at each.

The risk: a program must pull its expert's weights at 1.6x its SM's fair share of HBM (82
active experts at 16 tokens on 132 SMs), and the loop's per-block branch may keep Triton from
pipelining it. The variants answer both.

Prototype only: no expert map, no bias, gated activations of the standard ``[gate | up]``
layout, bf16, and the first form of the scan (each block's rows compared with every 256 ids),
which cost up to 14 µs at 2048 slots; the shipped kernel (``expert_programs_kernel``) stores each
slot at its rank instead, and ``bench_call_variants.py --groups programs_forced`` times it. Each variant's output is compared with the shipped path's (bit for bit, and the
relative error). Writes JSON.

    python benchmarks/experts/probe_expert_programs.py --out benchmarks/results/experts_expert_programs_h100.json
"""

from __future__ import annotations

import statistics
import sys
from pathlib import Path

import torch
import triton
import triton.language as tl

from moekit.experts._triton_impl.programmatic_launch import launch_options, wait_for_prior_kernel

TOKENS = (16, 64, 256)
SHAPE_NAMES = ("qwen3-30b-a3b-tp2", "qwen3-30b-a3b", "deepseek-v3-tp4")


@triton.jit
def expert_slots(topk_ids_ptr, expert, num_slots, m_block, SCAN: tl.constexpr,
                 BLOCK_M: tl.constexpr):  # fmt: skip
    """The flat slots of ranks ``m_block * BLOCK_M + r`` among ``expert``'s slots of
    ``topk_ids`` (in slot order), which of them exist, and the expert's slot count."""
    rank_wanted = m_block * BLOCK_M + tl.arange(0, BLOCK_M)
    slot = tl.zeros([BLOCK_M], tl.int32)
    count = 0
    for start in range(0, num_slots, SCAN):
        s = start + tl.arange(0, SCAN)
        match = (tl.load(topk_ids_ptr + s, mask=s < num_slots, other=-1) == expert).to(tl.int32)
        rank = count + tl.cumsum(match, 0) - 1
        hit = (match[None, :] != 0) & (rank[None, :] == rank_wanted[:, None])
        slot += tl.sum(tl.where(hit, s[None, :], 0), axis=1)
        count += tl.sum(match)
    return slot.to(tl.int64), rank_wanted < count, count


@triton.jit
def expert_program_kernel(
    x_ptr, w1_desc, w2_desc, act_ptr, rows_ptr, topk_ids_ptr, topk_weights_ptr,
    num_slots, K, I,
    TOP_K: tl.constexpr, SCAN: tl.constexpr, BLOCK_M: tl.constexpr,
    BLOCK_N1: tl.constexpr, BLOCK_K1: tl.constexpr, BLOCK_N2: tl.constexpr,
    BLOCK_K2: tl.constexpr, STAGES1: tl.constexpr, STAGES2: tl.constexpr,
    ACT_EVICTION: tl.constexpr, WAIT_PRIOR: tl.constexpr, LAUNCH_NEXT: tl.constexpr,
):  # fmt: skip
    wait_for_prior_kernel(WAIT_PRIOR, LAUNCH_NEXT)
    expert = tl.program_id(0)
    count = expert_slots(topk_ids_ptr, expert, num_slots, 0, SCAN, BLOCK_M)[2]
    k1_steps = tl.cdiv(K, BLOCK_K1)
    k2_steps = tl.cdiv(I, BLOCK_K2)
    n1_blocks = tl.cdiv(I, BLOCK_N1)
    n2_blocks = tl.cdiv(K, BLOCK_N2)
    offs_k1 = tl.arange(0, BLOCK_K1)
    offs_k2 = tl.arange(0, BLOCK_K2)
    offs_n1 = tl.arange(0, BLOCK_N1)
    offs_n2 = tl.arange(0, BLOCK_N2)
    gate_row0 = (expert * 2 * I).to(tl.int32)
    w2_row0 = (expert * K).to(tl.int32)
    for m_block in range(0, tl.cdiv(count, BLOCK_M)):
        slots, slot_ok, _unused = expert_slots(
            topk_ids_ptr, expert, num_slots, m_block, SCAN, BLOCK_M
        )
        tokens = slots // TOP_K
        gate_acc = tl.zeros([BLOCK_M, BLOCK_N1], tl.float32)
        up_acc = tl.zeros([BLOCK_M, BLOCK_N1], tl.float32)
        for step in tl.range(0, n1_blocks * k1_steps, num_stages=STAGES1):
            n_block = step // k1_steps
            k_start = (step % k1_steps) * BLOCK_K1
            a = tl.load(
                x_ptr + tokens[:, None] * K + (k_start + offs_k1)[None, :],
                mask=slot_ok[:, None] & (k_start + offs_k1 < K)[None, :],
                other=0.0,
            )
            gate = w1_desc.load([gate_row0 + n_block * BLOCK_N1, k_start]).T
            up = w1_desc.load([gate_row0 + I + n_block * BLOCK_N1, k_start]).T
            keep = (step % k1_steps != 0).to(tl.float32)
            gate_acc = tl.dot(a, gate, gate_acc * keep)
            up_acc = tl.dot(a, up, up_acc * keep)
            if step % k1_steps == k1_steps - 1:
                cols = n_block * BLOCK_N1 + offs_n1
                activated = gate_acc * tl.sigmoid(gate_acc) * up_acc
                tl.store(act_ptr + slots[:, None] * I + cols[None, :],
                         activated.to(act_ptr.dtype.element_ty),
                         mask=slot_ok[:, None] & (cols < I)[None, :],
                         eviction_policy=ACT_EVICTION)  # fmt: skip
        # every warp's activated rows are in memory before any warp reads them back
        tl.debug_barrier()
        weight = tl.load(topk_weights_ptr + slots, mask=slot_ok, other=0.0).to(tl.float32)
        acc = tl.zeros([BLOCK_M, BLOCK_N2], tl.float32)
        for step in tl.range(0, n2_blocks * k2_steps, num_stages=STAGES2):
            n_block = step // k2_steps
            k_start = (step % k2_steps) * BLOCK_K2
            a = tl.load(
                act_ptr + slots[:, None] * I + (k_start + offs_k2)[None, :],
                mask=slot_ok[:, None] & (k_start + offs_k2 < I)[None, :],
                other=0.0,
            )
            b = w2_desc.load([w2_row0 + n_block * BLOCK_N2, k_start]).T
            keep = (step % k2_steps != 0).to(tl.float32)
            acc = tl.dot(a, b, acc * keep)
            if step % k2_steps == k2_steps - 1:
                cols = n_block * BLOCK_N2 + offs_n2
                tl.store(rows_ptr + slots[:, None] * K + cols[None, :],
                         (acc * weight[:, None]).to(rows_ptr.dtype.element_ty),
                         mask=slot_ok[:, None] & (cols < K)[None, :])  # fmt: skip
        tl.debug_barrier()  # the next m-block's activated rows overwrite none still read


def expert_programs(x, w1, w2, topk_weights, topk_ids, variant: dict, out=None):
    """``[M, K]``: the prototype kernel into per-slot rows, then ``moe_sum``."""
    from triton.tools.tensor_descriptor import TensorDescriptor

    from moekit.align import moe_sum

    num_experts, n, hidden = w1.shape
    inter = n // 2
    tokens, top_k = topk_ids.shape
    num_slots = tokens * top_k
    activated = x.new_empty(num_slots, inter)
    rows = x.new_empty(num_slots, hidden)
    w1_desc = TensorDescriptor.from_tensor(w1.view(-1, hidden),
                                           [variant["BLOCK_N1"], variant["BLOCK_K1"]])  # fmt: skip
    w2_desc = TensorDescriptor.from_tensor(w2.view(-1, inter),
                                           [variant["BLOCK_N2"], variant["BLOCK_K2"]])  # fmt: skip
    pdl = variant.get("pdl", False)
    kernel_args = {k: v for k, v in variant.items() if k not in ("num_warps", "pdl")}
    expert_program_kernel[(num_experts,)](
        x, w1_desc, w2_desc, activated, rows, topk_ids.reshape(-1),
        topk_weights.reshape(-1).float(), num_slots, hidden, inter, TOP_K=top_k,
        SCAN=min(256, triton.next_power_of_2(num_slots)), num_warps=variant["num_warps"],
        WAIT_PRIOR=pdl, LAUNCH_NEXT=pdl, **kernel_args, **launch_options(pdl),
    )  # fmt: skip
    if out is None:
        out = x.new_empty(tokens, hidden)
    return moe_sum(rows.view(tokens, top_k, hidden), out, backend="triton",
                   programmatic_launch=pdl)  # fmt: skip


def variants_for(tokens: int) -> dict[str, dict]:
    """The variants timed at ``tokens``; ``VARIANTS`` (``--variants``) picks among them."""
    block_m = 16 if tokens <= 64 else 64
    base = dict(BLOCK_M=block_m, BLOCK_N1=64, BLOCK_K1=128, BLOCK_N2=128, BLOCK_K2=128,
                STAGES1=4, STAGES2=4, ACT_EVICTION="evict_last", num_warps=4)  # fmt: skip
    variants = {
        "n64_k128_s4": base,
        "n64_k128_s3": {**base, "STAGES1": 3, "STAGES2": 3},
        "n64_k128_s5": {**base, "STAGES1": 5, "STAGES2": 5},
        "n128_k64_s4": {**base, "BLOCK_N1": 128, "BLOCK_K1": 64},
        "n64_k64_s6": {**base, "BLOCK_K1": 64, "STAGES1": 6, "BLOCK_K2": 64, "STAGES2": 6},
        "n2_64": {**base, "BLOCK_N2": 64},
        "n2_256_k64": {**base, "BLOCK_N2": 256, "BLOCK_K2": 64},
        "warps8": {**base, "num_warps": 8},
        "pdl": {**base, "pdl": True},
        "warps8_pdl": {**base, "num_warps": 8, "pdl": True},
        "act_default_policy": {**base, "ACT_EVICTION": ""},
        "m32_pdl": {**base, "BLOCK_M": 32, "pdl": True},
        "m32_w8_pdl": {**base, "BLOCK_M": 32, "num_warps": 8, "pdl": True},
        "m32_n2_64_pdl": {**base, "BLOCK_M": 32, "BLOCK_N2": 64, "pdl": True},
        "m64_pdl": {**base, "BLOCK_M": 64, "pdl": True},
    }
    return {name: variants[name] for name in VARIANTS or variants}


VARIANTS: list[str] = []


def main() -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from bench_fused_moe import cell_parser, measured_ceilings, routed_calls
    from common import environment, relative_error, time_us, write_json

    parser = cell_parser(__doc__.splitlines()[0], TOKENS)
    parser.set_defaults(shapes=list(SHAPE_NAMES))
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--variants", nargs="+", default=[])
    args = parser.parse_args()
    VARIANTS.extend(args.variants)
    bandwidth, tflops = measured_ceilings()
    rows = []
    for call in routed_calls(args.shapes, args.tokens):
        floor = call.floor_us(bandwidth, tflops)
        want = call()
        row: dict[str, object] = dict(shape=call.shape, tokens=call.tokens, floor_us=floor,
                                      active_experts=call.ids.unique().numel())  # fmt: skip
        fns = {"shipped": call}
        for name, variant in variants_for(call.tokens).items():

            def fn(variant=variant):  # type: ignore[no-untyped-def]
                return expert_programs(call.x, call.w1, call.w2, call.weights, call.ids, variant)

            try:
                got = fn()
                torch.cuda.synchronize()
            except Exception as error:  # a variant that does not compile or fit is recorded
                row[f"{name}_error"] = f"{type(error).__name__}: {str(error)[-1500:]}"
                continue
            row[f"{name}_bit_identical"] = bool(torch.equal(got, want))
            row[f"{name}_rel_err"] = relative_error(got, want)
            fns[name] = fn
        times: dict[str, list[float]] = {name: [] for name in fns}
        for round_index in range(args.rounds):
            order = list(fns) if round_index % 2 == 0 else list(reversed(fns))
            for name in order:
                times[name].append(time_us(fns[name], graph=True)[0])
        base = statistics.median(times["shipped"])
        row["shipped_us"] = base
        line = f"{call.shape:18s} M={call.tokens:5d} shipped {base:7.1f} ({base / floor:.3f}x)"
        for name in fns:
            if name == "shipped":
                continue
            us = statistics.median(times[name])
            row[f"{name}_us"] = us
            row[f"{name}_pct"] = 100 * (us / base - 1)
            same = "" if row[f"{name}_bit_identical"] else f" err {row[f'{name}_rel_err']:.1e}"
            line += f"  {name} {us / floor:.3f}x{same}"
        print(line, flush=True)
        rows.append(row)
        write_json(args.out, dict(environment=environment(), bandwidth_gbps=bandwidth,
                                  matmul_tflops=tflops, rows=rows))  # fmt: skip


if __name__ == "__main__":
    main()
