"""Token counts between two tuned entries: the call with each neighbour's entry (GPU, bf16).

For each model shape and token count ``M``, ``TritonExperts`` runs with the entry of the
largest tuned count at or below ``M`` (``lower``) and with that of the smallest at or above it
(``upper``), and the row says which one ``get_config`` picks (``shipped``, a tuned count). The
two outputs must agree bit for bit: tiles change neither the slot order of the sum nor the
order of the float32 accumulation along K, which the MMAs take in K order whatever ``BLOCK_K``.
Times are medians of ``do_bench_cudagraph`` beside the floor of ``bench_fused_moe.py``. Writes
JSON; ``entry_tokens`` in ``_triton_impl/configs.py`` is the rule these numbers chose.

    python benchmarks/experts/bench_between_entries.py --out between.json --tokens 128 640 3072
"""

from __future__ import annotations

import sys
from pathlib import Path
from unittest import mock

TOKENS = (2, 3, 4, 6, 8, 24, 32, 48, 80, 96, 128, 160, 192, 320, 384, 512, 640, 768, 1536,
          2048, 3072)  # fmt: skip


def main() -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import torch
    from bench_fused_moe import SHAPES, cell_parser, measured_ceilings, routed_calls
    from common import environment, time_us, write_json

    from moekit.experts import triton_experts
    from moekit.experts._triton_impl import configs

    args = cell_parser(__doc__.splitlines()[0], TOKENS).parse_args()

    bandwidth, tflops = measured_ceilings()
    rows = []
    for call in routed_calls(args.shapes, args.tokens):
        num_experts, top_k, hidden, inter, _ = SHAPES[call.shape]
        table = configs.device_table(num_experts, 2 * inter, torch.bfloat16, call.x.device)
        if not table:
            raise SystemExit(f"{call.shape}: no tuned table for this device")
        lower, upper = configs.neighbour_tokens(table, call.tokens)
        row = dict(shape=call.shape, tokens=call.tokens, E=num_experts, top_k=top_k,
                   floor_us=call.floor_us(bandwidth, tflops),
                   lower=lower, upper=upper,
                   shipped=configs.entry_tokens(table, call.tokens, top_k, num_experts))  # fmt: skip
        outputs = {}
        for side, tokens in (("lower", lower), ("upper", upper)):
            entry = table[tokens]
            with mock.patch.object(triton_experts, "get_config", lambda *_, e=entry: e):
                outputs[side] = call().clone()
                row[f"{side}_us"] = time_us(call, graph=True)[0]
        row["identical"] = bool(torch.equal(outputs["lower"], outputs["upper"]))
        row["upper_over_lower"] = row["upper_us"] / row["lower_us"]
        print(f"{call.shape:18s} M={call.tokens:5d}: entry {lower:5d} {row['lower_us']:9.1f} us, "
              f"entry {upper:5d} {row['upper_us']:9.1f} us ({row['upper_over_lower']:.3f}); "
              f"shipped {row['shipped']}; identical {row['identical']}", flush=True)  # fmt: skip
        rows.append(row)
    write_json(args.out, dict(environment=environment(), bandwidth_gbps=bandwidth,
                              matmul_tflops=tflops, rows=rows))  # fmt: skip
    if not all(row["identical"] for row in rows):
        raise SystemExit("some outputs differ between the two entries")


if __name__ == "__main__":
    main()
