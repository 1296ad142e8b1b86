"""Bad input is refused with ValueError/TypeError before any work (capability validates_input)."""

from __future__ import annotations

import numpy as np
import pytest

from moekit.conformance import adapters as caps

pytestmark = pytest.mark.requires(caps.VALIDATES_INPUT)
IDS = np.zeros((4, 2), dtype=np.int32)

BAD_ALIGN_CALLS = {
    "ids-1d": dict(topk_ids=np.zeros(4, dtype=np.int32), block_size=4, num_experts=4),
    "ids-3d": dict(topk_ids=np.zeros((2, 2, 2), dtype=np.int32), block_size=4, num_experts=4),
    "ids-float": dict(topk_ids=np.zeros((4, 2), dtype=np.float32), block_size=4, num_experts=4),
    "block-size-0": dict(topk_ids=IDS, block_size=0, num_experts=4),
    "num-experts-0": dict(topk_ids=IDS, block_size=4, num_experts=0),
    "map-wrong-length": dict(topk_ids=IDS, block_size=4, num_experts=4,
                             expert_map=np.zeros(3, dtype=np.int32)),
    "map-wrong-dtype": dict(topk_ids=IDS, block_size=4, num_experts=4,
                            expert_map=np.zeros(4, dtype=np.float32)),
    "map-duplicate-local": dict(topk_ids=IDS, block_size=4, num_experts=4,
                                expert_map=np.array([0, 0, -1, 1], dtype=np.int32),
                                ignore_invalid_experts=True),
}  # fmt: skip


@pytest.mark.parametrize("case", sorted(BAD_ALIGN_CALLS))
def test_bad_align_input_is_refused(adapter, case):
    if "duplicate" in case and caps.VALIDATES_MAP_VALUES not in adapter.capabilities:
        pytest.skip(f"{adapter.name} lacks capability {caps.VALIDATES_MAP_VALUES}")
    with pytest.raises((ValueError, TypeError)):
        adapter.moe_align_block_size(**BAD_ALIGN_CALLS[case])


@pytest.mark.requires(caps.BATCHED_ALIGN)
@pytest.mark.parametrize("counts", [[1, 9], [-1, 2]], ids=["above-max", "negative"])
def test_bad_batched_counts_are_refused(adapter, counts):
    with pytest.raises(ValueError):
        adapter.batched_moe_align_block_size(8, 4, np.array(counts, dtype=np.int32))
