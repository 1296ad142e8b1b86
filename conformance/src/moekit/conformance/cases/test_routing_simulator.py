"""Statistics of the routing simulator's strategies, with fixed seeds (spec: Routing simulator).

Thresholds sit at about four standard deviations (or the chi-square 0.9999 quantile), so a
correct sampler fails with probability far below 1e-3 for any seed, and the fixed seeds make
each run repeat exactly.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from moekit.conformance import routing_adapters as rcaps
from moekit.conformance.checks import ConformanceError
from moekit.reference import routing

pytestmark = pytest.mark.requires(rcaps.ROUTING_SIMULATOR)


def chi_square_limit(dof: int, z: float = 3.72) -> float:
    """Wilson-Hilferty approximation of the chi-square quantile at ``z`` standard deviations."""
    h = 2.0 / (9.0 * dof)
    return dof * (1.0 - h + z * math.sqrt(h)) ** 3


def chi_square(counts: np.ndarray, probabilities: np.ndarray) -> float:
    expected = counts.sum() * probabilities
    return float(((counts - expected) ** 2 / expected).sum())


def _simulate(adapter, strategy, num_tokens, num_experts, top_k, seed, **params):
    ids = np.asarray(adapter.simulate_routing(strategy, num_tokens, num_experts, top_k, seed,
                                              **params))  # fmt: skip
    where = f"{strategy}(T={num_tokens}, E={num_experts}, k={top_k}, seed={seed}, {params})"
    if ids.shape != (num_tokens, top_k) or np.any((ids < 0) | (ids >= num_experts)):
        raise ConformanceError(f"ids of shape {ids.shape} or out of range", where)
    if any(len(set(row)) != top_k for row in ids.tolist()):
        raise ConformanceError("a token holds the same expert twice", where)
    return ids, where


@pytest.mark.parametrize("strategy", ["uniform", "normal", "zipf"])
def test_seeded_strategies_repeat(adapter, strategy):
    first, where = _simulate(adapter, strategy, 64, 32, 4, 11)
    again, _ = _simulate(adapter, strategy, 64, 32, 4, 11)
    other, _ = _simulate(adapter, strategy, 64, 32, 4, 12)
    if not np.array_equal(first, again):
        raise ConformanceError("the same seed gave different ids", where)
    if np.array_equal(first, other):
        raise ConformanceError("two seeds gave the same ids", where)


@pytest.mark.parametrize("num_experts,top_k", [(16, 1), (16, 4), (64, 8)])
def test_uniform_is_uniform(adapter, num_experts, top_k):
    ids, where = _simulate(adapter, "uniform", 4000, num_experts, top_k, 3)
    counts = np.bincount(ids.reshape(-1), minlength=num_experts)
    stat = chi_square(counts, np.full(num_experts, 1.0 / num_experts))
    if stat > chi_square_limit(num_experts - 1):
        raise ConformanceError(f"expert counts are not uniform (chi-square {stat:.1f})", where)


@pytest.mark.parametrize("exponent", [0.8, 1.2])
def test_zipf_follows_its_exponent(adapter, exponent):
    """The first draw of each token follows rank**-exponent: sorted counts fit that law."""
    num_experts = 32
    ids, where = _simulate(adapter, "zipf", 20000, num_experts, 4, 5, exponent=exponent)
    counts = np.sort(np.bincount(ids[:, 0], minlength=num_experts))[::-1]
    ranks = np.arange(1, num_experts + 1)
    fitted = -np.polyfit(np.log(ranks[:16]), np.log(counts[:16]), 1)[0]
    if abs(fitted - exponent) > 0.12:
        raise ConformanceError(f"fitted exponent {fitted:.3f}, expected {exponent}", where)
    want = routing.zipf_expert_probabilities(num_experts, exponent)
    stat = chi_square(counts, want)  # sorting counts only lowers the statistic of a true law
    if stat > chi_square_limit(num_experts - 1):
        raise ConformanceError(f"first-draw counts do not follow Zipf (chi-square {stat:.1f})",
                               where)  # fmt: skip


def test_hot_experts_take_their_share(adapter):
    hot = [3, 17, 40]
    ids, where = _simulate(adapter, "hot_experts", 8000, 64, 1, 9, hot_experts=hot,
                           hot_share=0.6)  # fmt: skip
    share = np.isin(ids, hot).mean()
    sigma = math.sqrt(0.6 * 0.4 / ids.size)
    if abs(share - 0.6) > 4 * sigma:
        raise ConformanceError(f"hot experts took {share:.3f} of the traffic, not 0.6", where)


def test_normal_clusters_around_the_middle(adapter):
    ids, where = _simulate(adapter, "normal", 4000, 64, 4, 2, mean=0.0, std=1.0)
    first = ids[:, 0]
    # floor(sigmoid(z) * 64) of a standard normal z: mean 31.5 by symmetry, sd about 12.
    if abs(first.mean() - 31.5) > 4 * 12 / math.sqrt(first.size) + 0.5:
        raise ConformanceError(f"mean id {first.mean():.2f}, expected about 31.5", where)
    # ids 16..47 <=> sigmoid(z) in [1/4, 3/4) <=> |z| < ln 3 (up to the open end).
    inner = ((first >= 16) & (first <= 47)).mean()
    want = math.erf(math.log(3.0) / math.sqrt(2.0))
    if abs(inner - want) > 4 * math.sqrt(want * (1 - want) / first.size):
        raise ConformanceError(f"{inner:.3f} of the ids in 16..47, expected {want:.3f}", where)
