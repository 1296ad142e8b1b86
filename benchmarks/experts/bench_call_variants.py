"""Whole ``TritonExperts`` calls under variants of the module constants that steer them (GPU,
bf16, CUDA graph), against the shipped values.

Groups: ``align`` (``moekit.align``'s ``launch_config``, the alignment pass's chunks; see
``bench_align.py --sweep-only`` for the kernels alone), ``sum`` (its ``reduce``, ``moe_sum``'s
launch; ``bench_moe_sum.py``), ``rows`` (``row_cache``, the L2 eviction priority of the rows
GEMM1 and GEMM2 store for the next kernel), ``programs`` (lever 42's one program per expert,
where the table's entry asks for it, against the aligned path), ``programs_forced`` (that
path on every call, against the shipped rule), ``programs_tiles`` (that path forced with the
tiles of ``PROGRAM_TILES``, lever 43) and ``programs_blocks`` (the shipped rule with other
block heights or more workers, lever 43; with ``--skew`` for routing that favours some
experts); ``entries`` times the shipped tables against the
entries of the table files given with ``--entries`` (say, an older commit's). The ``weights``
group of lever 38 (an L2 eviction policy on the GEMMs' weight loads) is in this script at
438796b, the ``intermediate`` group of lever 40 (GEMM1's activated rows in the aligned order)
at ab0e987. A variant's output must equal the
shipped one bit for bit, also over CUDA-graph replays. Each round times every variant of a
group and the shipped values, in turn, in alternating order; the row keeps each median over the
rounds, beside the floor of ``bench_fused_moe.py``. Writes JSON.

    python benchmarks/experts/bench_call_variants.py --groups align --out benchmarks/results/experts_align_chunks_h100.json
"""

from __future__ import annotations

import statistics
import sys
from pathlib import Path

TOKENS = (16, 64, 256, 1024)
# group: (module, shipped values, {variant: values})
GROUPS = {
    "align": (
        "moekit.align._triton_impl.launch_config",
        {"SINGLE_CHUNK_MAX_SLOTS": 512, "SHORT_CHUNK": 512},
        {
            "align_one_chunk": {"SINGLE_CHUNK_MAX_SLOTS": 2048},  # the rule before
            "align_chunks_of_256": {"SHORT_CHUNK": 256},
        },
    ),
    "rows": (  # lever 41: the rows a GEMM stores for the next kernel kept in L2
        "moekit.experts._triton_impl.row_cache",
        {
            "ACTIVATED_ROWS_EVICTION": "evict_last",
            "SLOT_ROWS_EVICTION": "evict_last",
            "SLOT_ROWS_MAX_BYTES": 12 << 20,
            "SLOT_ROWS_MIN_EXPERTS": 32,
        },
        {
            "rows_default_policy": {"ACTIVATED_ROWS_EVICTION": "", "SLOT_ROWS_EVICTION": ""},
            "activated_rows_only": {"SLOT_ROWS_EVICTION": ""},
            "slot_rows_any_size": {"SLOT_ROWS_MAX_BYTES": 1 << 62},
            "slot_rows_few_experts": {"SLOT_ROWS_MIN_EXPERTS": 1},
        },
    ),
    "sum": (  # nothing in it moved a call by more than 0.2% (f06acac, one chunk up to 2048 slots)
        "moekit.align._triton_impl.reduce",
        {"_SUM_MIN_PROGRAMS": 256, "_SUM_MAX_BLOCK_H": 1024, "_SUM_MAX_WARPS": 4},
        {
            "sum_2048_columns": {"_SUM_MAX_BLOCK_H": 2048, "_SUM_MAX_WARPS": 8},
            "sum_512_programs": {"_SUM_MIN_PROGRAMS": 512},
        },
    ),
}


def entries_group(files: list[Path]) -> tuple[str, dict, dict]:
    """A group that patches ``configs.device_table`` so that each of ``files`` (named as the
    shipped tables) replaces, entry for entry, the shipped table of its name (``--entries``).
    ``ENTRIES_SERVED`` counts the calls it served, so that a replacement nobody used shows."""
    import json

    import torch

    from moekit.experts._triton_impl import configs

    shipped = configs.device_table
    replaced = {
        f.name: {int(m): configs.GemmConfig(**c) for m, c in json.loads(f.read_text()).items()}
        for f in files
    }

    def device_table(num_experts, n, dtype, device, chunks=0):  # type: ignore[no-untyped-def]
        table = shipped(num_experts, n, dtype, device, chunks)
        name = configs.table_name(num_experts, n, dtype, torch.cuda.get_device_name(device),
                                  chunks)  # fmt: skip
        if name not in replaced:
            return table
        ENTRIES_SERVED[name] = ENTRIES_SERVED.get(name, 0) + 1
        return {**(table or {}), **replaced[name]}

    variant = {"device_table": device_table}
    return "moekit.experts._triton_impl.configs", {"device_table": shipped}, {"entries": variant}


ENTRIES_SERVED: dict[str, int] = {}


def programs_group() -> tuple[str, dict, dict]:
    """Lever 42's path where the table's entry asks for it (the shipped rule), against the
    aligned path on every call (``expert_programs_serve`` patched)."""
    from moekit.experts import triton_experts

    def never(config, num_slots, num_local_experts):  # type: ignore[no-untyped-def]
        return False

    shipped = {"expert_programs_serve": triton_experts.expert_programs_serve}
    return "moekit.experts.triton_experts", shipped, {"aligned": {"expert_programs_serve": never}}


def programs_blocks_group() -> tuple[str, dict, dict]:
    """Lever 42's path under the shipped rule with other block heights or more workers
    (``expert_programs``'s constants, set as each call is captured), and the aligned path."""
    from moekit.experts import triton_experts
    from moekit.experts._triton_impl import expert_programs

    shipped_serve = triton_experts.expert_programs_serve
    names = ("BLOCK_M_BY_MEAN_ROWS", "BLOCK_M_MAX", "MIN_WORKERS")
    shipped = {n: getattr(expert_programs, n) for n in names}
    settings = {
        "shipped": {},
        "blocks_64_above_4": {"BLOCK_M_BY_MEAN_ROWS": ((4, 16),), "BLOCK_M_MAX": 64},
        "blocks_32_above_4": {"BLOCK_M_BY_MEAN_ROWS": ((4, 16),), "BLOCK_M_MAX": 32},
        "workers_all_sms": {"MIN_WORKERS": 132},
    }

    def serve_with(changes: dict | None):  # type: ignore[no-untyped-def]
        def serve(config, num_slots, num_local_experts):  # type: ignore[no-untyped-def]
            for name, value in {**shipped, **(changes or {})}.items():
                setattr(expert_programs, name, value)
            return changes is not None and shipped_serve(config, num_slots, num_local_experts)

        return serve

    variants = {n: {"expert_programs_serve": serve_with(c)} for n, c in settings.items()}
    variants["aligned"] = {"expert_programs_serve": serve_with(None)}
    shipped_setting = variants.pop("shipped")
    return "moekit.experts.triton_experts", shipped_setting, variants


def programs_forced_group() -> tuple[str, dict, dict]:
    """Lever 42's path on every call, whatever the entry and the row limit say
    (``expert_programs_serve`` patched), against the shipped rule."""
    from moekit.experts import triton_experts

    shipped = triton_experts.expert_programs_serve

    def forced(config, num_slots, num_local_experts):  # type: ignore[no-untyped-def]
        return True

    module = "moekit.experts.triton_experts"
    return module, {"expert_programs_serve": shipped}, {"programs_forced": {
        "expert_programs_serve": forced}}  # fmt: skip


# lever 43: the one-program path forced, at taller blocks and their tiles
# (rows per block, BLOCK_N1, BLOCK_K1, BLOCK_N2, BLOCK_K2, STAGES, NUM_WARPS); rows 0 means the
# smallest power of two at least 1.5 times the mean slots per local expert
PROGRAM_TILES = {
    "tile_shipped": (0, 64, 128, 128, 128, 4, 4),
    "tile_k64": (0, 64, 64, 128, 64, 4, 4),
    "tile_k64_w8": (0, 64, 64, 128, 64, 4, 8),
    "tile_k64_w8_s6": (0, 64, 64, 128, 64, 6, 8),
    "tile_k128_w8_s3": (0, 64, 128, 128, 128, 3, 8),
    "tile_k128_k64_w8": (0, 64, 128, 128, 64, 4, 8),
    "tile_n1_128_w8_s3": (0, 128, 64, 128, 64, 3, 8),
    "tile_n2_256_w8_s3": (0, 64, 64, 256, 64, 3, 8),
    "tile_64_rows": (64, 64, 128, 128, 128, 4, 4),
    "tile_k128_w8_s2": (0, 64, 128, 128, 128, 2, 8),
    "tile_k128_w8_s4": (0, 64, 128, 128, 128, 4, 8),
    "tile_k128_w4_s3": (0, 64, 128, 128, 128, 3, 4),
    "tile_k128_n2_64_w8_s3": (0, 64, 128, 64, 128, 3, 8),
    "tile_64_rows_k128_w8_s3": (64, 64, 128, 128, 128, 3, 8),
}


def programs_tiles_group(names: list[str]) -> tuple[str, dict, dict]:
    """Lever 42's path on every call with each tile of ``PROGRAM_TILES`` named in ``names``
    (``expert_programs_serve`` patched to set the tile), against the shipped rule."""
    from moekit.experts import triton_experts
    from moekit.experts._triton_impl import expert_programs

    shipped_serve = triton_experts.expert_programs_serve
    shipped_tile = {n: getattr(expert_programs, n) for n in (
        "block_m", "BLOCK_N1", "BLOCK_K1", "BLOCK_N2", "BLOCK_K2", "STAGES", "NUM_WARPS",
        "TALL_STAGES", "TALL_NUM_WARPS")}  # fmt: skip

    def rows_rule(rows: int):  # type: ignore[no-untyped-def]
        def block_m(num_slots: int, num_local_experts: int) -> int:
            if rows:
                return rows
            mean = -(-num_slots // num_local_experts)
            return max(16, 1 << (-(-3 * mean // 2) - 1).bit_length())

        return block_m

    def serve_with(tile: dict | None):  # type: ignore[no-untyped-def]
        def serve(config, num_slots, num_local_experts):  # type: ignore[no-untyped-def]
            for name, value in (tile or shipped_tile).items():
                setattr(expert_programs, name, value)
            return True if tile else shipped_serve(config, num_slots, num_local_experts)

        return serve

    variants = {}
    for name in names:
        rows, n1, k1, n2, k2, stages, warps = PROGRAM_TILES[name]
        tile = dict(block_m=rows_rule(rows), BLOCK_N1=n1, BLOCK_K1=k1, BLOCK_N2=n2, BLOCK_K2=k2,
                    STAGES=stages, NUM_WARPS=warps, TALL_STAGES=stages,
                    TALL_NUM_WARPS=warps)  # fmt: skip
        variants[name] = {"expert_programs_serve": serve_with(tile)}
    module = "moekit.experts.triton_experts"
    return module, {"expert_programs_serve": serve_with(None)}, variants


def output_under(call, module: object, setting: dict[str, object]):  # type: ignore[no-untyped-def]
    """The call's output with ``module``'s attributes patched to ``setting``, then restored."""
    saved = {name: getattr(module, name) for name in setting}
    try:
        for name, value in setting.items():
            setattr(module, name, value)
        return call().clone()
    finally:
        for name, value in saved.items():
            setattr(module, name, value)


def main() -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import importlib

    from bench_fused_moe import busiest_over_mean, cell_parser, measured_ceilings, routed_calls
    from common import compare_in_turn, environment, relative_error, write_json
    from triton.runtime.errors import OutOfResources

    parser = cell_parser(__doc__.splitlines()[0], TOKENS)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--groups", nargs="+", default=["align"],
                        choices=[*GROUPS, "entries", "programs", "programs_forced", "programs_tiles",
                                 "programs_blocks"])  # fmt: skip
    parser.add_argument("--tiles", nargs="+", default=list(PROGRAM_TILES),
                        choices=list(PROGRAM_TILES), help="the programs_tiles group's tiles")  # fmt: skip
    parser.add_argument("--entries", type=Path, nargs="+", default=[],
                        help="the entries group: table files (named as the shipped ones) whose "
                             "entries replace the shipped table's")  # fmt: skip
    args = parser.parse_args()
    groups = dict(GROUPS)
    if "entries" in args.groups:
        groups["entries"] = entries_group(args.entries)
    if "programs" in args.groups:
        groups["programs"] = programs_group()
    if "programs_blocks" in args.groups:
        groups["programs_blocks"] = programs_blocks_group()
    if "programs_forced" in args.groups:
        groups["programs_forced"] = programs_forced_group()
    if "programs_tiles" in args.groups:
        groups["programs_tiles"] = programs_tiles_group(args.tiles)
    bandwidth, tflops = measured_ceilings()
    rows = []
    for call in routed_calls(args.shapes, args.tokens, args.skew):
        floor = call.floor_us(bandwidth, tflops)
        busiest = busiest_over_mean(call.ids, call.w1.shape[0])
        row: dict[str, object] = dict(shape=call.shape, tokens=call.tokens, floor_us=floor,
                                      skew=args.skew, busiest_over_mean=busiest)  # fmt: skip
        for group in args.groups:
            module_name, shipped, variants = groups[group]
            module = importlib.import_module(module_name)
            settings = {"shipped": shipped, **{n: {**shipped, **v} for n, v in variants.items()}}
            for name in list(variants):  # say so, and go on without it, where a tile cannot run
                try:
                    output_under(call, module, settings[name])
                except OutOfResources as error:
                    print(f"{call.shape} M={call.tokens} {name}: left out ({error})", flush=True)
                    row[f"{name}_left_out"] = str(error)
                    del settings[name]
            variants = {n: v for n, v in variants.items() if n in settings}
            times, same = compare_in_turn(call, module, settings, "shipped", args.rounds)
            base = statistics.median(times["shipped"])
            row[f"{group}_shipped_us"] = base
            line = (f"{call.shape:18s} M={call.tokens:5d} busiest {busiest:.2f}x {group}: "
                    f"shipped {base:8.1f} ({base / floor:.3f}x)")  # fmt: skip
            for name in variants:
                us = statistics.median(times[name])
                row[f"{name}_us"] = us
                row[f"{name}_pct"] = 100 * (us / base - 1)
                row[f"{name}_bit_identical"] = same[name]
                line += f"  {name} {row[f'{name}_pct']:+.2f}%"
                if not same[name]:  # how far from the shipped output, not only whether
                    want = output_under(call, module, settings["shipped"]).float()
                    got = output_under(call, module, settings[name]).float()
                    error = relative_error(got, want)
                    row[f"{name}_relative_error"] = error
                    line += f" DIFFERS (relative error {error:.1e})"
            print(line, flush=True)
        rows.append(row)
        write_json(args.out, dict(environment=environment(), bandwidth_gbps=bandwidth,
                                  matmul_tflops=tflops, groups=GROUPS, program_tiles=PROGRAM_TILES,
                                  entries=[str(f) for f in args.entries],
                                  entries_served=ENTRIES_SERVED, rows=rows))  # fmt: skip
    if "entries" in args.groups:
        print(f"calls served by --entries: {ENTRIES_SERVED}")


if __name__ == "__main__":
    main()
