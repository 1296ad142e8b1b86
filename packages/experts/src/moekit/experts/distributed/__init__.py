"""Expert parallelism over ``torch.distributed``: tokens go to the ranks that own their experts
and come back summed (:class:`AllToAllPrepareAndFinalize`)."""

from moekit.experts.distributed.all_to_all import AllToAllPrepareAndFinalize
from moekit.experts.distributed.batched_all_to_all import AllToAllBatchedPrepareAndFinalize
from moekit.experts.distributed.group import check_same_config, expert_owners

__all__ = [
    "AllToAllBatchedPrepareAndFinalize",
    "AllToAllPrepareAndFinalize",
    "check_same_config",
    "expert_owners",
]
