"""A placement policy on mixed-integer programming (scipy.optimize.milp, HiGHS), never worse than
the default policy.

Per layer, the placement minimising the most loaded rank is sought in stages, because one dense
program over every (expert, rank) pair does not solve in a second at DeepSeek-V3 scale:

1. **Groups on nodes** (hierarchical mode): a program puts the same number of groups on each
   node, minimising the heaviest node.
2. **Replica counts**: fixed before placement, by the greedy rule (a replica at a time to the
   largest load per replica), which minimises the heaviest replica. Fixing the counts is the
   linearisation of the ``weight[e] / r_e`` term: with counts known, loads are linear in the
   placement.
3. **Replicas on ranks**: per node (hierarchical) or per block of at most 8 ranks (flat; the
   replicas are first split over the blocks by the greedy packing), a program places integer
   replica counts ``x[e, g]`` on the ranks, each rank exactly full, minimising the heaviest
   rank ``T`` (+ ``migration_weight`` per replica not already on its rank). The greedy
   placement's value is a cut-off, and without migration the ranks' loads are ordered
   (symmetry breaking).

The stages are a decomposition: the result is optimal for its node assignment and counts, not
proven optimal overall; the report says how far it can be from the proven lower bound. The
layer's time limit is shared among its programs, and each keeps its best solution so far when
the time runs out. Finally the whole layer is compared with the default policy and the better
placement is returned (the default on ties), so the ILP policy is never worse.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from moekit.eplb._checks import ArrayLike, EplbProblem, check_problem
from moekit.eplb._milp import assign_groups, place_replicas
from moekit.eplb.default_policy import (
    balanced_packing,
    default_placement,
    preserve_slots,
    rebalance_experts_hierarchical,
    replicate_experts,
)
from moekit.eplb.policy import AbstractEplbPolicy, logical_maps

MAX_BLOCK_RANKS = 8
_STATUS_ORDER = ("optimal", "time_limit", "infeasible", "unbounded", "error")


@dataclass(frozen=True)
class LayerReport:
    """One layer's solve.

    Attributes:
        layer: the layer index.
        objective: the most loaded rank of the returned placement.
        default_objective: the most loaded rank under the default policy.
        lower_bound: a proven lower bound on the most loaded rank of any placement the policy
            may return: ``max(sum(weight) / num_ranks, max_e weight[e] / (num_replicas -
            num_logical + 1))``, and in hierarchical mode also the groups-on-nodes program's
            bound on the heaviest node over its ranks (with one group per node, the node's
            heaviest replica under the greedy counts, which minimise it).
        gap: ``(objective - lower_bound) / objective`` (0 for an unloaded layer).
        status: the worst status of the layer's programs (``optimal``: each program solved to
            optimality; ``time_limit``: at least one stopped at the limit with its incumbent).
        source: ``"ilp"`` or ``"default"``, whichever placement was returned.
        moves: replicas copied onto a rank against the old map (None without an old map).
        seconds: wall time of the layer.
    """

    layer: int
    objective: float
    default_objective: float
    lower_bound: float
    gap: float
    status: str
    source: str
    moves: int | None
    seconds: float


@dataclass(frozen=True)
class IlpPlan:
    """The maps of :meth:`IlpEplbPolicy.plan` (same kind as the input) and one report per
    layer."""

    physical_to_logical_map: ArrayLike
    logical_to_physical_map: ArrayLike
    expert_count: ArrayLike
    reports: list[LayerReport]


class IlpEplbPolicy(AbstractEplbPolicy):
    """Mixed-integer placement (see the module docstring for the formulation and its stages).

    ``rebalance_experts`` takes the abstract policy's arguments plus keyword options:
    ``time_limit`` (seconds per layer, default 1.0), ``migration_weight`` (load units charged per
    replica moved against ``old_global_expert_indices``, default 0) and ``hierarchical`` (keep
    each group's experts on one node when ``num_groups % num_nodes == 0``, default True).
    :meth:`plan` also returns the per-layer reports.
    """

    @classmethod
    def rebalance_experts(
        cls,
        weight: ArrayLike,
        num_replicas: int,
        num_groups: int,
        num_nodes: int,
        num_ranks: int,
        old_global_expert_indices: ArrayLike | None = None,
        *,
        time_limit: float = 1.0,
        migration_weight: float = 0.0,
        hierarchical: bool = True,
    ) -> tuple[ArrayLike, ArrayLike, ArrayLike]:
        plan = cls.plan(weight, num_replicas, num_groups, num_nodes, num_ranks,
                        old_global_expert_indices, time_limit=time_limit,
                        migration_weight=migration_weight, hierarchical=hierarchical)  # fmt: skip
        return plan.physical_to_logical_map, plan.logical_to_physical_map, plan.expert_count

    @classmethod
    def plan(
        cls,
        weight: ArrayLike,
        num_replicas: int,
        num_groups: int,
        num_nodes: int,
        num_ranks: int,
        old_global_expert_indices: ArrayLike | None = None,
        *,
        time_limit: float = 1.0,
        migration_weight: float = 0.0,
        hierarchical: bool = True,
        progress=None,
    ) -> IlpPlan:
        """Like ``rebalance_experts``, with the per-layer :class:`LayerReport` list.
        ``progress(layer_index, report)`` is called after each layer when given."""
        problem = check_problem(weight, num_replicas, num_groups, num_nodes, num_ranks,
                                old_global_expert_indices)  # fmt: skip
        if (
            isinstance(time_limit, bool)
            or not isinstance(time_limit, (int, float))
            or not (time_limit > 0)
        ):
            raise ValueError(f"time_limit must be a positive number of seconds, got {time_limit!r}")
        if not isinstance(migration_weight, (int, float)) or not migration_weight >= 0:
            raise ValueError(f"migration_weight must be >= 0, got {migration_weight!r}")
        solver = _LayerSolver(problem, float(time_limit), float(migration_weight),
                              bool(hierarchical))  # fmt: skip
        defaults = default_placement(problem.weight, problem.num_replicas, problem.num_groups,
                                     problem.num_nodes, problem.num_ranks)  # fmt: skip
        if problem.old_physical_to_logical is not None:
            defaults = preserve_slots(defaults, problem.old_physical_to_logical, problem.num_ranks)
        rows, reports = [], []
        for layer in range(problem.num_layers):
            row, report = solver.solve(layer, defaults[layer].numpy())
            rows.append(row)
            reports.append(report)
            if progress is not None:
                progress(layer, report)
        p2l = torch.from_numpy(np.stack(rows))
        l2p, count = logical_maps(p2l, problem.num_logical)
        return IlpPlan(problem.output(p2l), problem.output(l2p), problem.output(count), reports)


def _max_rank_load(load: np.ndarray, row: np.ndarray, num_ranks: int) -> float:
    count = np.bincount(row, minlength=len(load))
    return float((load[row] / count[row]).reshape(num_ranks, -1).sum(axis=1).max())


def _moves(old: np.ndarray | None, new: np.ndarray, num_ranks: int) -> int | None:
    if old is None:
        return None
    size = int(max(old.max(), new.max())) + 1
    return int(sum(np.maximum(np.bincount(n, minlength=size) - np.bincount(o, minlength=size), 0).sum()
                   for o, n in zip(np.split(old, num_ranks), np.split(new, num_ranks))))  # fmt: skip


def _worst(statuses: list[str]) -> str:
    return max(statuses, key=_STATUS_ORDER.index) if statuses else "optimal"


@dataclass
class _Block:
    """One placement program's data: replicas of ``experts`` on ``ranks`` (``counts`` by the
    greedy rule, each carrying ``item_load / count``), its current best placement ``x``."""

    experts: np.ndarray
    counts: np.ndarray
    item_load: np.ndarray
    ranks: Sequence[int]
    free_counts: bool
    old_counts: np.ndarray | None = None
    x: np.ndarray | None = None
    cost: float = 0.0
    done: bool = False


class _LayerSolver:
    def __init__(self, problem: EplbProblem, time_limit: float, migration_weight: float,
                 hierarchical: bool) -> None:  # fmt: skip
        self.problem = problem
        self.time_limit = time_limit
        self.migration_weight = migration_weight
        self.hierarchical = hierarchical and problem.num_groups % problem.num_nodes == 0
        self.slots_per_rank = problem.num_replicas // problem.num_ranks

    def solve(self, layer: int, default_row: np.ndarray) -> tuple[np.ndarray, LayerReport]:
        start = time.perf_counter()
        p = self.problem
        load32 = p.weight[layer]
        load = load32.numpy().astype(np.float64)
        old = (
            None if p.old_physical_to_logical is None else p.old_physical_to_logical[layer].numpy()
        )
        self.deadline = start + self.time_limit
        self.statuses: list[str] = []
        self.hierarchy_bound = 0.0
        if self.hierarchical:
            row = self._place(self._hierarchical(load32, load, old), old)
        else:
            row = self._flat(load32, load, old)
        if old is not None:
            row = preserve_slots(torch.from_numpy(row)[None], torch.from_numpy(old)[None],
                                 p.num_ranks)[0].numpy()  # fmt: skip
        mw = self.migration_weight
        ilp_t = _max_rank_load(load, row, p.num_ranks)
        default_t = _max_rank_load(load, default_row, p.num_ranks)
        ilp_moves, default_moves = (
            _moves(old, row, p.num_ranks),
            _moves(old, default_row, p.num_ranks),
        )
        ilp_cost = ilp_t + mw * (ilp_moves or 0)
        default_cost = default_t + mw * (default_moves or 0)
        use_ilp = ilp_cost < default_cost * (1 - 1e-12)
        chosen = row if use_ilp else default_row.copy()
        objective = ilp_t if use_ilp else default_t
        bound = max(float(load.sum()) / p.num_ranks,
                    float(load.max()) / (p.num_replicas - p.num_logical + 1),
                    self.hierarchy_bound)  # fmt: skip
        report = LayerReport(
            layer=layer, objective=objective, default_objective=default_t, lower_bound=bound,
            gap=(objective - bound) / objective if objective > 0 else 0.0,
            status=_worst(self.statuses), source="ilp" if use_ilp else "default",
            moves=ilp_moves if use_ilp else default_moves,
            seconds=time.perf_counter() - start,
        )  # fmt: skip
        return chosen.astype(np.int64), report

    def _hierarchical(self, load32: torch.Tensor, load: np.ndarray, old: np.ndarray | None
                      ) -> list[_Block]:  # fmt: skip
        p = self.problem
        group_size = p.num_logical // p.num_groups
        group_load32 = load32.view(p.num_groups, group_size).sum(-1)
        group_load = group_load32.numpy().astype(np.float64)
        pack, _ = balanced_packing(group_load32[None], p.num_nodes)
        node_of_group = pack[0].numpy()
        ranks_per_node = p.num_ranks // p.num_nodes
        if p.num_nodes > 1:
            greedy = np.bincount(node_of_group, weights=group_load, minlength=p.num_nodes).max()
            old_node, penalty = None, 0.0
            if old is not None and self.migration_weight > 0:
                node_of_slot = np.arange(p.num_replicas) // (self.slots_per_rank * ranks_per_node)
                held = np.zeros((p.num_groups, p.num_nodes))
                np.add.at(held, (old // group_size, node_of_slot), 1)
                old_node = held.argmax(axis=1)
                penalty = self.migration_weight * p.num_replicas / p.num_groups
                greedy += penalty * int((old_node != node_of_group).sum())
            budget = max((self.deadline - time.perf_counter()) * 0.1, 1e-3)
            outcome = assign_groups(group_load, p.num_nodes, greedy, budget, old_node, penalty)
            self.statuses.append(outcome.status)
            if outcome.solution is not None:
                node_of_group = outcome.solution.argmax(axis=1)
            if penalty == 0:  # a bound on the heaviest node of any hierarchical placement
                self.hierarchy_bound = outcome.lower_bound / ranks_per_node
        blocks = []
        slots_per_node = p.num_replicas // p.num_nodes
        for node in range(p.num_nodes):
            groups = np.flatnonzero(node_of_group == node)
            experts = (groups[:, None] * group_size + np.arange(group_size)).reshape(-1)
            _, _, counts = replicate_experts(load32[experts][None], slots_per_node)
            node_counts = counts[0].numpy()
            if p.num_groups == p.num_nodes:
                # Each node's groups are forced, and the greedy counts minimise the heaviest
                # replica: a bound on any hierarchical placement.
                heaviest = float((load[experts] / node_counts).max())
                self.hierarchy_bound = max(self.hierarchy_bound, heaviest,
                                           float(load[experts].sum()) / ranks_per_node)  # fmt: skip
            ranks = range(node * ranks_per_node, (node + 1) * ranks_per_node)
            blocks.append(_Block(experts, node_counts, load[experts], ranks, free_counts=True))
        return blocks

    def _flat(self, load32: torch.Tensor, load: np.ndarray, old: np.ndarray | None) -> np.ndarray:
        """Start from the global greedy placement; with at most ``MAX_BLOCK_RANKS`` ranks, one
        program over all of them (counts free). Otherwise improve it block by block: the
        heaviest rank with the lightest ``MAX_BLOCK_RANKS - 1`` ranks, their replicas re-placed
        by a program (counts fixed: other ranks hold replicas of the same experts), until the
        time is spent or the heaviest rank cannot improve."""
        p = self.problem
        size = self.slots_per_rank
        greedy, _, _ = rebalance_experts_hierarchical(load32[None], p.num_replicas, 1, 1,
                                                      p.num_ranks)  # fmt: skip
        row: np.ndarray = greedy[0].numpy().copy()
        counts = np.bincount(row, minlength=p.num_logical)
        if p.num_ranks <= MAX_BLOCK_RANKS:
            block = _Block(np.arange(p.num_logical), counts, load, range(p.num_ranks), True)
            return self._place([block], old)
        per_replica = load / counts
        tried = set()
        while time.perf_counter() < self.deadline:
            rank_load = per_replica[row].reshape(p.num_ranks, size).sum(axis=1)
            heaviest = int(np.argmax(rank_load))
            lightest = [int(r) for r in np.argsort(rank_load, kind="stable") if r != heaviest]
            ranks = sorted([heaviest, *lightest[: MAX_BLOCK_RANKS - 1]])
            if tuple(ranks) in tried:
                break
            tried.add(tuple(ranks))
            block_slots = np.concatenate([np.arange(r * size, (r + 1) * size) for r in ranks])
            experts, block_counts = np.unique(row[block_slots], return_counts=True)
            block = _Block(experts, block_counts, per_replica[experts] * block_counts, ranks, False)
            placed = np.zeros((len(experts), len(ranks)), dtype=np.int64)
            position = np.searchsorted(experts, row[block_slots])
            np.add.at(placed, (position, np.repeat(np.arange(len(ranks)), size)), 1)
            block.x = placed
            self._old_counts(block, old)
            block.cost = self._block_cost(block, block.x)
            if not self._improve(block, target=block.cost, budget_share=2):
                break
            for b, rank in enumerate(ranks):
                row[rank * size : (rank + 1) * size] = np.sort(np.repeat(experts, block.x[:, b]))

        return row

    def _place(self, blocks: list[_Block], old: np.ndarray | None) -> np.ndarray:
        """Greedy placement for every block, then programs where they can help: without
        migration only the block holding the heaviest rank matters, so it is improved first
        and the next heaviest after it, until the time is spent or the heaviest block cannot
        improve; with migration every block is solved, the time shared evenly."""
        size = self.slots_per_rank
        for block in blocks:
            self._greedy(block, old)
        if old is not None and self.migration_weight > 0:
            for i, block in enumerate(blocks):
                self._improve(block, target=block.cost, budget_share=len(blocks) - i)
        else:
            while time.perf_counter() < self.deadline:
                worst = max(blocks, key=lambda b: b.cost)
                if worst.done:
                    break
                # Half the time left: an improved block may hand the lead to another one.
                improved = self._improve(worst, target=worst.cost, budget_share=2)
                worst.done = not improved or self.statuses[-1] == "optimal"
        row = np.empty(self.problem.num_replicas, dtype=np.int64)
        for block in blocks:
            assert block.x is not None  # every block has its greedy placement
            for b, rank in enumerate(block.ranks):
                row[rank * size : (rank + 1) * size] = np.sort(
                    np.repeat(block.experts, block.x[:, b])
                )
        return row

    def _block_cost(self, block: _Block, x: np.ndarray) -> float:
        bin_load = (block.item_load / np.maximum(x.sum(axis=1), 1)) @ x
        moved = 0
        if block.old_counts is not None:
            moved = np.maximum(x - block.old_counts, 0).sum()
        return float(bin_load.max()) + self.migration_weight * moved

    def _greedy(self, block: _Block, old: np.ndarray | None) -> None:
        num_bins = len(block.ranks)
        per_replica = block.item_load / block.counts
        replica_item = np.repeat(np.arange(len(block.experts)), block.counts)
        replica_load32 = torch.from_numpy(per_replica[replica_item].astype(np.float32))
        greedy_bin = balanced_packing(replica_load32[None], num_bins)[0][0].numpy()
        block.x = np.zeros((len(block.experts), num_bins), dtype=np.int64)
        np.add.at(block.x, (replica_item, greedy_bin), 1)
        self._old_counts(block, old)
        block.cost = self._block_cost(block, block.x)

    def _old_counts(self, block: _Block, old: np.ndarray | None) -> None:
        """With migration, how many replicas of each block expert each block rank holds now."""
        if old is None or self.migration_weight == 0:
            return
        size = self.slots_per_rank
        block.old_counts = np.zeros((len(block.experts), len(block.ranks)), dtype=np.int64)
        position = {int(e): i for i, e in enumerate(block.experts)}
        for b, rank in enumerate(block.ranks):
            for expert in old[rank * size : (rank + 1) * size]:
                if int(expert) in position:
                    block.old_counts[position[int(expert)], b] += 1

    def _improve(self, block: _Block, target: float, budget_share: int) -> bool:
        """Run the block's program; True when it found a cheaper placement."""
        num_bins = len(block.ranks)
        per_replica = block.item_load / block.counts
        floor = float(block.item_load.sum()) / num_bins
        if not block.free_counts:
            floor = max(floor, float(per_replica.max()))
        if block.old_counts is None and target <= floor * (1 + 1e-9):
            self.statuses.append("optimal")  # the greedy packing reaches the bound
            return False
        candidates = [np.array([c]) for c in block.counts]
        if block.free_counts:
            # The experts whose replicas are heaviest may take more or fewer replicas.
            total_slots = num_bins * self.slots_per_rank
            for i in np.argsort(-per_replica, kind="stable")[: 2 * num_bins]:
                low, high = max(1, block.counts[i] - 2), min(block.counts[i] + 2, total_slots)
                candidates[i] = np.arange(low, high + 1)
        budget = max((self.deadline - time.perf_counter()) / max(budget_share, 1), 1e-3)
        outcome = place_replicas(block.item_load, candidates, num_bins, self.slots_per_rank,
                                 target, budget, block.old_counts, self.migration_weight)  # fmt: skip
        self.statuses.append(outcome.status)
        if outcome.solution is not None:
            cost = self._block_cost(block, outcome.solution)
            if cost < block.cost:
                block.x, block.cost = outcome.solution, cost
                return True
        return False
