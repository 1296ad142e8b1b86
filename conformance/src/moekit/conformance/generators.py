"""Seeded inputs for the cases; each generator is reproducible from its arguments alone."""

from __future__ import annotations

import numpy as np


def topk_ids(
    seed: int,
    num_tokens: int,
    top_k: int,
    num_experts: int,
    *,
    skew: float = 0.0,
    invalid_fraction: float = 0.0,
    dtype: str = "int32",
) -> np.ndarray:
    """``[num_tokens, top_k]`` distinct experts per token (Zipf ``skew``; 0 is uniform), with a
    fraction of slots replaced by invalid ids (``-1`` or ``>= num_experts``)."""
    rng = np.random.default_rng(seed)
    k = min(top_k, num_experts)
    popularity = 1.0 / np.arange(1, num_experts + 1) ** skew
    popularity = rng.permutation(popularity)
    gumbel = rng.gumbel(size=(num_tokens, num_experts))
    ids = np.argsort(-(np.log(popularity) + gumbel), axis=1, kind="stable")[:, :k]
    if k < top_k:
        ids = np.concatenate([ids, rng.integers(0, num_experts, (num_tokens, top_k - k))], 1)
    if invalid_fraction:
        mask = rng.random(ids.shape) < invalid_fraction
        bad = rng.choice(np.array([-1, num_experts, num_experts + 7]), size=ids.shape)
        ids = np.where(mask, bad, ids)
    return ids.astype(dtype)


def expert_map(seed: int, num_experts: int, num_local: int, *, contiguous: bool = False):
    """int32 ``[num_experts]``: ``num_local`` experts get local ids ``0..num_local-1``."""
    rng = np.random.default_rng(seed)
    mapping = np.full(num_experts, -1, dtype=np.int32)
    if contiguous:
        start = int(rng.integers(0, num_experts - num_local + 1))
        mapping[start : start + num_local] = np.arange(num_local)
    else:
        chosen = np.sort(rng.choice(num_experts, size=num_local, replace=False))
        mapping[chosen] = rng.permutation(num_local)
    return mapping


def floats(seed: int, shape: tuple[int, ...], scale: float = 0.1) -> np.ndarray:
    """``randn * scale`` as float64 (cast by the adapter to the dtype under test)."""
    return np.random.default_rng(seed).standard_normal(shape) * scale


def stable_seed(*parts: object) -> int:
    """A seed derived from a case's parameters, the same in every process (unlike ``hash``)."""
    import zlib

    return zlib.crc32(repr(parts).encode())
