"""Check and time moekit's fused experts on a GPU (bf16): Triton vs TorchExperts vs the floor.

For each model shape (full size and tensor-parallel slices) and token count M: the Triton
result is compared with a float32 computation on the same bf16 inputs (max error relative to the
output's scale), then timed eagerly and inside a CUDA graph (median of do_bench /
do_bench_cudagraph); TorchExperts syncs once per call, so it is timed eagerly. Every time is
reported beside the floor: max(bytes of the active experts' weights / measured copy bandwidth,
6*M*k*K*I FLOPs / measured bf16 matmul rate), and beside the least time of any path with per-slot
GEMM2 rows (``rows_path_bound_us``). The matmul rate of the floor is a 100 ms burst; the run
also times the matmul the way it times the cells (about a second of CUDA-graph replays, under
the board's power limit) and prints time/floor at that rate too (``floor_graph_rate_us``).
Prints the tables of time/floor and writes JSON; ``--plot`` draws the docs' figure from a JSON
already written (no GPU needed).

    python benchmarks/experts/bench_fused_moe.py --out benchmarks/results/experts_h100.json
    python benchmarks/experts/bench_fused_moe.py --plot docs/assets/experts_h100.png \
        --from benchmarks/results/experts_h100.json
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NamedTuple

SHAPES = {  # name: (E, top_k, K, I, activation)
    "mixtral": (8, 2, 4096, 14336, "silu"),
    "mixtral-tp2": (8, 2, 4096, 7168, "silu"),
    "qwen3-30b-a3b": (128, 8, 2048, 768, "silu"),
    "qwen3-30b-a3b-tp2": (128, 8, 2048, 384, "silu"),
    "deepseek-v3": (256, 8, 7168, 2048, "silu"),  # the spec's one-GPU (EP) slice
    "deepseek-v3-tp4": (256, 8, 7168, 512, "silu"),
    "gpt-oss-120b": (128, 4, 2880, 2880, "swigluoai"),
}
TOKENS = (1, 16, 64, 256, 1024, 4096, 16384)


def matmul_tflops(graph: bool = False) -> float:
    """An 8192³ bf16 matmul's rate: a 100 ms ``do_bench`` burst, or with ``graph`` timed the way
    the cells are (``time_us(graph=True)``: about a second of CUDA-graph replays), which lets the
    board's power limit lower the clock as it does for a compute-bound cell."""
    import torch
    import triton.testing

    a = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
    if graph:
        from common import time_us

        ms = time_us(lambda: a @ a, graph=True)[0] * 1e-3
    else:
        ms = triton.testing.do_bench(lambda: a @ a, warmup=25, rep=100, return_mode="median")
    return 2 * 8192**3 / (ms * 1e-3) / 1e12


def measured_ceilings() -> tuple[float, float]:
    """``(copy GB/s, bf16 matmul TFLOP/s)`` measured on this GPU, and printed."""
    from common import copy_bandwidth_gbps

    bandwidth, tflops = copy_bandwidth_gbps(), matmul_tflops()
    print(f"copy {bandwidth:.0f} GB/s, bf16 matmul {tflops:.0f} TFLOP/s", flush=True)
    return bandwidth, tflops


def make_weights(num_experts: int, top_k: int, hidden: int, inter: int, activation: str):
    """``(w1 [E, 2I, K], w2 [E, K, I], b1, b2)`` bf16 ~ N(0, 0.01); biases only for gpt-oss."""
    import torch

    gen = torch.Generator(device="cuda").manual_seed(0)

    def randn(*shape):
        return torch.randn(*shape, device="cuda", generator=gen, dtype=torch.bfloat16) / 10

    n = 2 * inter
    has_bias = activation == "swigluoai"
    return (randn(num_experts, n, hidden), randn(num_experts, hidden, inter),
            randn(num_experts, n) if has_bias else None,
            randn(num_experts, hidden) if has_bias else None)  # fmt: skip


def make_routed_tokens(tokens: int, num_experts: int, top_k: int, hidden: int, gen,
                       popularity=None):  # type: ignore[no-untyped-def]  # fmt: skip
    """``(x [M, K] bf16, weights [M, k], ids int32 [M, k])``: random hidden states and softmax
    top-k routing over random logits, drawn from ``gen`` in that order; ``popularity [E]``, if
    given, is added to every token's logits (some experts busier than others)."""
    import torch

    x = torch.randn(tokens, hidden, device="cuda", generator=gen, dtype=torch.bfloat16)
    logits = torch.randn(tokens, num_experts, device="cuda", generator=gen)
    if popularity is not None:
        logits += popularity
    weights, ids = torch.softmax(logits, -1).topk(top_k, -1)
    return x, weights, ids.int()


class RoutedCall(NamedTuple):
    """One benchmark cell's inputs; calling it runs ``fused_experts`` on them."""

    shape: str
    tokens: int
    x: Any
    weights: Any
    ids: Any
    w1: Any
    w2: Any
    b1: Any
    b2: Any

    def __call__(self, backend: str = "triton") -> Any:
        from moekit.experts import fused_experts

        return fused_experts(self.x, self.w1, self.w2, self.weights, self.ids,
                             activation=SHAPES[self.shape][4], w1_bias=self.b1, w2_bias=self.b2,
                             backend=backend, check_ids=False)  # fmt: skip

    def floor_us(self, bandwidth_gbps: float, tflops: float) -> float:
        """This cell's floor (``floor_us``) at the measured copy and matmul rates."""
        _, top_k, hidden, inter, _ = SHAPES[self.shape]
        return floor_us(self.ids, top_k, hidden, inter, bandwidth_gbps, tflops)


def expert_popularity(num_experts: int, skew: float):  # type: ignore[no-untyped-def]
    """``[E]`` offsets for every token's logits: ``skew`` times a normal draw (seed 2), so that
    routing favours some experts as trained routers do; ``None`` for ``skew`` 0 (uniform)."""
    import torch

    if skew <= 0:
        return None
    offsets = torch.Generator(device="cuda").manual_seed(2)
    return skew * torch.randn(num_experts, device="cuda", generator=offsets)


def routed_calls(shapes: list[str], token_counts: list[int],
                 skew: float = 0.0) -> Iterator[RoutedCall]:  # fmt: skip
    """The benchmarks' inputs: each shape's weights (``make_weights``), then for each token count
    in order, tokens routed from one generator seeded 1 per shape (``make_routed_tokens``). With
    ``skew`` > 0 each expert's logits are offset by ``skew`` times a normal draw (seed 2, once per
    shape), so that routing favours some experts as trained routers do; 0 keeps the plain draws.
    The CUDA cache is emptied after each shape."""
    import torch

    for shape in shapes:
        num_experts, top_k, hidden, inter, activation = SHAPES[shape]
        w1, w2, b1, b2 = make_weights(num_experts, top_k, hidden, inter, activation)
        popularity = expert_popularity(num_experts, skew)
        gen = torch.Generator(device="cuda").manual_seed(1)
        for tokens in token_counts:
            x, weights, ids = make_routed_tokens(tokens, num_experts, top_k, hidden, gen,
                                                 popularity)  # fmt: skip
            yield RoutedCall(shape, tokens, x, weights, ids, w1, w2, b1, b2)
        torch.cuda.empty_cache()


def add_skew_argument(parser: argparse.ArgumentParser) -> None:
    """``--skew``: the spread of the experts' popularity (``expert_popularity``); 0: uniform."""
    parser.add_argument("--skew", type=float, default=0.0,
                        help="spread of the experts' popularity (routed_calls); 0: uniform")  # fmt: skip


def cell_parser(description: str, tokens: tuple[int, ...],
                tokens_help: str | None = None) -> argparse.ArgumentParser:  # fmt: skip
    """The arguments of a benchmark over model shapes and token counts that writes JSON:
    ``--out`` (required), ``--shapes`` and ``--tokens`` (default ``tokens``)."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--shapes", nargs="+", default=list(SHAPES), choices=list(SHAPES))
    parser.add_argument("--tokens", nargs="+", type=int, default=list(tokens), help=tokens_help)
    add_skew_argument(parser)
    return parser


def floor_us(ids, top_k: int, hidden: int, inter: int, bandwidth_gbps: float,
             tflops: float) -> float:  # fmt: skip
    """max(bytes of the active experts' weights / copy rate, 6·M·k·K·I FLOPs / matmul rate)."""
    weight_bytes = ids.unique().numel() * 3 * hidden * inter * 2
    flops = 6 * ids.shape[0] * top_k * hidden * inter
    return max(weight_bytes / (bandwidth_gbps * 1e3), flops / (tflops * 1e6))


def busiest_over_mean(ids, num_experts: int) -> float:
    """The busiest expert's slots over the mean slots per expert (1 for perfectly even routing)."""
    import torch

    loads = torch.bincount(ids.flatten().long(), minlength=num_experts)
    return int(loads.max()) / (ids.numel() / num_experts)


def expected_active_experts(num_experts: int, top_k: int, tokens: int) -> float:
    """Experts hit at least once when each token picks ``top_k`` distinct ones at random."""
    return num_experts * (1 - (1 - top_k / num_experts) ** tokens)


def rows_path_bytes(active_experts: float, tokens: int, top_k: int, hidden: int,
                    inter: int) -> tuple[float, float]:  # fmt: skip
    """HBM bytes of a path with per-slot GEMM2 rows, all in bf16: ``(GEMMs, top-k sum)``.

    The GEMMs move the active weights, read the hidden states, write and read back the activated
    rows and write the ``[M·k, K]`` slot rows; the sum reads those rows and writes ``[M, K]``."""
    slot_rows = tokens * top_k
    gemm_bytes = (active_experts * 3 * hidden * inter + tokens * hidden
                  + 2 * slot_rows * inter + slot_rows * hidden) * 2  # fmt: skip
    sum_bytes = (slot_rows * hidden + tokens * hidden) * 2
    return gemm_bytes, sum_bytes


def rows_path_bound_us(active_experts: float, tokens: int, top_k: int, hidden: int, inter: int,
                       bandwidth_gbps: float, tflops: float) -> float:  # fmt: skip
    """Least time of any path that, like moekit's, writes each slot's GEMM2 row and then sums a
    token's top-k rows in a fixed order (so the result is deterministic).

    At best the GEMMs' bytes (``rows_path_bytes``) overlap with their FLOPs. The sum cannot
    start before the last GEMM2 tile, so its time adds. Unlike the issue's floor, this one
    counts the bytes that per-slot rows cost: above the floor where ``M·k·K`` rivals the
    weights (top-8 at 1024 tokens or more)."""
    gemm_bytes, sum_bytes = rows_path_bytes(active_experts, tokens, top_k, hidden, inter)
    flops = 6 * tokens * top_k * hidden * inter
    rate = bandwidth_gbps * 1e3  # bytes per microsecond
    return max(gemm_bytes / rate, flops / (tflops * 1e6)) + sum_bytes / rate


def oracle(x, w1, w2, weights, ids, activation, b1, b2):
    """float32 per-expert loop on the bf16 inputs."""
    import torch

    from moekit.experts import apply_activation

    out = torch.zeros(x.shape[0], w2.shape[1], device=x.device, dtype=torch.float32)
    flat_ids = ids.reshape(-1)
    for expert in flat_ids.unique().tolist():
        slots = (flat_ids == expert).nonzero().squeeze(1)
        tokens = slots // ids.shape[1]
        h = x[tokens].float() @ w1[expert].float().T
        if b1 is not None:
            h += b1[expert].float()
        y = apply_activation(h, activation) @ w2[expert].float().T
        if b2 is not None:
            y += b2[expert].float()
        out.index_add_(0, tokens, y * weights.reshape(-1)[slots, None])
    return out


def measure(args: argparse.Namespace) -> dict:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from common import environment, relative_error, time_us

    bandwidth, tflops = measured_ceilings()
    graph_tflops = matmul_tflops(graph=True)
    print(f"bf16 matmul timed like the cells (CUDA graph, about 1 s): {graph_tflops:.0f} TFLOP/s",
          flush=True)  # fmt: skip
    rows = []
    for call in routed_calls(args.shapes, args.tokens, args.skew):
        name, tokens, x, weights, ids, w1, w2, b1, b2 = call
        num_experts, top_k, hidden, inter, activation = SHAPES[name]
        want = oracle(x, w1, w2, weights, ids, activation, b1, b2)
        error = relative_error(call("triton"), want)
        torch_error = relative_error(call("torch"), want)
        del want
        floor = floor_us(ids, top_k, hidden, inter, bandwidth, tflops)
        bound = rows_path_bound_us(ids.unique().numel(), tokens, top_k, hidden, inter,
                                   bandwidth, tflops)  # fmt: skip
        row = dict(shape=name, tokens=tokens, E=num_experts, top_k=top_k, K=hidden, I=inter,
                   busiest_over_mean=busiest_over_mean(ids, num_experts),
                   rel_error_triton=error, rel_error_torch=torch_error, floor_us=floor,
                   floor_graph_rate_us=floor_us(ids, top_k, hidden, inter, bandwidth,
                                                graph_tflops),
                   rows_bound_us=bound,
                   triton_eager_us=time_us(lambda: call("triton"), graph=False)[0],
                   triton_graph_us=time_us(lambda: call("triton"), graph=True)[0],
                   torch_eager_us=time_us(lambda: call("torch"), graph=False)[0])  # fmt: skip
        best = row["triton_graph_us"]
        print(f"{name:18s} M={tokens:5d}: err {error:.1e}/{torch_error:.1e}  triton "
              f"{best:9.1f} us ({best / floor:4.2f}x floor; eager "
              f"{row['triton_eager_us'] / floor:4.2f}x)  torch "
              f"{row['torch_eager_us'] / floor:4.2f}x  floor {floor:8.1f}  per-slot rows "
              f"bound {bound / floor:4.2f}x", flush=True)  # fmt: skip
        rows.append(row)
    return dict(environment=environment(), bandwidth_gbps=bandwidth, matmul_tflops=tflops,
                matmul_tflops_graph=graph_tflops, skew=args.skew, rows=rows)  # fmt: skip


def measured_or_loaded(parser: argparse.ArgumentParser, args: argparse.Namespace,
                       measure: Callable[[argparse.Namespace], dict]) -> dict:  # fmt: skip
    """The result of a benchmark with ``--out`` (``measure(args)``, on the GPU, written there as
    JSON) or ``--from`` (a JSON already written); exactly one of them."""
    if (args.out is None) == (args.source is None):
        parser.error("give exactly one of --out (measure) and --from (an existing JSON)")
    if args.source is not None:
        return json.loads(args.source.read_text())
    result = measure(args)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    return result


def shape_table(rows: list[dict], cell: Callable[[dict], str],
                label: Callable[[dict], str] = lambda row: row["shape"],
                header: str = "shape") -> str:  # fmt: skip
    """Markdown: one line per shape (``label`` of its first row), one column per token count,
    each cell ``cell(row)``, empty where that count was not measured."""
    tokens = sorted({row["tokens"] for row in rows})
    lines = [f"| {header} | " + " | ".join(f"M={m}" for m in tokens) + " |",
             "|---|" + "---|" * len(tokens)]  # fmt: skip
    for name in dict.fromkeys(row["shape"] for row in rows):
        cells = {row["tokens"]: row for row in rows if row["shape"] == name}
        values = [cell(cells[m]) if m in cells else "" for m in tokens]
        lines.append(f"| {label(next(iter(cells.values())))} | " + " | ".join(values) + " |")
    return "\n".join(lines)


def table(rows: list[dict]) -> str:
    """Markdown: one line per shape, each cell ``Triton (graph) / floor`` and TorchExperts'."""
    return shape_table(
        rows,
        lambda row: (f"{row['triton_graph_us'] / row['floor_us']:.2f} "
                     f"({row['torch_eager_us'] / row['floor_us']:.2f})"),
        lambda row: f"{row['shape']} ({row['E']}, {row['top_k']}, {row['K']}, {row['I']})",
        "shape (E, k, K, I)",
    )  # fmt: skip


def bound_table(result: dict) -> str:
    """Markdown: each cell ``Triton (graph) / floor`` beside the per-slot rows bound / floor
    (``rows_path_bound_us``). Rows written before the bound was recorded get it from the run's
    own rates and the active experts their floor implies (the expected number where the floor
    is the FLOPs term, which then hides it)."""
    rate = result["bandwidth_gbps"] * 1e3

    def active_experts(row: dict) -> float:
        flops_us = 6 * row["tokens"] * row["top_k"] * row["K"] * row["I"] / (
            result["matmul_tflops"] * 1e6)  # fmt: skip
        if row["floor_us"] > flops_us * (1 + 1e-9):
            return row["floor_us"] * rate / (3 * row["K"] * row["I"] * 2)
        return expected_active_experts(row["E"], row["top_k"], row["tokens"])

    def cell(row: dict) -> str:
        bound = row.get("rows_bound_us") or rows_path_bound_us(
            active_experts(row), row["tokens"], row["top_k"], row["K"], row["I"],
            result["bandwidth_gbps"], result["matmul_tflops"],
        )  # fmt: skip
        return f"{row['triton_graph_us'] / row['floor_us']:.2f} ({bound / row['floor_us']:.2f})"

    return shape_table(result["rows"], cell)


def graph_rate_table(result: dict) -> str | None:
    """Markdown: each cell ``Triton (graph)`` over the floor at the matmul rate timed like the
    cells (``matmul_tflops(graph=True)``); ``None`` for a JSON written before that rate was."""
    if "matmul_tflops_graph" not in result:
        return None
    return shape_table(
        result["rows"],
        lambda row: f"{row['triton_graph_us'] / row['floor_graph_rate_us']:.2f}",
    )


def plot(rows: list[dict], environment: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.5))
    for name in dict.fromkeys(row["shape"] for row in rows):
        mine = [row for row in rows if row["shape"] == name]
        xs = [row["tokens"] for row in mine]
        (line,) = ax.plot(xs, [r["triton_graph_us"] / r["floor_us"] for r in mine], marker="o",
                          label=f"{name}")  # fmt: skip
        ax.plot(xs, [r["torch_eager_us"] / r["floor_us"] for r in mine], linestyle=":",
                color=line.get_color())  # fmt: skip
    ax.axhline(1.0, color="black", linewidth=0.8)
    ax.set_xscale("log", base=2)
    ax.set_yscale("log", base=2)
    ax.set_xlabel("tokens M")
    ax.set_ylabel("time / floor (lower is better)")
    ax.set_title(f"fused experts, bf16, {environment['device']}: moekit Triton (solid, CUDA "
                 "graph) vs TorchExperts (dotted)", fontsize=9)  # fmt: skip
    ax.legend(fontsize=7, ncol=2)
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, help="measure on the GPU and write JSON here")
    parser.add_argument("--from", dest="source", type=Path, help="a JSON already written")
    parser.add_argument("--plot", type=Path, help="draw time/floor per shape into this PNG")
    parser.add_argument("--shapes", nargs="+", default=list(SHAPES), choices=list(SHAPES))
    parser.add_argument("--tokens", nargs="+", type=int, default=list(TOKENS))
    add_skew_argument(parser)
    args = parser.parse_args()
    result = measured_or_loaded(parser, args, measure)
    print(table(result["rows"]))
    print("\ntime / floor (per-slot rows bound / floor):")
    print(bound_table(result))
    at_graph_rate = graph_rate_table(result)
    if at_graph_rate is not None:
        print(f"\ntime / floor at the matmul rate timed like the cells "
              f"({result['matmul_tflops_graph']:.0f} TFLOP/s against "
              f"{result['matmul_tflops']:.0f} in a burst):")  # fmt: skip
        print(at_graph_rate)
    if args.plot is not None:
        plot(result["rows"], result["environment"], args.plot)


if __name__ == "__main__":
    main()
