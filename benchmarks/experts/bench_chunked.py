"""The Triton experts on weights in K chunks (``chunk_weights``) against the weights as stored.

For each model shape and token count (``bench_fused_moe.py``'s cells and routing): both calls'
outputs must be equal bit for bit; then each is timed inside a CUDA graph (median of
``do_bench_cudagraph``), the two in turn for ``--rounds`` rounds, and the best median of each
is kept, so that a drift of the GPU's clock between them does not read as a difference. Every
time is reported beside the cell's floor. Prints the table (time / floor as stored, with chunks,
and the change) and writes JSON.

    python benchmarks/experts/bench_chunked.py --out benchmarks/results/experts_chunked_path_h100.json
    python benchmarks/experts/bench_chunked.py --from benchmarks/results/experts_chunked_path_h100.json

``--widths 64 128`` times chunks of both widths (``chunk_weights(w, width)``) in the same turns.
``--untuned`` also times each width with the entries tuned on the weights as stored, where a
table of chunk entries (``tune.py --chunks``) would otherwise serve the call.
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import sys
from pathlib import Path
from unittest import mock

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_fused_moe import (
    SHAPES,
    TOKENS,
    add_skew_argument,
    busiest_over_mean,
    measured_ceilings,
    measured_or_loaded,
    routed_calls,
    shape_table,
)


def measure(args: argparse.Namespace) -> dict:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    import torch
    from common import environment, time_us

    from moekit.experts import chunk_weights, triton_experts

    bandwidth, tflops = measured_ceilings()
    rows = []
    for shape in args.shapes:
        chunks: dict[tuple[int, int], torch.Tensor] = {}
        for call in routed_calls([shape], args.tokens, args.skew):
            if not chunks:  # once per shape: the calls of a shape share its weights
                chunks = {(id(w), width): chunk_weights(w, width)
                          for w in (call.w1, call.w2) for width in args.widths}  # fmt: skip
            layouts = {"stored": call}
            for width in args.widths:
                layouts[f"chunks{width}"] = call._replace(w1=chunks[id(call.w1), width],
                                                          w2=chunks[id(call.w2), width])  # fmt: skip
            if args.untuned:
                for width in args.widths:
                    layouts[f"chunks{width}_untuned"] = stored_entries(layouts[f"chunks{width}"])
            chunked = layouts[f"chunks{args.widths[0]}"]
            want = call()
            identical = all(bool(torch.equal(want, layout())) for layout in layouts.values())
            times: dict[str, list[float]] = {name: [] for name in layouts}
            for _ in range(args.rounds):
                for name, layout in layouts.items():
                    times[name].append(time_us(layout, graph=True)[0])
            if args.flip_programs:  # the chunks again, the other way round on that path
                flip = not triton_experts.EXPERT_PROGRAMS_ON_CHUNKS
                with mock.patch.object(triton_experts, "EXPERT_PROGRAMS_ON_CHUNKS", flip):
                    identical = identical and bool(torch.equal(call(), chunked()))
                    times["chunked_flipped"] = [time_us(chunked, graph=True)[0]
                                                for _ in range(args.rounds)]  # fmt: skip
            if args.also:  # the chunks again, with the given module attributes set
                with contextlib.ExitStack() as stack:
                    for target, value in args.also:
                        stack.enter_context(mock.patch(target, value))
                    identical = identical and bool(torch.equal(call(), chunked()))
                    times["chunked_also"] = [time_us(chunked, graph=True)[0]
                                             for _ in range(args.rounds)]  # fmt: skip
            floor = call.floor_us(bandwidth, tflops)
            row = dict(shape=shape, tokens=call.tokens, floor_us=floor, skew=args.skew,
                       busiest_over_mean=busiest_over_mean(call.ids, call.w1.shape[0]),
                       bit_identical=identical, stored_us=min(times["stored"]),
                       chunked_us=min(times[f"chunks{args.widths[0]}"]), rounds_us=times,
                       width=args.widths[0])  # fmt: skip
            if len(args.widths) > 1:
                row["widths_us"] = {str(w): min(times[f"chunks{w}"]) for w in args.widths}
            if args.untuned:
                row["untuned_us"] = {str(w): min(times[f"chunks{w}_untuned"]) for w in args.widths}
            if args.flip_programs:
                row["chunked_flipped_us"] = min(times["chunked_flipped"])
            if args.also:
                row["chunked_also_us"] = min(times["chunked_also"])
                row["also"] = [f"{target}={value}" for target, value in args.also]
            print(f"{shape:18s} M={call.tokens:5d} busiest {row['busiest_over_mean']:.2f}x: "
                  f"identical {identical}  as stored "
                  f"{row['stored_us']:9.1f} us ({row['stored_us'] / floor:5.3f}x)", flush=True)  # fmt: skip
            for width in args.widths:
                us = min(times[f"chunks{width}"])
                print(f"{'':18s} chunks of {width:3d}: {us:9.1f} us ({us / floor:5.3f}x)  "
                      f"{us / row['stored_us'] - 1:+.1%}", flush=True)  # fmt: skip
                if args.untuned:
                    us = row["untuned_us"][str(width)]
                    print(f"{'':18s}   stored's entries: {us:9.1f} us ({us / floor:5.3f}x)  "
                          f"{us / row['stored_us'] - 1:+.1%}", flush=True)  # fmt: skip
            if args.flip_programs:
                print(f"{'':18s} chunks, EXPERT_PROGRAMS_ON_CHUNKS flipped: "
                      f"{row['chunked_flipped_us']:9.1f} us "
                      f"({row['chunked_flipped_us'] / row['stored_us'] - 1:+.1%})", flush=True)  # fmt: skip
            if args.also:
                print(f"{'':18s} chunks with {' '.join(row['also'])}: "
                      f"{row['chunked_also_us']:9.1f} us "
                      f"({row['chunked_also_us'] / row['stored_us'] - 1:+.1%})", flush=True)  # fmt: skip
            rows.append(row)
            if not identical:
                raise SystemExit(f"{shape} at {call.tokens} tokens: the chunks' output differs")
        del chunks
        torch.cuda.empty_cache()
    return dict(environment=environment(), bandwidth_gbps=bandwidth, matmul_tflops=tflops,
                rounds=args.rounds, widths=args.widths, rows=rows)  # fmt: skip


def stored_entries(call):  # type: ignore[no-untyped-def]
    """``call`` served by the entries tuned on the weights as stored, whatever tables of chunk
    entries exist (the host picks the entry, so a CUDA graph captured through it keeps them)."""

    def run():  # type: ignore[no-untyped-def]
        with mock.patch("moekit.experts.triton_experts.table_chunk_width", lambda *_: 0):
            return call()

    return run


def module_setting(text: str) -> tuple[str, object]:
    """``"triton_experts.NAME=VALUE"`` as ``("moekit.experts.triton_experts.NAME", value)``,
    the value read as a Python literal."""
    target, _, value = text.partition("=")
    if not value:
        raise argparse.ArgumentTypeError(f"{text!r}: MODULE.NAME=VALUE")
    return f"moekit.experts.{target}", ast.literal_eval(value)


def table(rows: list[dict], width: int | None = None) -> str:
    """Markdown: one line per shape, each cell ``as stored -> chunks`` in time / floor (chunks of
    ``width`` columns where given, else of the run's first width)."""

    def cell(row: dict) -> str:
        chunked_us = row["widths_us"][str(width)] if width else row["chunked_us"]
        stored, chunked = row["stored_us"] / row["floor_us"], chunked_us / row["floor_us"]
        return f"{stored:.3f} → {chunked:.3f} ({chunked / stored - 1:+.1%})"

    return shape_table(rows, cell)


def widths_table(rows: list[dict]) -> str:
    """Markdown of a run with several ``--widths``: each cell the time / floor as stored, then
    the change with chunks of each width."""

    def cell(row: dict) -> str:
        changes = " / ".join(f"{us / row['stored_us'] - 1:+.1%}"
                             for us in row["widths_us"].values())  # fmt: skip
        return f"{row['stored_us'] / row['floor_us']:.3f}: {changes}"

    return shape_table(rows, cell)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, help="measure on the GPU and write JSON here")
    parser.add_argument("--from", dest="source", type=Path, help="a JSON already written")
    parser.add_argument("--shapes", nargs="+", default=list(SHAPES), choices=list(SHAPES))
    parser.add_argument("--tokens", nargs="+", type=int, default=list(TOKENS))
    parser.add_argument("--rounds", type=int, default=2, help="times each layout in turn")
    parser.add_argument("--widths", nargs="+", type=int, default=[64], choices=[64, 128],
                        help="chunk widths (columns) to time; the table shows the first")  # fmt: skip
    parser.add_argument("--show-width", type=int, choices=[64, 128],
                        help="the table's chunk width, of a run with several --widths")  # fmt: skip
    add_skew_argument(parser)
    parser.add_argument("--untuned", action="store_true",
                        help="also time each width with the stored layout's entries")  # fmt: skip
    parser.add_argument("--flip-programs", action="store_true",
                        help="also time the chunks with EXPERT_PROGRAMS_ON_CHUNKS flipped")  # fmt: skip
    parser.add_argument("--also", nargs="+", type=module_setting, default=[],
                        metavar="MODULE.NAME=VALUE",
                        help="also time the chunks with these attributes of moekit.experts' "
                             "modules set, e.g. triton_experts.EXPERT_PROGRAMS_ON_CHUNKS=False")  # fmt: skip
    args = parser.parse_args()
    result = measured_or_loaded(parser, args, measure)
    if args.show_width is None and "widths_us" in result["rows"][0]:
        print(widths_table(result["rows"]))
    else:
        print(table(result["rows"], args.show_width))


if __name__ == "__main__":
    main()
