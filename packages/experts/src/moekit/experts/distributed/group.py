"""What every rank of an expert-parallel group must agree on, and who owns which expert."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import torch
import torch.distributed as dist

from moekit.experts.layer.expert_map import ExpertPlacement, determine_expert_map


def expert_owners(num_experts: int, ep_size: int, strategy: ExpertPlacement = "linear"
                  ) -> torch.Tensor:  # fmt: skip
    """int64 ``[num_experts]``: the rank holding each expert under :func:`determine_expert_map`."""
    owners = torch.empty(num_experts, dtype=torch.int64)
    for rank in range(ep_size):
        owners[
            determine_expert_map(ep_size, rank, num_experts, strategy).local_expert_ids.long()
        ] = rank
    return owners


def check_same_config(config: dict[str, Any], group: dist.ProcessGroup | None) -> None:
    """All-gather a hash of ``config`` and refuse to go on when the ranks disagree.

    Raises:
        ValueError: naming the ranks whose configuration differs from rank 0's, and this rank's
            configuration.
    """
    digest = hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()
    digests: list[str | None] = [None] * dist.get_world_size(group)
    dist.all_gather_object(digests, digest, group=group)
    differing = [rank for rank, other in enumerate(digests) if other != digests[0]]
    if differing:
        raise ValueError(
            f"the expert-parallel ranks disagree on the layer's configuration: ranks {differing} "
            f"differ from rank 0 (this rank, {dist.get_rank(group)}, has {config})"
        )
