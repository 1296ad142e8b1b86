"""Weights stored in K chunks (``chunk_weights``): the layout itself, and both GEMM launchers
reading their tiles from it, bit for bit as from the weights as stored in K steps of one chunk
(the same products in the same order: a step of two chunks is two products), every slot
against NumPy. Outputs start poisoned with NaN."""

from __future__ import annotations

import dataclasses
import zlib

import numpy as np
import pytest
import torch
from helpers import TOLERANCE, grouped_gemm_reference, path_from_chunks_matches

from moekit.align import moe_align_block_size
from moekit.experts._triton_impl.configs import GemmConfig
from moekit.experts._triton_impl.weight_descriptor import CHUNK, chunk_weights, chunked_descriptor


@pytest.mark.parametrize("k", [2 * CHUNK, 2 * CHUNK + 16])
def test_chunks_hold_each_weight_row_by_k_chunk_and_zeros_past_k(k):
    seed = zlib.crc32(f"chunk layout {k}".encode())
    weights = torch.randn(3, 40, k, generator=torch.Generator().manual_seed(seed))
    chunks = chunk_weights(weights)
    num_chunks = -(-k // CHUNK)
    assert chunks.shape == (3, num_chunks, 40, CHUNK) and chunks.is_contiguous()
    for c in range(num_chunks):
        cols = min(CHUNK, k - c * CHUNK)
        torch.testing.assert_close(chunks[:, c, :, :cols], weights[:, :, c * CHUNK : c * CHUNK + cols],
                                   rtol=0, atol=0, msg=f"seed={seed}")  # fmt: skip
        assert (chunks[:, c, :, cols:] == 0).all(), f"seed={seed}"
    desc = chunked_descriptor(chunks, 32)
    assert desc is not None
    assert list(desc.shape) == [3 * num_chunks * 40, CHUNK]
    assert list(desc.block_shape) == [32, CHUNK]
    assert chunked_descriptor(weights, 32) is None, "not a chunk layout"
    strided = weights.transpose(1, 2).contiguous().transpose(1, 2)  # the same values, K not last
    assert torch.equal(chunk_weights(strided), chunks), f"seed={seed}"


def _tiles(ids: np.ndarray, num_experts: int, block_m: int):
    from moekit.experts._triton_impl.tile_source import TileSource

    return TileSource(*moe_align_block_size(torch.tensor(ids, dtype=torch.int32), block_m,
                                            num_experts, backend="torch"))  # fmt: skip


def _routing(rng: np.random.Generator, num_tokens: int, top_k: int, num_experts: int) -> np.ndarray:
    return np.stack([rng.permutation(num_experts)[:top_k] for _ in range(num_tokens)])


# K of two and a half chunks: the last chunk's columns past K are zeros, and A's are masked; K
# steps of one chunk, or of two (two products a step)
@pytest.mark.parametrize("k", [2 * CHUNK, 2 * CHUNK + 32])
@pytest.mark.parametrize("tail_m", [0, 16])
@pytest.mark.parametrize("block_k", [CHUNK, 2 * CHUNK])
def test_grouped_gemm_from_chunks_matches_the_weights_as_stored(k, tail_m, block_k):
    from moekit.experts._triton_impl.grouped_gemm import invoke_grouped_gemm

    seed = zlib.crc32(f"chunked grouped {k} {tail_m} {block_k}".encode())
    rng = np.random.default_rng(seed)
    num_tokens, top_k, num_experts, n = 29, 2, 5, 48
    ids = _routing(rng, num_tokens, top_k, num_experts)
    a = torch.tensor(rng.standard_normal((num_tokens * top_k, k)), dtype=torch.float32) / 10
    b = torch.tensor(rng.standard_normal((num_experts, n, k)), dtype=torch.float32) / 10
    weights = torch.tensor(rng.random(num_tokens * top_k), dtype=torch.float32)
    tiles = _tiles(ids, num_experts, 16)
    config = GemmConfig(BLOCK_M=16, BLOCK_N=32, BLOCK_K=block_k, num_stages=1, B_TMA=True,
                        TAIL_M=tail_m)  # fmt: skip
    outputs = []
    # the weights as stored, one chunk a step; then the chunks, at the config's steps
    for chunks in (None, chunk_weights(b)):
        step = config if chunks is not None else dataclasses.replace(config, BLOCK_K=CHUNK)
        c = torch.full((num_tokens * top_k, n), float("nan"))
        invoke_grouped_gemm(a, b, c, None, weights, tiles, 1, step, b_chunks=chunks)
        outputs.append(c)
    no_bias = np.zeros((num_experts, n), np.float32)
    want = grouped_gemm_reference(a.numpy(), b.numpy(), no_bias, weights.numpy(), ids.reshape(-1))
    np.testing.assert_allclose(outputs[1].numpy(), want, atol=TOLERANCE[torch.float32],
                               rtol=TOLERANCE[torch.float32], err_msg=f"seed={seed}")  # fmt: skip
    assert torch.equal(outputs[0], outputs[1]), f"seed={seed}"


@pytest.mark.parametrize("tail_m", [0, 16])
@pytest.mark.parametrize("block_k", [CHUNK, 2 * CHUNK])
def test_gate_up_gemm_from_chunks_matches_the_weights_as_stored(tail_m, block_k):
    from moekit.experts._triton_impl.gate_up_gemm import invoke_gate_up_gemm
    from moekit.experts.activation import MoEActivation

    seed = zlib.crc32(f"chunked gate up {tail_m} {block_k}".encode())
    rng = np.random.default_rng(seed)
    num_tokens, top_k, num_experts, n, k = 27, 2, 5, 64, 2 * CHUNK + 32
    ids = _routing(rng, num_tokens, top_k, num_experts)
    a = torch.tensor(rng.standard_normal((num_tokens, k)), dtype=torch.float32) / 10
    w13 = torch.tensor(rng.standard_normal((num_experts, n, k)), dtype=torch.float32) / 10
    tiles = _tiles(ids, num_experts, 16)
    config = GemmConfig(BLOCK_M=16, BLOCK_N=32, BLOCK_K=block_k, num_stages=1, B_TMA=True,
                        TAIL_M=tail_m)  # fmt: skip
    outputs = []
    # the weights as stored, one chunk a step; then the chunks, at the config's steps
    for chunks in (None, chunk_weights(w13)):
        step = config if chunks is not None else dataclasses.replace(config, BLOCK_K=CHUNK)
        out = torch.full((num_tokens * top_k, n // 2), float("nan"))
        invoke_gate_up_gemm(a, w13, out, None, tiles, top_k, MoEActivation.SILU, step,
                            w13_chunks=chunks)  # fmt: skip
        outputs.append(out)
    gate_up = grouped_gemm_reference(a.numpy()[np.arange(num_tokens * top_k) // top_k],
                                     w13.numpy(), np.zeros((num_experts, n), np.float32), None,
                                     ids.reshape(-1))  # fmt: skip
    gate, up = gate_up[:, : n // 2], gate_up[:, n // 2 :]
    want = gate / (1 + np.exp(-gate)) * up
    np.testing.assert_allclose(outputs[1].numpy(), want, atol=TOLERANCE[torch.float32],
                               rtol=TOLERANCE[torch.float32], err_msg=f"seed={seed}")  # fmt: skip
    assert torch.equal(outputs[0], outputs[1]), f"seed={seed}"


def test_a_step_past_k_does_not_read_the_next_experts_chunk():
    """Three chunks in steps of two: the second step's last product lies past K. It must not
    read the next expert's first chunk, whose non-finite values would make this expert's rows
    NaN (0 * inf) although that expert serves no slot."""
    from moekit.experts._triton_impl.grouped_gemm import invoke_grouped_gemm

    seed = zlib.crc32(b"chunked past k")
    rng = np.random.default_rng(seed)
    num_tokens, n, k = 21, 32, 3 * CHUNK
    ids = np.zeros((num_tokens, 1), dtype=np.int64)  # every slot on expert 0
    a = torch.tensor(rng.standard_normal((num_tokens, k)), dtype=torch.float32) / 10
    b = torch.tensor(rng.standard_normal((2, n, k)), dtype=torch.float32) / 10
    b[1, :, :CHUNK] = float("inf")  # expert 1's first chunk
    c = torch.full((num_tokens, n), float("nan"))
    config = GemmConfig(BLOCK_M=16, BLOCK_N=32, BLOCK_K=2 * CHUNK, num_stages=1, B_TMA=True)
    invoke_grouped_gemm(a, b, c, None, None, _tiles(ids, 2, 16), 1, config,
                        b_chunks=chunk_weights(b))  # fmt: skip
    want = grouped_gemm_reference(a.numpy(), b.numpy(), np.zeros((2, n), np.float32), None,
                                  ids.reshape(-1))  # fmt: skip
    np.testing.assert_allclose(c.numpy(), want, atol=TOLERANCE[torch.float32],
                               rtol=TOLERANCE[torch.float32], err_msg=f"seed={seed}")  # fmt: skip


# tile variants of the whole path, the weights as stored against their chunks: hidden 128 and
# inter 192 (three chunks: a step of two chunks reads past K), 150 tokens about 37 rows an expert
# (16-row tails fold); test_gpu_tiles.py has the GPU's
PATH_TILES = {
    "one-chunk-steps": dict(BLOCK_M=16, BLOCK_N=32, BLOCK_K=CHUNK, num_stages=1, B_TMA=True),
    "two-chunk-steps-sorted-rows": dict(BLOCK_M=16, BLOCK_N=32, BLOCK_K=2 * CHUNK, num_stages=1,
                                        B_TMA=True, SORTED_ROWS=True),
    "tails-swapped-gemm2-own-step": dict(BLOCK_M=32, BLOCK_N=32, BLOCK_K=2 * CHUNK, num_stages=1,
                                         BLOCK_K2=CHUNK, B_TMA=True, TAIL_M=16, TAIL_M2=16,
                                         TAIL_SWAP=True),
}  # fmt: skip


@pytest.mark.parametrize("tile", PATH_TILES)
def test_path_from_chunks_matches_the_weights_as_stored(monkeypatch, tile):
    seed = zlib.crc32(f"chunked path {tile}".encode())
    path_from_chunks_matches(monkeypatch, PATH_TILES[tile], torch.float32, "cpu", (128, 192),
                              (37, 150), seed)  # fmt: skip
