"""The two small mixed-integer programs of the ILP policy, on scipy.optimize.milp (HiGHS).

Both work on float64 loads scaled to a mean of about 1 per bin, so HiGHS's absolute
tolerances mean the same at every load scale.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.optimize import Bounds, LinearConstraint, milp
from scipy.sparse import coo_matrix

_STATUS = {0: "optimal", 1: "time_limit", 2: "infeasible", 3: "unbounded", 4: "error"}


@dataclass(frozen=True)
class MilpOutcome:
    """What one solve gave: a solution (or None: keep the incumbent), its status, the solver's
    proven lower bound on the objective and the seconds spent."""

    solution: np.ndarray | None
    status: str
    lower_bound: float
    seconds: float


def _solve(cost, integrality, lower, upper, rows, cols, values, row_lower, row_upper,
           time_limit) -> tuple[Any, float]:  # fmt: skip
    matrix = coo_matrix((values, (rows, cols)), shape=(len(row_lower), len(cost))).tocsr()
    start = time.perf_counter()
    result = milp(
        cost,
        integrality=integrality,
        bounds=Bounds(lower, upper),
        constraints=LinearConstraint(matrix, row_lower, row_upper),
        options={"time_limit": max(time_limit, 1e-3), "mip_rel_gap": 1e-4, "disp": False},
    )
    return result, time.perf_counter() - start


def place_replicas(item_load: np.ndarray, candidates: list[np.ndarray], num_bins: int,
                   bin_size: int, ceiling: float, time_limit: float,
                   old_counts: np.ndarray | None = None,
                   migration_weight: float = 0.0) -> MilpOutcome:  # fmt: skip
    """Choose each item's replica count among ``candidates[i]`` and place the replicas into
    ``num_bins`` bins of ``bin_size`` slots, minimising the heaviest bin ``T`` (+
    ``migration_weight`` x replicas not already in their bin per ``old_counts [m, bins]``).
    A replica of item ``i`` with ``c`` replicas carries ``item_load[i] / c``.

    The ``load / c`` term is linearised by a binary choice of the count: ``y[i, c]`` picks one
    candidate, and ``z[i, c, b]`` (integers, ``0..min(c, bin_size)``) are the replicas in bin
    ``b`` under that choice (``sum_b z[i, c, b] = c * y[i, c]``), so each bin's load
    ``sum z[i, c, b] * item_load[i] / c`` is linear. An item with a single candidate needs no
    ``y``. Rows: each bin exactly full, each bin's load ``<= T``. ``ceiling`` is the incumbent's
    objective, a cut-off that prunes the search; without migration the bins are
    interchangeable, so their loads are ordered (symmetry breaking).

    Returns the ``[m, bins]`` replica counts per bin, or None when nothing better was found.
    """
    m, bins = len(item_load), num_bins
    scale = max(float(np.sum(item_load)) / bins, 1e-12)
    # One column block per (item, candidate count): z[k, b] for k in these pairs.
    pair_item = np.concatenate([np.full(len(c), i) for i, c in enumerate(candidates)])
    pair_count = np.concatenate([np.asarray(c, dtype=np.int64) for c in candidates])
    pairs = len(pair_item)
    pair_load = item_load[pair_item] / pair_count / scale
    choice = np.array([len(candidates[i]) > 1 for i in pair_item])
    nz = pairs * bins
    z_pair = np.repeat(np.arange(pairs), bins)
    z_bin = np.tile(np.arange(bins), pairs)
    zs = np.arange(nz)
    y_of_pair = np.full(pairs, -1)
    y_of_pair[choice] = nz + np.arange(int(choice.sum()))
    ny = int(choice.sum())
    t_var = nz + ny
    migrate = old_counts is not None and migration_weight > 0
    nvars = t_var + 1 + (m * bins if migrate else 0)

    rows: list[np.ndarray] = []
    cols: list[np.ndarray] = []
    values: list[np.ndarray] = []
    lo: list[float] = []
    hi: list[float] = []

    def add_rows(r, c, v, row_lo, row_hi):
        rows.append(np.asarray(r, dtype=np.int64) + len(lo))
        cols.append(np.asarray(c, dtype=np.int64))
        values.append(np.asarray(v, dtype=np.float64))
        lo.extend(row_lo)
        hi.extend(row_hi)

    # Each pair: sum_b z = c * y (or = c when the count is fixed).
    fixed = ~choice
    add_rows(
        z_pair, zs, np.ones(nz), np.where(fixed, pair_count, 0), np.where(fixed, pair_count, 0)
    )
    chosen_pairs = np.flatnonzero(choice)
    rows[-1] = np.concatenate([rows[-1], chosen_pairs + len(lo) - pairs])
    cols[-1] = np.concatenate([cols[-1], y_of_pair[chosen_pairs]])
    values[-1] = np.concatenate([values[-1], -pair_count[chosen_pairs].astype(np.float64)])
    # Each item with a choice picks exactly one count.
    chooser = np.flatnonzero(np.array([len(c) > 1 for c in candidates]))
    if len(chooser):
        item_row = {int(i): r for r, i in enumerate(chooser)}
        add_rows([item_row[int(pair_item[k])] for k in chosen_pairs], y_of_pair[chosen_pairs],
                 np.ones(len(chosen_pairs)), [1.0] * len(chooser), [1.0] * len(chooser))  # fmt: skip
    add_rows(z_bin, zs, np.ones(nz), [bin_size] * bins, [bin_size] * bins)  # bins full
    # bin load - T <= 0
    add_rows(np.concatenate([z_bin, np.arange(bins)]), np.concatenate([zs, [t_var] * bins]),
             np.concatenate([pair_load[z_pair], -np.ones(bins)]), [-np.inf] * bins,
             [0.0] * bins)  # fmt: skip
    cost = np.zeros(nvars)
    cost[t_var] = 1.0
    upper = np.concatenate([np.minimum(pair_count, bin_size)[z_pair].astype(np.float64),
                            np.ones(ny), [np.inf]])  # fmt: skip
    lower = np.zeros(t_var + 1)
    integrality = np.concatenate([np.ones(nz + ny), [0]])
    if migrate:
        # moved[i, b] >= sum_c z[i, c, b] - old[i, b], moved >= 0
        item_bin = pair_item[z_pair] * bins + z_bin
        add_rows(np.concatenate([item_bin, np.arange(m * bins)]),
                 np.concatenate([zs, t_var + 1 + np.arange(m * bins)]),
                 np.concatenate([np.ones(nz), -np.ones(m * bins)]), [-np.inf] * (m * bins),
                 np.asarray(old_counts, dtype=np.float64).reshape(-1))  # fmt: skip
        cost[t_var + 1 :] = migration_weight / scale
        upper = np.concatenate([upper, np.full(m * bins, np.inf)])
        lower = np.concatenate([lower, np.zeros(m * bins)])
        integrality = np.concatenate([integrality, np.zeros(m * bins)])
        add_rows(
            np.zeros(nvars, dtype=np.int64),
            np.arange(nvars),
            cost,
            [-np.inf],
            [ceiling / scale * (1 + 1e-9)],
        )  # objective <= the incumbent's
    else:
        upper[t_var] = ceiling / scale * (1 + 1e-9)
        if bins > 1:  # load[b] >= load[b + 1]
            first = (np.arange(pairs)[:, None] * bins + np.arange(bins - 1)[None, :]).reshape(-1)
            order_row = np.tile(np.arange(bins - 1), pairs)
            coefficient = np.repeat(pair_load, bins - 1)
            add_rows(np.concatenate([order_row, order_row]), np.concatenate([first, first + 1]),
                     np.concatenate([coefficient, -coefficient]), [0.0] * (bins - 1),
                     [np.inf] * (bins - 1))  # fmt: skip
    result, seconds = _solve(cost, integrality, lower, upper, np.concatenate(rows),
                             np.concatenate(cols), np.concatenate(values), np.asarray(lo),
                             np.asarray(hi), time_limit)  # fmt: skip
    status = _STATUS.get(result.status, "error")
    bound = getattr(result, "mip_dual_bound", None)
    bound = float(bound) * scale if bound is not None and np.isfinite(bound) else 0.0
    if result.x is None:
        return MilpOutcome(None, status, bound, seconds)
    z = np.rint(result.x[:nz]).astype(np.int64).reshape(pairs, bins)
    solution = np.zeros((m, bins), dtype=np.int64)
    np.add.at(solution, pair_item, z)
    counts = solution.sum(axis=1)
    valid = all(int(counts[i]) in set(np.asarray(candidates[i]).tolist()) for i in range(m))
    if not valid or (solution.sum(axis=0) != bin_size).any():
        return MilpOutcome(None, "error", bound, seconds)  # never trust a solution blindly
    return MilpOutcome(solution, status, bound, seconds)


def assign_groups(group_load: np.ndarray, num_nodes: int, ceiling: float, time_limit: float,
                  old_node: np.ndarray | None = None, move_penalty: float = 0.0) -> MilpOutcome:  # fmt: skip
    """Put ``len(group_load)`` groups on ``num_nodes`` nodes, the same number on each,
    minimising the heaviest node (+ ``move_penalty`` per group leaving its ``old_node``).

    The groups-on-nodes form of :func:`place_replicas` (each group placed once); returns
    ``[groups, nodes]`` 0/1.
    """
    groups = len(group_load)
    old_counts = None
    if old_node is not None and move_penalty > 0:
        old_counts = np.zeros((groups, num_nodes), dtype=np.int64)
        old_counts[np.arange(groups), old_node] = 1
    once = [np.array([1])] * groups
    return place_replicas(np.asarray(group_load, np.float64), once, num_nodes, groups // num_nodes,
                          ceiling, time_limit, old_counts, move_penalty)  # fmt: skip
