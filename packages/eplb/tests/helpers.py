"""Seeded random inputs that say their seed when a test fails."""

from __future__ import annotations

import contextlib
import zlib

import numpy as np


def seed_of(*parts: object) -> int:
    return zlib.crc32(repr(parts).encode())


@contextlib.contextmanager
def seeded(*parts: object):
    """A NumPy generator seeded from ``parts``; a failure inside is re-raised with the seed."""
    seed = seed_of(*parts)
    try:
        yield np.random.default_rng(seed)
    except AssertionError as error:
        raise AssertionError(f"{error} (seed {seed}, case {parts})") from error


def skewed_load(rng: np.random.Generator, layers: int, experts: int, exponent: float = 1.2,
                tokens: int = 8192) -> np.ndarray:  # fmt: skip
    """Integer token counts per expert with a Zipf profile over a random expert order."""
    p = np.arange(1, experts + 1, dtype=np.float64) ** -exponent
    p /= p.sum()
    rows = [rng.multinomial(tokens, rng.permutation(p)) for _ in range(layers)]
    return np.stack(rows).astype(np.float32)
