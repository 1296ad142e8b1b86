"""The routing hook's kernel: logical ids -> physical replicas, with optional load recording."""

from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def map_to_physical_kernel(
    topk_ids_ptr,
    l2p_ptr,
    count_ptr,
    out_ptr,
    load_ptr,
    num_slots,
    top_k,
    num_logical,
    l2p_width,
    num_valid_tokens,
    RECORD: tl.constexpr,
    BLOCK: tl.constexpr,
):
    """One program maps ``BLOCK`` flat slots; invalid ids give -1 and record nothing."""
    slot = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    in_range = slot < num_slots
    expert = tl.load(topk_ids_ptr + slot, mask=in_range, other=-1).to(tl.int64)
    valid = in_range & (expert >= 0) & (expert < num_logical)
    safe_expert = tl.where(valid, expert, 0)
    count = tl.load(count_ptr + safe_expert, mask=valid, other=1).to(tl.int64)
    count = tl.maximum(count, 1)
    token = (slot // top_k).to(tl.int64)
    # Knuth's multiplicative hash, kept to 32 bits as the spec states.
    replica = ((token * 2654435769) & 0xFFFFFFFF) % count
    physical = tl.load(l2p_ptr + safe_expert * l2p_width + replica, mask=valid, other=-1)
    physical = tl.where(valid, physical, -1)
    tl.store(out_ptr + slot, physical.to(out_ptr.dtype.element_ty), mask=in_range)
    if RECORD:
        record = valid & (token < num_valid_tokens) & (physical >= 0)
        tl.atomic_add(
            load_ptr + tl.where(record, physical, 0),
            tl.full([BLOCK], 1, tl.int64).to(load_ptr.dtype.element_ty),
            mask=record,
        )
