"""The EPLB face of the adapters (NumPy in, NumPy out), mixed into the adapter classes.

- ``rebalance_experts(weight, num_replicas, num_groups, num_nodes, num_ranks,
  old_global_expert_indices=None) -> (p2l, l2p, count)``: the default policy (capability
  ``eplb``).
- ``ilp_rebalance_experts(..., time_limit=1.0, hierarchical=True) -> (p2l, l2p, count,
  lower_bound [L])``: an optimising policy that promises to be never worse than the default
  one (capability ``eplb_ilp``).
- ``map_to_physical_and_record(topk_ids, logical_to_physical_map, logical_replica_count,
  num_replicas, num_valid_tokens=None) -> (physical_ids, load int64 [num_replicas])``: the
  routing hook on one layer (capability ``eplb_hook``).
"""

from __future__ import annotations

import numpy as np

EPLB = "eplb"
EPLB_ILP = "eplb_ilp"
EPLB_HOOK = "eplb_hook"
EPLB_CAPABILITIES = frozenset({EPLB, EPLB_ILP, EPLB_HOOK})


def moekit_eplb_available() -> bool:
    try:
        import moekit.eplb  # noqa: F401
    except ImportError:
        return False
    return True


class ReferenceEplbMixin:
    def rebalance_experts(self, weight, num_replicas, num_groups, num_nodes, num_ranks,
                          old_global_expert_indices=None):  # fmt: skip
        from moekit.reference import eplb

        return eplb.rebalance_experts(weight, num_replicas, num_groups, num_nodes, num_ranks,
                                      old_global_expert_indices)  # fmt: skip

    def map_to_physical_and_record(self, topk_ids, logical_to_physical_map,
                                   logical_replica_count, num_replicas, num_valid_tokens=None):  # fmt: skip
        from moekit.reference import eplb

        return eplb.map_to_physical_and_record(topk_ids, logical_to_physical_map,
                                               logical_replica_count, num_replicas,
                                               num_valid_tokens)  # fmt: skip


class MoekitEplbMixin:
    backend: str
    device: str

    def rebalance_experts(self, weight, num_replicas, num_groups, num_nodes, num_ranks,
                          old_global_expert_indices=None):  # fmt: skip
        from moekit.eplb import DefaultEplbPolicy

        return DefaultEplbPolicy.rebalance_experts(np.asarray(weight), num_replicas, num_groups,
                                                   num_nodes, num_ranks,
                                                   old_global_expert_indices)  # fmt: skip

    def ilp_rebalance_experts(self, weight, num_replicas, num_groups, num_nodes, num_ranks,
                              old_global_expert_indices=None, time_limit=1.0, hierarchical=True):  # fmt: skip
        from moekit.eplb import IlpEplbPolicy

        plan = IlpEplbPolicy.plan(np.asarray(weight), num_replicas, num_groups, num_nodes,
                                  num_ranks, old_global_expert_indices, time_limit=time_limit,
                                  hierarchical=hierarchical)  # fmt: skip
        bounds = np.array([r.lower_bound for r in plan.reports])
        return plan.physical_to_logical_map, plan.logical_to_physical_map, plan.expert_count, bounds

    def map_to_physical_and_record(self, topk_ids, logical_to_physical_map,
                                   logical_replica_count, num_replicas, num_valid_tokens=None):  # fmt: skip
        import torch

        from moekit.eplb import map_to_physical_and_record

        def tensor(a):
            return torch.from_numpy(np.ascontiguousarray(a)).to(self.device)

        # The hook adds to what is there: start from 5 so overwriting instead of adding shows.
        load = torch.full((num_replicas,), 5, dtype=torch.int64, device=self.device)
        physical = map_to_physical_and_record(
            tensor(topk_ids), tensor(logical_to_physical_map), tensor(logical_replica_count),
            load, num_valid_tokens, backend=self.backend,
        )  # fmt: skip
        return physical.cpu().numpy(), load.cpu().numpy() - 5
