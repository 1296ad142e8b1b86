"""The Triton layout is exact under every launch configuration (experts per program, chunking),
not only the ones the heuristics pick: each is compared with the torch path on seeded inputs."""

import numpy as np
import pytest
import torch

import moekit.align._triton_impl.block_align as launcher
import moekit.align._triton_impl.launch_config as launch_config
from moekit.align import moe_align_block_size, moe_permute
from moekit.align._triton_impl.launch_config import LayoutConfig

CONFIGS = [
    LayoutConfig(chunk=16, sub=16, experts_per_program=1, num_warps=4),
    LayoutConfig(chunk=64, sub=16, experts_per_program=4, num_warps=4),
    LayoutConfig(chunk=128, sub=128, experts_per_program=16, num_warps=4),
    LayoutConfig(chunk=16, sub=16, experts_per_program=1, num_warps=4, sort_chunks=True),
    LayoutConfig(chunk=64, sub=64, experts_per_program=4, num_warps=4, sort_chunks=True),
    LayoutConfig(chunk=256, sub=256, experts_per_program=16, num_warps=4, sort_chunks=True),
]


class _PoisonedTorch:
    """``torch`` for the launcher, whose ``empty`` buffers start as -7777: an element the kernels
    fail to write shows up against the torch path."""

    def __getattr__(self, name: str):
        return getattr(torch, name)

    @staticmethod
    def empty(*args, **kwargs) -> torch.Tensor:
        return torch.empty(*args, **kwargs).fill_(-7777)


@pytest.fixture(autouse=True)
def poisoned_outputs(monkeypatch):
    monkeypatch.setattr(launcher, "torch", _PoisonedTorch())


def config_id(config: LayoutConfig) -> str:
    placement = "sorted" if config.sort_chunks else "groups"
    return f"{placement}-chunk{config.chunk}-epp{config.experts_per_program}"


@pytest.mark.parametrize("config", CONFIGS, ids=config_id)
@pytest.mark.parametrize("seed", range(4))
def test_layout_matches_torch_path(monkeypatch, config, seed):
    rng = np.random.default_rng(seed)
    num_experts = int(rng.choice([3, 16, 40]))
    ids = torch.from_numpy(rng.integers(-1, num_experts + 1, (int(rng.integers(1, 60)), 4)))
    emap = torch.full((num_experts,), -1, dtype=torch.int32)
    local = torch.from_numpy(rng.permutation(num_experts)[: num_experts // 2 + 1])
    emap[local] = torch.arange(local.numel(), dtype=torch.int32)
    block = int(rng.choice([1, 4, 16]))
    monkeypatch.setattr(launcher, "layout_config", lambda numel, bins: config)
    for map_arg, ignore in [(None, False), (emap, True), (emap, False)]:
        want = moe_align_block_size(ids, block, num_experts, map_arg, False, ignore, True,
                                    backend="torch")  # fmt: skip
        got = moe_align_block_size(ids, block, num_experts, map_arg, False, ignore, True,
                                   backend="triton")  # fmt: skip
        for w, g in zip(want, got):
            assert torch.equal(w, g), f"seed={seed} config={config} map={map_arg is not None}"
    hidden = torch.randn(ids.shape[0], 8)
    for w, g in zip(
        moe_permute(hidden, ids, num_experts, emap, backend="torch"),
        moe_permute(hidden, ids, num_experts, emap, backend="triton"),
    ):
        assert torch.equal(w, g), f"permute seed={seed} config={config}"


@pytest.mark.parametrize(
    ("numel", "num_experts"),
    [(512, 128), (513, 128), (1536, 128), (2048, 128), (2049, 128), (8191, 200), (8192, 254),
     (8192, 255), (8193, 1023)],
)  # fmt: skip
def test_default_rule_around_its_chunk_thresholds(numel, num_experts):
    """The shipped rule changes launch shape at 512, 2048 and 8192 slots (one chunk, then chunks
    of 512 counted first, then longer chunks, then sorted chunks up to 1024 histogram bins, from
    8192 slots with 512 bins or more): each side of each threshold matches the torch path. (The
    sorted chunks' lengths at larger sizes run the same kernels as ``CONFIGS``; too slow for the
    interpreter, they are checked on the GPU.)"""
    seed = numel
    rng = np.random.default_rng(seed)
    ids = torch.from_numpy(rng.integers(-1, num_experts, (numel, 1)).astype(np.int32))
    want = moe_align_block_size(ids, 16, num_experts, None, False, True, True, backend="torch")
    got = moe_align_block_size(ids, 16, num_experts, None, False, True, True, backend="triton")
    for w, g in zip(want, got):
        assert torch.equal(w, g), f"seed={seed} numel={numel}"


@pytest.mark.parametrize("seed", range(3))
def test_sorted_chunks_carry_counts_across_scan_tiles(monkeypatch, seed):
    """Many chunks and bins: the prefix over chunks runs in several tiles of chunks (its carry)
    and several programs of bins; the padding and block ids fall to programs of later chunks."""
    rng = np.random.default_rng(100 + seed)
    num_experts = int(rng.choice([40, 300]))
    ids = torch.from_numpy(rng.integers(-1, num_experts + 1, (int(rng.integers(700, 1000)), 2)))
    config = LayoutConfig(chunk=16, sub=16, experts_per_program=2, num_warps=4, sort_chunks=True)
    monkeypatch.setattr(launcher, "layout_config", lambda numel, bins: config)
    monkeypatch.setattr(launcher, "_SCAN_CHUNKS", 8)
    block = int(rng.choice([1, 16, 64]))
    for pad in (False, True):
        want = moe_align_block_size(ids, block, num_experts, None, pad, False, True,
                                    backend="torch")  # fmt: skip
        got = moe_align_block_size(ids, block, num_experts, None, pad, False, True,
                                   backend="triton")  # fmt: skip
        for w, g in zip(want, got):
            assert torch.equal(w, g), f"seed={seed} E={num_experts} block={block} pad={pad}"


def test_default_rule_sorts_chunks_from_8192_slots_up_to_1024_bins():
    rule = launch_config.layout_config
    assert not rule(8191, 256).sort_chunks
    assert not rule(8192, 254).sort_chunks  # 256 histogram bins with the two extra
    assert rule(8192, 255).sort_chunks  # 512 bins
    assert rule(8193, 8).sort_chunks
    assert rule(8193, 1022).sort_chunks  # 1024 bins
    assert not rule(8193, 1023).sort_chunks


@pytest.mark.parametrize(
    ("numel", "num_layout_bins", "chunk"),
    [(8192, 300, 256), (16384, 256, 256), (16385, 256, 512), (16385, 254, 256),
     (32768, 254, 256), (32769, 254, 512), (131072, 8, 512)],
)  # fmt: skip
def test_default_rule_sorted_chunk_lengths(numel, num_layout_bins, chunk):
    """Chunks of 256 up to 16384 slots, and up to 32768 with at most 256 histogram bins."""
    config = launch_config.layout_config(numel, num_layout_bins)
    assert config.sort_chunks and config.chunk == chunk, config
