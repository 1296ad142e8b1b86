"""The alignment ops of ``moekit.align`` in plain NumPy, written to read like the spec.

Every function takes and returns NumPy arrays. Integer outputs are ``int32`` (``int64`` for the
permute offsets); floating outputs are ``float64`` so that implementations are compared with the
exact sum.
"""

from __future__ import annotations

import numpy as np


def _cdiv(a: int, b: int) -> int:
    return -(-a // b)


def _round_up(a: int, b: int) -> int:
    return _cdiv(a, b) * b


def sorted_ids_length(numel: int, num_experts: int, block_size: int, pad_sorted_ids: bool) -> int:
    """Length ``P`` of ``sorted_token_ids`` for ``numel`` flat slots (spec: Sizes)."""
    length = numel + num_experts * (block_size - 1)
    if pad_sorted_ids:
        length = _round_up(length, block_size)
    if numel < num_experts:
        length = min(numel * block_size, length)
    return length


def _layout_expert(
    expert_id: int,
    num_experts: int,
    expert_map: np.ndarray | None,
    ignore_invalid_experts: bool,
) -> int | None:
    """The expert whose segment slot ``expert_id`` joins, or ``None`` when it is not placed."""
    if not 0 <= expert_id < num_experts:
        return None
    if expert_map is not None and ignore_invalid_experts:
        local = int(expert_map[expert_id])
        return local if local >= 0 else None
    return expert_id


def moe_align_block_size(
    topk_ids: np.ndarray,
    block_size: int,
    num_experts: int,
    expert_map: np.ndarray | None = None,
    pad_sorted_ids: bool = False,
    ignore_invalid_experts: bool = False,
    return_scatter_idx: bool = False,
) -> tuple[np.ndarray, ...]:
    """Sort the flat slots of ``topk_ids [num_tokens, top_k]`` into per-expert, block-padded segments.

    Returns ``(sorted_token_ids int32[P], expert_ids int32[cdiv(P, block_size)],
    num_tokens_post_pad int32[1])`` and, with ``return_scatter_idx``, ``scatter_idx int32[numel, 1]``
    holding the position of each placed slot in ``sorted_token_ids`` (``-1`` when not placed).
    """
    flat = [int(v) for v in np.asarray(topk_ids).reshape(-1)]
    numel = len(flat)
    length = sorted_ids_length(numel, num_experts, block_size, pad_sorted_ids)

    if expert_map is not None and ignore_invalid_experts:
        num_layout_experts = max(int(np.max(expert_map)) + 1, 0)
    else:
        num_layout_experts = num_experts

    slots_of_expert: list[list[int]] = [[] for _ in range(num_layout_experts)]
    for slot, expert_id in enumerate(flat):
        expert = _layout_expert(expert_id, num_experts, expert_map, ignore_invalid_experts)
        if expert is not None:
            slots_of_expert[expert].append(slot)  # ascending slot order inside a segment

    sorted_token_ids = np.full(length, numel, dtype=np.int32)
    expert_ids = np.full(_cdiv(length, block_size), -1, dtype=np.int32)
    scatter_idx = np.full((numel, 1), -1, dtype=np.int32)
    position = 0
    for expert, slots in enumerate(slots_of_expert):
        for rank, slot in enumerate(slots):
            sorted_token_ids[position + rank] = slot
            scatter_idx[slot, 0] = position + rank
        segment = _round_up(len(slots), block_size)
        block_id = expert
        if expert_map is not None and not ignore_invalid_experts:
            block_id = int(expert_map[expert])
        expert_ids[position // block_size : (position + segment) // block_size] = block_id
        position += segment

    outputs = (sorted_token_ids, expert_ids, np.array([position], dtype=np.int32))
    if return_scatter_idx:
        return (*outputs, scatter_idx)
    return outputs


def batched_moe_align_block_size(
    max_tokens_per_batch: int, block_size: int, expert_num_tokens: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Block-aligned ids of the valid rows of a ``[num_batches * max_tokens_per_batch, K]`` tensor."""
    counts = [int(c) for c in np.asarray(expert_num_tokens).reshape(-1)]
    num_batches = len(counts)
    for count in counts:
        if not 0 <= count <= max_tokens_per_batch:
            raise ValueError(
                f"expert_num_tokens holds {count}, outside [0, {max_tokens_per_batch}]"
            )
    length = num_batches * _round_up(max_tokens_per_batch, block_size)
    sentinel = num_batches * max_tokens_per_batch
    sorted_token_ids = np.full(length, sentinel, dtype=np.int32)
    expert_ids = np.full(length // block_size, -1, dtype=np.int32)
    position = 0
    for batch, count in enumerate(counts):
        for row in range(count):
            sorted_token_ids[position + row] = batch * max_tokens_per_batch + row
        segment = _round_up(count, block_size)
        expert_ids[position // block_size : (position + segment) // block_size] = batch
        position += segment
    return sorted_token_ids, expert_ids, np.array([position], dtype=np.int32)


def _slot_is_local(expert_id: int, expert_map: np.ndarray | None) -> bool:
    if expert_id < 0:
        return False
    if expert_map is None:
        return True
    return expert_id < len(expert_map) and int(expert_map[expert_id]) >= 0


def moe_sum(
    input: np.ndarray,
    topk_ids: np.ndarray | None = None,
    expert_map: np.ndarray | None = None,
) -> np.ndarray:
    """``out[t] = sum_j input[t, j]`` over ``top_k`` (float64), skipping slots that are not local."""
    x = np.asarray(input, dtype=np.float64)
    num_tokens, top_k, hidden = x.shape
    out = np.zeros((num_tokens, hidden), dtype=np.float64)
    for t in range(num_tokens):
        for j in range(top_k):
            if topk_ids is not None and not _slot_is_local(int(topk_ids[t, j]), expert_map):
                continue
            out[t] += x[t, j]
    return out


def count_expert_num_tokens(
    topk_ids: np.ndarray, num_local_experts: int, expert_map: np.ndarray | None = None
) -> np.ndarray:
    """Slots routed to each local expert: ``int32[num_local_experts]``."""
    counts = np.zeros(num_local_experts, dtype=np.int32)
    for expert_id in (int(v) for v in np.asarray(topk_ids).reshape(-1)):
        if expert_id < 0:
            continue
        if expert_map is not None:
            if expert_id >= len(expert_map):
                continue
            expert_id = int(expert_map[expert_id])
        if 0 <= expert_id < num_local_experts:
            counts[expert_id] += 1
    return counts


def moe_permute(
    hidden_states: np.ndarray,
    topk_ids: np.ndarray,
    num_experts: int,
    expert_map: np.ndarray | None = None,
    num_local_experts: int | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Stable sort of the flat slots by local expert, slots of no local expert last.

    Returns ``(permuted [T*top_k, K], expert_first_token_offset int64[num_local+1],
    inv_permuted_idx int32[T*top_k], permuted_idx int32[T*top_k])``.
    """
    ids = np.asarray(topk_ids)
    top_k = ids.shape[1]
    if num_local_experts is None:
        num_local_experts = num_experts if expert_map is None else int(np.max(expert_map)) + 1
    flat = [int(v) for v in ids.reshape(-1)]

    def sort_key(slot: int) -> int:
        expert = _layout_expert(flat[slot], num_experts, expert_map, True)
        return num_local_experts if expert is None else expert

    permuted_idx = np.array(sorted(range(len(flat)), key=sort_key), dtype=np.int32)  # stable
    inv_permuted_idx = np.empty(len(flat), dtype=np.int32)
    inv_permuted_idx[permuted_idx] = np.arange(len(flat), dtype=np.int32)
    offsets = np.zeros(num_local_experts + 1, dtype=np.int64)
    for slot in range(len(flat)):
        key = sort_key(slot)
        if key < num_local_experts:
            offsets[key + 1 :] += 1
    permuted = np.asarray(hidden_states)[permuted_idx // top_k]
    return permuted, offsets, inv_permuted_idx, permuted_idx


def moe_unpermute(
    permuted: np.ndarray,
    topk_weights: np.ndarray,
    inv_permuted_idx: np.ndarray,
    expert_first_token_offset: np.ndarray,
) -> np.ndarray:
    """``out[t] = sum_j topk_weights[t, j] * permuted[inv[t*top_k + j]]`` over local rows (float64)."""
    weights = np.asarray(topk_weights, dtype=np.float64)
    rows = np.asarray(permuted, dtype=np.float64)
    num_tokens, top_k = weights.shape
    num_local_rows = int(expert_first_token_offset[-1])
    out = np.zeros((num_tokens, rows.shape[1]), dtype=np.float64)
    for t in range(num_tokens):
        for j in range(top_k):
            row = int(inv_permuted_idx[t * top_k + j])
            if row < num_local_rows:
                out[t] += weights[t, j] * rows[row]
    return out
