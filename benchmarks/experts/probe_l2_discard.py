"""Whether a call gains from dropping its scratch rows from L2 without writing them back (GPU,
bf16, CUDA graph; NOTES lever 52).

GEMM2 stores the ``[M·k, K]`` slot rows (``workspace13``) and GEMM1 the activated rows
(``workspace2``); once the top-k sum has read them they are dead, but L2 holds them dirty and
writes them back to HBM when the next call's weights evict them, so they cost HBM bandwidth in
the next call. PTX's ``discard.global.L2`` drops a 128-byte line without writing it back. Here
one kernel appended to each call discards every line wholly inside the chosen workspaces; the
reference, ``none``, launches the same kernel with no line to discard, so that every variant
pays the same launch. Variants: ``rows`` (``workspace13``), ``activated`` (``workspace2``),
``both``. Every variant's output must equal ``none``'s bit for bit, also over graph replays.
Each round times the variants in turn, in alternating order. Writes JSON.

    python benchmarks/experts/probe_l2_discard.py --out d.json --shapes qwen3-30b-a3b-tp2 \
        --tokens 256 1024
"""

from __future__ import annotations

import statistics
import sys
from pathlib import Path

import torch
import triton
import triton.language as tl

TOKENS = (16, 64, 256, 1024, 4096)
LINE_BYTES = 128
LINES_PER_PROGRAM = 1024


@triton.jit
def discard_lines_kernel(rows_ptr, first_element, num_lines, LINES: tl.constexpr):
    """Drop lines ``[0, num_lines)`` of 128 bytes from L2, the first at element
    ``first_element`` of ``rows_ptr`` (16-bit elements); nothing is written back."""
    lines = tl.program_id(0) * LINES + tl.arange(0, LINES)
    addresses = rows_ptr + first_element + lines.to(tl.int64) * 64
    tl.inline_asm_elementwise(
        asm="{ .reg .pred p; setp.ne.b32 p, $2, 0; @p discard.global.L2 [$1], 128; "
        "mov.u32 $0, 0; }",
        constraints="=r,l,r",
        args=[addresses, (lines < num_lines).to(tl.int32)],
        dtype=tl.int32,
        is_pure=False,
        pack=1,
    )


def whole_lines(rows: torch.Tensor) -> tuple[int, int]:
    """``(first element, lines)``: the 128-byte lines wholly inside ``rows``' bytes."""
    if rows.element_size() != 2 or not rows.is_contiguous():
        raise TypeError("the probe discards contiguous 16-bit rows only")
    start = rows.data_ptr()
    skip = -start % LINE_BYTES
    return skip // 2, max(0, (rows.numel() * 2 - skip) // LINE_BYTES)


class Discard:
    """Which workspaces the appended kernel discards (patched by ``compare_in_turn``)."""

    rows = False
    activated = False


def discarding_call(call, recorded: list[torch.Tensor]):  # type: ignore[no-untyped-def]
    """``call("triton")`` followed by the discard kernel over the workspaces ``Discard`` names;
    ``recorded`` gathers the call's allocations (output, workspace13, workspace2)."""

    def run() -> torch.Tensor:
        recorded.clear()
        out = call("triton")
        workspace13, workspace2 = recorded[1], recorded[2]
        for tensor, chosen in ((workspace13, Discard.rows), (workspace2, Discard.activated)):
            first, lines = whole_lines(tensor)
            grid = (triton.cdiv(max(lines, 1), LINES_PER_PROGRAM),)
            discard_lines_kernel[grid](tensor, first, lines if chosen else 0,
                                       LINES=LINES_PER_PROGRAM)  # fmt: skip
        recorded.clear()  # the workspaces go back to the allocator, as in a plain call
        return out

    return run


def main() -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from unittest import mock

    from bench_fused_moe import busiest_over_mean, cell_parser, measured_ceilings, routed_calls
    from common import compare_in_turn, environment, write_json

    import moekit.experts.kernel as kernel_module

    parser = cell_parser(__doc__.splitlines()[0], TOKENS)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    settings = {
        "none": {"rows": False, "activated": False},
        "rows": {"rows": True, "activated": False},
        "activated": {"rows": False, "activated": True},
        "both": {"rows": True, "activated": True},
    }
    recorded: list[torch.Tensor] = []
    allocate = kernel_module.allocate_workspace

    def recording_allocate(*shape_device_dtype):  # type: ignore[no-untyped-def]
        tensor = allocate(*shape_device_dtype)
        recorded.append(tensor)
        return tensor

    bandwidth, tflops = measured_ceilings()
    rows = []
    with mock.patch.object(kernel_module, "allocate_workspace", recording_allocate):
        for call in routed_calls(args.shapes, args.tokens, args.skew):
            floor = call.floor_us(bandwidth, tflops)
            run = discarding_call(call, recorded)
            times, same = compare_in_turn(run, Discard, settings, "none", args.rounds)
            base = statistics.median(times["none"])
            row: dict[str, object] = dict(
                shape=call.shape, tokens=call.tokens, floor_us=floor, skew=args.skew,
                busiest_over_mean=busiest_over_mean(call.ids, call.w1.shape[0]),
                none_us=base, none_times=times["none"],
            )  # fmt: skip
            line = f"{call.shape:18s} M={call.tokens:5d} none {base:8.1f} ({base / floor:.3f}x)"
            for name in ("rows", "activated", "both"):
                us = statistics.median(times[name])
                row.update({f"{name}_us": us, f"{name}_times": times[name],
                            f"{name}_pct": 100 * (us / base - 1),
                            f"{name}_bit_identical": same[name]})  # fmt: skip
                line += f"  {name} {row[f'{name}_pct']:+.2f}%" + ("" if same[name] else " DIFFERS")
            print(line, flush=True)
            rows.append(row)
            write_json(args.out, dict(environment=environment(), bandwidth_gbps=bandwidth,
                                      matmul_tflops=tflops, rounds=args.rounds, rows=rows))  # fmt: skip


if __name__ == "__main__":
    main()
