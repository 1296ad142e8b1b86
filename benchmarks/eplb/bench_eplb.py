"""Balancedness and solve time of the EPLB policies at DeepSeek-V3 scale (CPU).

For each load profile and layout: the default policy (hierarchical, and the global variant with
one group and one node), and the ILP policy (hierarchical, and flat), over every layer. Reports
vLLM's aggregate balancedness (sum of mean rank loads / sum of max rank loads), the mean of the
per-layer balancedness, the ILP's mean gap to its proven bound, and solve seconds per layer.

Layouts: 256 experts in 8 groups, 288 replicas on 32 ranks over 4 nodes, and 320 replicas on
64 ranks over 8 nodes (288 is not a multiple of 64, so 64 ranks take 64 redundant replicas).

    python benchmarks/eplb/bench_eplb.py --out benchmarks/results/eplb_cpu.json \
        --plot docs/assets/eplb_balancedness.png
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import time
from pathlib import Path

import numpy as np
import scipy

from moekit.eplb import (
    DefaultEplbPolicy,
    IlpEplbPolicy,
    aggregate_balancedness,
    balancedness,
    rank_load,
)

LAYOUTS = {  # name: (experts, replicas, groups, nodes, ranks)
    "32 ranks / 4 nodes": (256, 288, 8, 4, 32),
    "64 ranks / 8 nodes": (256, 320, 8, 8, 64),
}
TOKENS_PER_LAYER = 8 * 4096  # top-8 of 4096 tokens, a window's worth of one step


def zipf_load(rng, layers, experts, exponent):
    p = np.arange(1, experts + 1, dtype=np.float64) ** -exponent
    p /= p.sum()
    return np.stack([rng.multinomial(TOKENS_PER_LAYER, rng.permutation(p)) for _ in range(layers)])


def profiles(rng, layers, experts):
    """name -> [layers, experts] token counts."""
    out = {"uniform": rng.multinomial(TOKENS_PER_LAYER, np.full(experts, 1 / experts), layers)}
    for exponent in (1.2, 1.5, 2.0):
        out[f"zipf {exponent}"] = zipf_load(rng, layers, experts, exponent)
    hot = np.full(experts, 0.5 / (experts - 8))
    rows = []
    for _ in range(layers):
        p = hot.copy()
        p[rng.choice(experts, 8, replace=False)] = 0.5 / 8  # 8 hot experts take half
        rows.append(rng.multinomial(TOKENS_PER_LAYER, p / p.sum()))
    out["hot experts"] = np.stack(rows)
    # DeepSeek-like: log-normal popularity (sigma 1), drawn afresh per layer, like the measured
    # per-expert loads of large MoE models (a few experts 5-10x the mean, none idle).
    rows = []
    for _ in range(layers):
        p = rng.lognormal(0.0, 1.0, experts)
        rows.append(rng.multinomial(TOKENS_PER_LAYER, p / p.sum()))
    out["deepseek-like"] = np.stack(rows)
    return {name: load.astype(np.float32) for name, load in out.items()}


def evaluate(load, p2l, ranks):
    per_rank = rank_load(load, p2l, ranks)
    return aggregate_balancedness(per_rank), float(balancedness(per_rank).mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--plot", type=Path)
    parser.add_argument("--layers", type=int, default=58)
    parser.add_argument("--time-limit", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--plot-only", action="store_true", help="redraw --plot from --out")
    args = parser.parse_args()
    if args.plot_only:
        plot(json.loads(args.out.read_text())["rows"], args.plot)
        return
    rng = np.random.default_rng(args.seed)
    rows = []
    for layout_name, (experts, replicas, groups, nodes, ranks) in LAYOUTS.items():
        for profile, load in profiles(rng, args.layers, experts).items():
            row = {"layout": layout_name, "profile": profile, "layers": args.layers}
            initial = np.arange(replicas)[None].repeat(args.layers, 0) % experts
            row["initial"] = evaluate(load, initial, ranks)
            for name, g, n in (("default", groups, nodes), ("default global", 1, 1)):
                start = time.perf_counter()
                p2l, _, _ = DefaultEplbPolicy.rebalance_experts(load, replicas, g, n, ranks)
                row[name] = evaluate(load, p2l, ranks)
                row[f"{name} seconds/layer"] = (time.perf_counter() - start) / args.layers
            for name, hierarchical in (("ilp", True), ("ilp flat", False)):
                plan = IlpEplbPolicy.plan(load, replicas, groups, nodes, ranks,
                                          time_limit=args.time_limit, hierarchical=hierarchical)  # fmt: skip
                row[name] = evaluate(load, plan.physical_to_logical_map, ranks)
                seconds = [r.seconds for r in plan.reports]
                row[f"{name} seconds/layer"] = float(np.mean(seconds))
                row[f"{name} max seconds"] = float(np.max(seconds))
                row[f"{name} mean gap"] = float(np.mean([r.gap for r in plan.reports]))
                row[f"{name} layers from ilp"] = sum(r.source == "ilp" for r in plan.reports)
            rows.append(row)
            print(f"{layout_name:20s} {profile:14s} " + "  ".join(
                f"{k} {row[k][0]:.3f}" for k in ("initial", "default", "default global", "ilp",
                                                  "ilp flat")
            ) + f"  ilp {row['ilp seconds/layer']:.2f}s flat {row['ilp flat seconds/layer']:.2f}s",
                  flush=True)  # fmt: skip
    try:
        commit = os.environ.get("MOEKIT_COMMIT") or subprocess.check_output(
            ["git", "rev-parse", "--short", "HEAD"], text=True).strip()  # fmt: skip
    except (OSError, subprocess.CalledProcessError):
        commit = "unknown"
    environment = {"machine": platform.processor() or platform.machine(), "cpus": os.cpu_count(),
                   "python": platform.python_version(), "scipy": scipy.__version__,
                   "numpy": np.__version__, "commit": commit}  # fmt: skip
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"environment": environment, "time_limit": args.time_limit,
                                    "metric": "[aggregate balancedness, mean per-layer balancedness]",
                                    "rows": rows}, indent=1) + "\n")  # fmt: skip
    if args.plot:
        plot(rows, args.plot)


def plot(rows, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    policies = ["initial", "default", "default global", "ilp", "ilp flat"]
    layouts = sorted({r["layout"] for r in rows})
    fig, axes = plt.subplots(1, len(layouts), figsize=(6 * len(layouts), 4), sharey=True)
    for ax, layout in zip(np.atleast_1d(axes), layouts):
        subset = [r for r in rows if r["layout"] == layout]
        x = np.arange(len(subset))
        width = 0.8 / len(policies)
        for i, policy in enumerate(policies):
            ax.bar(x + i * width, [r[policy][0] for r in subset], width, label=policy)
        ax.set_xticks(x + 0.4 - width / 2, [r["profile"] for r in subset], rotation=30)
        ax.set_title(f"256 experts, {layout}")
        ax.set_ylim(0, 1.05)
        ax.set_ylabel("balancedness (mean / max rank load)")
    handles, labels = np.atleast_1d(axes)[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=len(policies), fontsize=9)
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    main()
