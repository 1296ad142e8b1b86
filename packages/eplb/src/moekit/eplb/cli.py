"""``moekit-eplb``: plan a placement from a load matrix, or simulate a load matrix.

    moekit-eplb plan load.npy --replicas 288 --groups 8 --nodes 4 --ranks 32 --policy ilp \\
        --out maps.json
    moekit-eplb simulate --strategy zipf --exponent 1.2 --layers 58 --experts 256 \\
        --tokens 8192 --top-k 8 --out load.npy
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from pathlib import Path
from typing import TextIO

import numpy as np
import torch

from moekit.eplb._checks import check_weight
from moekit.eplb.default_policy import DefaultEplbPolicy
from moekit.eplb.ilp_policy import IlpEplbPolicy, LayerReport
from moekit.eplb.metrics import balancedness, rank_load, replica_moves
from moekit.eplb.policy import logical_maps
from moekit.eplb.state import initial_physical_to_logical


class InputError(Exception):
    """A file the CLI cannot use: reported with its path and reason, exit status 2."""


def read_load(path: Path) -> np.ndarray:
    """A ``[layers, experts]`` load matrix from ``.npy``, ``.csv`` (a row per layer) or ``.json``
    (a list of per-layer lists, or an object mapping layer index to its list)."""
    if not path.is_file():
        raise InputError(f"{path}: no such file")
    try:
        if path.suffix == ".npy":
            data = np.load(path, allow_pickle=False)
        elif path.suffix == ".csv":
            with path.open(newline="") as handle:
                rows = [row for row in csv.reader(handle) if row]
            data = np.array([[float(v) for v in row] for row in rows])
        elif path.suffix == ".json":
            raw = json.loads(path.read_text())
            if isinstance(raw, dict):
                raw = [raw[key] for key in sorted(raw, key=int)]
            data = np.array(raw, dtype=np.float64)
        else:
            raise InputError(f"{path}: unknown format {path.suffix!r} (use .npy, .csv or .json)")
    except InputError:
        raise
    except (ValueError, TypeError, KeyError, OSError) as error:
        raise InputError(f"{path}: cannot read a load matrix ({error})") from error
    try:
        check_weight(np.asarray(data, dtype=np.float64), "load")
    except (ValueError, TypeError) as error:
        raise InputError(f"{path}: {error}") from error
    return np.asarray(data, dtype=np.float32)


def write_load(path: Path, load: np.ndarray) -> None:
    if path.suffix == ".npy":
        np.save(path, load)
    elif path.suffix == ".csv":
        np.savetxt(path, load, delimiter=",", fmt="%d")
    elif path.suffix == ".json":
        path.write_text(json.dumps(load.astype(np.int64).tolist()) + "\n")
    else:
        raise InputError(f"{path}: unknown format {path.suffix!r} (use .npy, .csv or .json)")


def write_maps(path: Path, p2l: np.ndarray, l2p: np.ndarray, count: np.ndarray) -> list[Path]:
    """``.json``: one object with the three maps; ``.npy``: the physical-to-logical map there,
    the other two beside it (``<stem>.l2p.npy``, ``<stem>.count.npy``)."""
    if path.suffix == ".json":
        maps = {"physical_to_logical_map": p2l.tolist(), "logical_to_physical_map": l2p.tolist(),
                "expert_count": count.tolist()}  # fmt: skip
        path.write_text(json.dumps(maps) + "\n")
        return [path]
    if path.suffix == ".npy":
        written = [path, path.with_suffix(".l2p.npy"), path.with_suffix(".count.npy")]
        for target, array in zip(written, (p2l, l2p, count)):
            np.save(target, array)
        return written
    raise InputError(f"{path}: unknown output format {path.suffix!r} (use .json or .npy)")


class ProgressBar:
    """A one-line bar on a terminal; on anything else, nothing until the end."""

    def __init__(self, total: int, stream: TextIO, label: str) -> None:
        self.total, self.stream, self.label = total, stream, label
        self.start = time.perf_counter()
        self.live = stream.isatty()

    def update(self, done: int) -> None:
        if not self.live and done < self.total:
            return
        width = 30
        filled = width * done // max(self.total, 1)
        elapsed = time.perf_counter() - self.start
        self.stream.write(f"\r{self.label} [{'#' * filled}{'.' * (width - filled)}] "
                          f"{done}/{self.total} {elapsed:.1f}s")  # fmt: skip
        if done >= self.total:
            self.stream.write("\n")
        self.stream.flush()


def plan(args: argparse.Namespace) -> int:
    load = read_load(args.load)
    num_layers, num_logical = load.shape
    if args.old is not None:
        try:
            if args.old.suffix == ".npy":
                old = np.load(args.old, allow_pickle=False)
            else:
                old = np.array(json.loads(args.old.read_text())["physical_to_logical_map"])
        except (OSError, ValueError, KeyError, TypeError) as error:
            raise InputError(
                f"{args.old}: cannot read a physical-to-logical map ({error})"
            ) from error
        if old.shape != (num_layers, args.replicas):
            raise InputError(f"{args.old}: the map has shape {old.shape}, expected "
                             f"({num_layers}, {args.replicas})")  # fmt: skip
    else:
        old = initial_physical_to_logical(num_layers, num_logical, args.replicas).numpy()
    layout = (args.replicas, args.groups, args.nodes, args.ranks)
    bar = ProgressBar(num_layers, sys.stderr, "layers")
    rows: list[np.ndarray] = []
    reports: list[tuple[LayerReport | None, float]] = []
    for layer in range(num_layers):
        start = time.perf_counter()
        old_row = old[layer : layer + 1] if args.old is not None else None
        if args.policy == "ilp":
            result = IlpEplbPolicy.plan(load[layer : layer + 1], *layout, old_row,
                                        time_limit=args.time_limit, hierarchical=not args.flat,
                                        migration_weight=args.migration_weight)  # fmt: skip
            rows.append(np.asarray(result.physical_to_logical_map)[0])
            report: LayerReport | None = result.reports[0]
        else:
            p2l, _, _ = DefaultEplbPolicy.rebalance_experts(
                load[layer : layer + 1], *layout, old_row
            )
            rows.append(np.asarray(p2l)[0])
            report = None
        reports.append((report, time.perf_counter() - start))
        bar.update(layer + 1)
    p2l = np.stack(rows)
    l2p, count = (t.numpy() for t in logical_maps(torch.from_numpy(p2l), num_logical))
    before = balancedness(rank_load(load, old, args.ranks))
    after = balancedness(rank_load(load, p2l, args.ranks))
    moves = replica_moves(old, p2l, args.ranks)
    header = f"{'layer':>5} {'balanced before':>15} {'after':>7} {'moves':>6} {'seconds':>8}"
    if args.policy == "ilp":
        header += f" {'status':>10} {'gap':>6} {'source':>7}"
    print(header)
    for layer, (layer_report, seconds) in enumerate(reports):
        line = f"{layer:>5} {before[layer]:>15.3f} {after[layer]:>7.3f} {moves[layer]:>6} {seconds:>8.3f}"
        if layer_report is not None:
            line += (f" {layer_report.status:>10} {layer_report.gap:>6.1%} "
                     f"{layer_report.source:>7}")  # fmt: skip
        print(line)
    print(f"mean balancedness {before.mean():.3f} -> {after.mean():.3f}; "
          f"{int(moves.sum())} replica moves")  # fmt: skip
    for path in write_maps(args.out, p2l, l2p, count):
        print(f"wrote {path}")
    return 0


def simulate(args: argparse.Namespace) -> int:
    try:
        from moekit.routing import (
            DistributionBasedRouting,
            HotExpertsRouting,
            RoutingStrategy,
            ZipfRouting,
        )
    except ImportError as error:
        raise InputError(
            "simulate needs moekit-routing: pip install 'moekit-eplb[simulate]'"
        ) from error
    rows = []
    bar = ProgressBar(args.layers, sys.stderr, "layers")
    logits = torch.zeros(args.tokens, args.experts)
    for layer in range(args.layers):
        seed = args.seed * 1_000_003 + layer  # a different popularity order per layer
        strategy: RoutingStrategy
        if args.strategy == "zipf":
            strategy = ZipfRouting(args.exponent, seed=seed)
        elif args.strategy == "hot_experts":
            strategy = HotExpertsRouting(num_hot=args.num_hot, hot_share=args.hot_share, seed=seed)
        else:
            strategy = DistributionBasedRouting(args.strategy, seed=seed)
        _, ids = strategy.route_tokens(logits, logits, args.top_k)
        rows.append(np.bincount(ids.reshape(-1).numpy(), minlength=args.experts))
        bar.update(layer + 1)
    load = np.stack(rows)
    write_load(args.out, load)
    print(f"wrote {args.out}: {args.layers} layers x {args.experts} experts, "
          f"{int(load.sum())} routed slots")  # fmt: skip
    return 0


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="moekit-eplb", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    p = commands.add_parser("plan", help="place replicas for a load matrix")
    p.add_argument("load", type=Path, help=".npy, .csv or .json load matrix [layers, experts]")
    p.add_argument("--replicas", type=_positive_int, required=True)
    p.add_argument("--groups", type=_positive_int, default=1)
    p.add_argument("--nodes", type=_positive_int, default=1)
    p.add_argument("--ranks", type=_positive_int, required=True)
    p.add_argument("--policy", choices=("default", "ilp"), default="default")
    p.add_argument("--time-limit", type=float, default=1.0, help="ILP seconds per layer")
    p.add_argument("--migration-weight", type=float, default=0.0)
    p.add_argument("--flat", action="store_true", help="ILP: lift the groups-on-a-node rule")
    p.add_argument("--old", type=Path, help="the current map (.npy or a plan's .json)")
    p.add_argument("--out", type=Path, required=True, help=".json or .npy")
    p.set_defaults(run=plan)
    s = commands.add_parser("simulate", help="a load matrix from a routing-simulator strategy")
    s.add_argument("--strategy", choices=("uniform", "normal", "zipf", "hot_experts"),
                   default="zipf")  # fmt: skip
    s.add_argument("--exponent", type=float, default=1.2)
    s.add_argument("--num-hot", type=_positive_int, default=None)
    s.add_argument("--hot-share", type=float, default=0.5)
    s.add_argument("--layers", type=_positive_int, required=True)
    s.add_argument("--experts", type=_positive_int, required=True)
    s.add_argument("--tokens", type=_positive_int, default=4096)
    s.add_argument("--top-k", type=_positive_int, default=8)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--out", type=Path, required=True, help=".npy, .csv or .json")
    s.set_defaults(run=simulate)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except InputError as error:
        print(f"moekit-eplb: error: {error}", file=sys.stderr)
        return 2
    except ValueError as error:  # a layout the policies refuse
        print(f"moekit-eplb: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
