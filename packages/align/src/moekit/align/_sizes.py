"""Output sizes, computed on the host from shapes only (no device synchronisation)."""

from __future__ import annotations


def cdiv(a: int, b: int) -> int:
    return -(-a // b)


def round_up(a: int, b: int) -> int:
    return cdiv(a, b) * b


def sorted_ids_length(numel: int, num_experts: int, block_size: int, pad_sorted_ids: bool) -> int:
    """Length ``P`` of ``sorted_token_ids`` (spec: Sizes); always holds every padded segment."""
    length = numel + num_experts * (block_size - 1)
    if pad_sorted_ids:
        length = round_up(length, block_size)
    if numel < num_experts:
        length = min(numel * block_size, length)
    return length
