"""EPLB at runtime: the maps the routing hook reads, the load it records, and the periodic
rearrangement that calls a policy and reports which expert weights must move."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from moekit.eplb._backend import Backend
from moekit.eplb._checks import check_int, check_layout
from moekit.eplb.default_policy import DefaultEplbPolicy
from moekit.eplb.hook import map_to_physical_and_record
from moekit.eplb.metrics import aggregate_balancedness, rank_load
from moekit.eplb.policy import AbstractEplbPolicy, logical_maps


@dataclass(frozen=True)
class ExpertMove:
    """Copy ``expert``'s weights of ``layer`` from physical slot ``source_slot`` (old placement)
    into ``target_slot`` (new placement)."""

    layer: int
    expert: int
    source_slot: int
    target_slot: int


@dataclass(frozen=True)
class Rearrangement:
    """What :meth:`EplbState.rearrange` committed: the new maps (CPU int64), the weight moves,
    and vLLM's aggregate balancedness of the window's load before and after."""

    physical_to_logical_map: torch.Tensor
    logical_to_physical_map: torch.Tensor
    logical_replica_count: torch.Tensor
    moves: list[ExpertMove] = field(repr=False)
    balancedness_before: float
    balancedness_after: float


def initial_physical_to_logical(num_layers: int, num_logical: int, num_replicas: int
                                ) -> torch.Tensor:  # fmt: skip
    """Physical ``i -> i`` for the first ``num_logical`` slots, redundant ``j -> j % num_logical``."""
    row = torch.arange(num_replicas, dtype=torch.int64) % num_logical
    return row.expand(num_layers, -1).clone()


def weight_moves(old_p2l: torch.Tensor, new_p2l: torch.Tensor, num_ranks: int) -> list[ExpertMove]:
    """For every slot whose expert changes, a move from an old slot holding that expert: one on
    the target's own rank when there is one (a local copy), else the lowest such slot."""
    moves = []
    per_rank = old_p2l.shape[1] // num_ranks
    old_np, new_np = old_p2l.numpy(), new_p2l.numpy()
    for layer in range(old_np.shape[0]):
        holders: dict[int, list[int]] = {}
        for slot, expert in enumerate(old_np[layer].tolist()):
            holders.setdefault(expert, []).append(slot)
        for slot in np.flatnonzero(old_np[layer] != new_np[layer]).tolist():
            expert = int(new_np[layer, slot])
            sources = holders[expert]
            local = [s for s in sources if s // per_rank == slot // per_rank]
            moves.append(ExpertMove(layer, expert, (local or sources)[0], slot))
    return moves


class EplbState:
    """The maps, the load window and the rearrangement schedule of one model's MoE layers.

    Args:
        num_layers: MoE layers.
        num_logical: logical experts per layer.
        num_replicas: physical slots per layer (``>= num_logical``, a multiple of
            ``num_ranks``).
        num_groups: expert groups, passed to the policy.
        num_nodes: nodes, passed to the policy.
        num_ranks: ranks, passed to the policy.
        policy: an :class:`AbstractEplbPolicy` subclass (default :class:`DefaultEplbPolicy`);
            ``policy_options`` are passed to its ``rebalance_experts`` as keywords.
        window_size: passes summed by a rearrangement.
        step_interval: :meth:`step` calls between rearrangements.
        device: where the maps and the load live (the routing hook's device).

    Attributes:
        physical_to_logical_map: ``int64 [L, num_replicas]``.
        logical_to_physical_map: ``int64 [L, num_logical, num_replicas - num_logical + 1]``.
        logical_replica_count: ``int64 [L, num_logical]``.
        expert_load_pass: ``int64 [L, num_replicas]``, this step's recorded load.
        expert_load_window: ``int64 [window_size, L, num_replicas]``, a circular buffer.

    The maps are updated in place, so kernels or CUDA graphs holding them see the new layout.
    """

    def __init__(self, num_layers: int, num_logical: int, num_replicas: int, *,
                 num_groups: int = 1, num_nodes: int = 1, num_ranks: int = 1,
                 policy: type[AbstractEplbPolicy] = DefaultEplbPolicy,
                 policy_options: dict[str, Any] | None = None, window_size: int = 1000,
                 step_interval: int = 3000, device: torch.device | str = "cpu") -> None:  # fmt: skip
        self.num_layers = check_int(num_layers, "num_layers", 1)
        self.num_logical = check_int(num_logical, "num_logical", 1)
        layout = check_layout(self.num_logical, num_replicas, num_groups, num_nodes, num_ranks)
        self.num_replicas, self.num_groups, self.num_nodes, self.num_ranks = layout
        if not (isinstance(policy, type) and issubclass(policy, AbstractEplbPolicy)):
            raise TypeError(f"policy must be an AbstractEplbPolicy subclass, got {policy!r}")
        self.policy = policy
        self.policy_options = dict(policy_options or {})
        self.window_size = check_int(window_size, "window_size", 1)
        self.step_interval = check_int(step_interval, "step_interval", 1)
        self.device = torch.device(device)
        p2l = initial_physical_to_logical(self.num_layers, self.num_logical, self.num_replicas)
        l2p, count = logical_maps(p2l, self.num_logical)
        self.physical_to_logical_map = p2l.to(self.device)
        self.logical_to_physical_map = l2p.to(self.device)
        self.logical_replica_count = count.to(self.device)
        shape = (self.num_layers, self.num_replicas)
        self.expert_load_pass = torch.zeros(shape, dtype=torch.int64, device=self.device)
        self.expert_load_window = torch.zeros((self.window_size, *shape), dtype=torch.int64,
                                              device=self.device)  # fmt: skip
        self.window_position = 0
        self.steps = 0

    def to(self, device: torch.device | str) -> EplbState:
        """Move the maps and the load to ``device`` (in place; a no-op when already there)."""
        device = torch.device(device)
        if device != self.physical_to_logical_map.device:
            for name in ("physical_to_logical_map", "logical_to_physical_map",
                         "logical_replica_count", "expert_load_pass", "expert_load_window"):  # fmt: skip
                setattr(self, name, getattr(self, name).to(device))
            self.device = device
        return self

    def record(self, layer: int, topk_ids: torch.Tensor, num_valid_tokens: int | None = None,
               backend: Backend = "auto") -> torch.Tensor:  # fmt: skip
        """Map one layer's logical ``topk_ids`` to physical ids and record this pass's load
        (:func:`map_to_physical_and_record` on the layer's maps)."""
        if (
            isinstance(layer, bool)
            or not isinstance(layer, int)
            or not 0 <= layer < self.num_layers
        ):
            raise ValueError(f"layer must be an int in [0, {self.num_layers}), got {layer!r}")
        return map_to_physical_and_record(
            topk_ids, self.logical_to_physical_map[layer], self.logical_replica_count[layer],
            self.expert_load_pass[layer], num_valid_tokens, backend=backend,
        )  # fmt: skip

    def end_pass(self) -> bool:
        """Move this pass's load into the window; return whether a rearrangement is due (every
        ``step_interval`` passes). :meth:`step` is this plus the rearrangement."""
        self.expert_load_window[self.window_position].copy_(self.expert_load_pass)
        self.expert_load_pass.zero_()
        self.window_position = (self.window_position + 1) % self.window_size
        self.steps += 1
        return self.steps % self.step_interval == 0

    def step(self) -> Rearrangement | None:
        """End a forward pass: move its load into the window; every ``step_interval`` steps,
        :meth:`rearrange` and return what it did (None otherwise)."""
        if self.end_pass():
            return self.rearrange()
        return None

    def logical_load(self) -> torch.Tensor:
        """The window's load per logical expert, ``int64 [L, num_logical]`` on the CPU."""
        physical = self.expert_load_window.sum(dim=0).cpu()
        logical = torch.zeros(self.num_layers, self.num_logical, dtype=torch.int64)
        return logical.scatter_add_(1, self.physical_to_logical_map.cpu(), physical)

    def plan(self, logical_load: torch.Tensor | None = None) -> torch.Tensor:
        """The policy's new ``physical_to_logical_map`` (CPU int64 ``[L, num_replicas]``) for
        ``logical_load`` (default: this state's window), without committing it."""
        load = self.logical_load() if logical_load is None else logical_load
        new_p2l, _, _ = self.policy.rebalance_experts(
            load, self.num_replicas, self.num_groups, self.num_nodes, self.num_ranks,
            self.physical_to_logical_map.cpu(), **self.policy_options,
        )  # fmt: skip
        return torch.as_tensor(new_p2l).cpu().to(torch.int64)

    def rearrange(self) -> Rearrangement:
        """Run the policy on the window's load against the current map, commit the new maps in
        place and return them with the expert weight moves they need."""
        load = self.logical_load()
        return self.commit(self.plan(load), load)

    def commit(self, new_p2l: torch.Tensor, logical_load: torch.Tensor) -> Rearrangement:
        """Make ``new_p2l`` the placement (maps updated in place) and return the moves it needs,
        with the balancedness of ``logical_load`` before and after. Expert-parallel ranks call
        this with the same map (planned on one rank, broadcast), so they move the same weights.

        Raises:
            ValueError: a map of the wrong shape, or one that drops a logical expert.
        """
        new_p2l = torch.as_tensor(new_p2l).cpu().to(torch.int64)
        if tuple(new_p2l.shape) != (self.num_layers, self.num_replicas):
            raise ValueError(f"new_p2l must be [{self.num_layers}, {self.num_replicas}], got "
                             f"{list(new_p2l.shape)}")  # fmt: skip
        if new_p2l.numel() and (int(new_p2l.min()) < 0 or int(new_p2l.max()) >= self.num_logical):
            raise ValueError(f"new_p2l must hold logical ids in [0, {self.num_logical})")
        new_l2p, new_count = logical_maps(new_p2l, self.num_logical)
        if int(new_count.min()) < 1:
            raise ValueError("new_p2l must place every logical expert at least once")
        load, old = logical_load, self.physical_to_logical_map.cpu()
        before = aggregate_balancedness(rank_load(load, old, self.num_ranks))
        after = aggregate_balancedness(rank_load(load, new_p2l, self.num_ranks))
        moves = weight_moves(old, new_p2l, self.num_ranks)
        self.physical_to_logical_map.copy_(new_p2l)
        self.logical_to_physical_map.copy_(new_l2p)
        self.logical_replica_count.copy_(new_count)
        return Rearrangement(new_p2l, new_l2p, new_count, moves, before, after)
