"""Weights stored in K chunks (``chunk_weights``) of 64 and of 128 columns: the layout itself,
its checks, both GEMM launchers reading their tiles from it through TMA and through pointers,
and every path of a call, bit for bit as from the weights as stored (through TMA in K steps of
at most one chunk: the same products in the same order, a step of two chunks being two
products), and against NumPy. Outputs start poisoned with NaN."""

from __future__ import annotations

import dataclasses
import zlib

import numpy as np
import pytest
import torch
from helpers import TOLERANCE, grouped_gemm_reference, path_from_chunks_matches

from moekit.align import moe_align_block_size
from moekit.experts import chunk_weights
from moekit.experts._triton_impl.configs import GemmConfig
from moekit.experts._triton_impl.weight_descriptor import chunked_descriptor
from moekit.experts.weight_chunks import CHUNK, CHUNK_WIDTHS


@pytest.mark.parametrize("width", CHUNK_WIDTHS)
@pytest.mark.parametrize("extra", [0, 16])
def test_chunks_hold_each_weight_row_by_k_chunk_and_zeros_past_k(width, extra):
    k = 2 * width + extra
    seed = zlib.crc32(f"chunk layout {k} {width}".encode())
    weights = torch.randn(3, 40, k, generator=torch.Generator().manual_seed(seed))
    chunks = chunk_weights(weights, width)
    num_chunks = -(-k // width)
    assert chunks.shape == (3, num_chunks, 40, width) and chunks.is_contiguous()
    for c in range(num_chunks):
        cols = min(width, k - c * width)
        torch.testing.assert_close(chunks[:, c, :, :cols], weights[:, :, c * width : c * width + cols],
                                   rtol=0, atol=0, msg=f"seed={seed}")  # fmt: skip
        assert (chunks[:, c, :, cols:] == 0).all(), f"seed={seed}"
    for box_k in (width // 2, width):
        desc = chunked_descriptor(chunks, 32, box_k)
        assert desc is not None
        assert list(desc.shape) == [3 * num_chunks * 40, width]
        assert list(desc.block_shape) == [32, box_k]
    assert chunked_descriptor(chunks, 32, 2 * width) is None, "a box wider than a chunk"
    assert chunked_descriptor(weights, 32, width) is None, "not a chunk layout"
    strided = weights.transpose(1, 2).contiguous().transpose(1, 2)  # the same values, K not last
    assert torch.equal(chunk_weights(strided, width), chunks), f"seed={seed}"
    if width == CHUNK:
        assert torch.equal(chunk_weights(weights), chunks), "the default width"


def _tiles(ids: np.ndarray, num_experts: int, block_m: int):
    from moekit.experts._triton_impl.tile_source import TileSource

    return TileSource(*moe_align_block_size(torch.tensor(ids, dtype=torch.int32), block_m,
                                            num_experts, backend="torch"))  # fmt: skip


def _routing(rng: np.random.Generator, num_tokens: int, top_k: int, num_experts: int) -> np.ndarray:
    return np.stack([rng.permutation(num_experts)[:top_k] for _ in range(num_tokens)])


def _plain_twin(config: GemmConfig, chunks: torch.Tensor | None, width: int) -> GemmConfig:
    """The config the weights as stored run with to give the chunks' bits: through TMA each
    product spans at most one chunk (a step of two chunks is two products), so a step of at most
    one chunk (the interpreter's products round by the operands' layout)."""
    if chunks is not None or not config.B_TMA:
        return config
    return dataclasses.replace(config, BLOCK_K=min(config.BLOCK_K, width))


# K of two chunks and two and a quarter or a half: the last chunk's columns past K are zeros,
# and A's are masked; K steps of half a chunk (through TMA at column 0 or half a chunk into
# it), one chunk, or two (through TMA two products a step)
@pytest.mark.parametrize("width", CHUNK_WIDTHS)
@pytest.mark.parametrize("extra", [0, 32])
@pytest.mark.parametrize("tail_m", [0, 16])
@pytest.mark.parametrize("step", [0.5, 1, 2], ids=["half-chunk", "one-chunk", "two-chunks"])
@pytest.mark.parametrize("tma", [True, False], ids=["tma", "pointers"])
def test_grouped_gemm_from_chunks_matches_the_weights_as_stored(width, extra, tail_m, step, tma):
    from moekit.experts._triton_impl.grouped_gemm import invoke_grouped_gemm

    k, block_k = 2 * width + extra, int(step * width)
    seed = zlib.crc32(f"chunked grouped {k} {tail_m} {block_k} {tma} {width}".encode())
    rng = np.random.default_rng(seed)
    num_tokens, top_k, num_experts, n = 29, 2, 5, 48
    ids = _routing(rng, num_tokens, top_k, num_experts)
    a = torch.tensor(rng.standard_normal((num_tokens * top_k, k)), dtype=torch.float32) / 10
    b = torch.tensor(rng.standard_normal((num_experts, n, k)), dtype=torch.float32) / 10
    weights = torch.tensor(rng.random(num_tokens * top_k), dtype=torch.float32)
    tiles = _tiles(ids, num_experts, 16)
    config = GemmConfig(BLOCK_M=16, BLOCK_N=32, BLOCK_K=block_k, num_stages=1, B_TMA=tma,
                        TAIL_M=tail_m)  # fmt: skip
    outputs = []
    for chunks in (None, chunk_weights(b, width)):
        c = torch.full((num_tokens * top_k, n), float("nan"))
        invoke_grouped_gemm(a, b if chunks is None else chunks, c, None, weights, tiles, 1,
                            _plain_twin(config, chunks, width))  # fmt: skip
        outputs.append(c)
    no_bias = np.zeros((num_experts, n), np.float32)
    want = grouped_gemm_reference(a.numpy(), b.numpy(), no_bias, weights.numpy(), ids.reshape(-1))
    np.testing.assert_allclose(outputs[1].numpy(), want, atol=TOLERANCE[torch.float32],
                               rtol=TOLERANCE[torch.float32], err_msg=f"seed={seed}")  # fmt: skip
    assert torch.equal(outputs[0], outputs[1]), f"seed={seed}"


@pytest.mark.parametrize("width", CHUNK_WIDTHS)
@pytest.mark.parametrize("tail_m", [0, 16])
@pytest.mark.parametrize("step", [0.5, 1, 2], ids=["half-chunk", "one-chunk", "two-chunks"])
@pytest.mark.parametrize("tma", [True, False], ids=["tma", "pointers"])
@pytest.mark.parametrize("activation", ["silu", "swigluoai"])
def test_gate_up_gemm_from_chunks_matches_the_weights_as_stored(width, tail_m, step, tma,
                                                                activation):  # fmt: skip
    """``[gate | up]`` rows and gpt-oss's interleaved ones (through TMA read as row pairs; their
    K is whole chunks, as the weights as stored need for a descriptor: with pointers instead the
    interpreter's products would round otherwise)."""
    from moekit.experts import apply_activation
    from moekit.experts._triton_impl.gate_up_gemm import invoke_gate_up_gemm
    from moekit.experts.activation import MoEActivation

    block_k = int(step * width)
    seed = zlib.crc32(f"chunked gate up {tail_m} {block_k} {tma} {activation} {width}".encode())
    rng = np.random.default_rng(seed)
    num_tokens, top_k, num_experts, n = 27, 2, 5, 64
    k = 2 * width if activation == "swigluoai" else 2 * width + 32
    ids = _routing(rng, num_tokens, top_k, num_experts)
    a = torch.tensor(rng.standard_normal((num_tokens, k)), dtype=torch.float32) / 10
    w13 = torch.tensor(rng.standard_normal((num_experts, n, k)), dtype=torch.float32) / 10
    tiles = _tiles(ids, num_experts, 16)
    config = GemmConfig(BLOCK_M=16, BLOCK_N=32, BLOCK_K=block_k, num_stages=1, B_TMA=tma,
                        TAIL_M=tail_m)  # fmt: skip
    act = MoEActivation.parse(activation)
    outputs = []
    for chunks in (None, chunk_weights(w13, width)):
        out = torch.full((num_tokens * top_k, n // 2), float("nan"))
        invoke_gate_up_gemm(a, w13 if chunks is None else chunks, out, None, tiles, top_k, act,
                            _plain_twin(config, chunks, width))  # fmt: skip
        outputs.append(out)
    gate_up = grouped_gemm_reference(a.numpy()[np.arange(num_tokens * top_k) // top_k],
                                     w13.numpy(), np.zeros((num_experts, n), np.float32), None,
                                     ids.reshape(-1))  # fmt: skip
    want = apply_activation(torch.tensor(gate_up), act).numpy()
    np.testing.assert_allclose(outputs[1].numpy(), want, atol=TOLERANCE[torch.float32],
                               rtol=TOLERANCE[torch.float32], err_msg=f"seed={seed}")  # fmt: skip
    assert torch.equal(outputs[0], outputs[1]), f"seed={seed}"


@pytest.mark.parametrize("width", CHUNK_WIDTHS)
def test_a_step_past_k_does_not_read_the_next_experts_chunk(width):
    """Three chunks in steps of two: the second step's last product lies past K. It must not
    read the next expert's first chunk, whose non-finite values would make this expert's rows
    NaN (0 * inf) although that expert serves no slot."""
    from moekit.experts._triton_impl.grouped_gemm import invoke_grouped_gemm

    seed = zlib.crc32(f"chunked past k {width}".encode())
    rng = np.random.default_rng(seed)
    num_tokens, n, k = 21, 32, 3 * width
    ids = np.zeros((num_tokens, 1), dtype=np.int64)  # every slot on expert 0
    a = torch.tensor(rng.standard_normal((num_tokens, k)), dtype=torch.float32) / 10
    b = torch.tensor(rng.standard_normal((2, n, k)), dtype=torch.float32) / 10
    b[1, :, :width] = float("inf")  # expert 1's first chunk
    c = torch.full((num_tokens, n), float("nan"))
    config = GemmConfig(BLOCK_M=16, BLOCK_N=32, BLOCK_K=2 * width, num_stages=1, B_TMA=True)
    invoke_grouped_gemm(a, chunk_weights(b, width), c, None, None, _tiles(ids, 2, 16), 1, config)
    want = grouped_gemm_reference(a.numpy(), b.numpy(), np.zeros((2, n), np.float32), None,
                                  ids.reshape(-1))  # fmt: skip
    np.testing.assert_allclose(c.numpy(), want, atol=TOLERANCE[torch.float32],
                               rtol=TOLERANCE[torch.float32], err_msg=f"seed={seed}")  # fmt: skip


# tile variants of the whole path (sizes in chunks of 64 columns), the weights as stored against
# their chunks: hidden 128 and inter 192 (three chunks of 64: a step of two chunks reads past K;
# a chunk and a half of 128); one token and three (tiles from topk_ids, the top-k sum in
# GEMM2), 37 tokens and 150 (about 37 rows an expert: 16-row tails fold); test_gpu_tiles.py has
# the GPU's
PATH_TILES = {
    "one-chunk-steps": dict(BLOCK_M=16, BLOCK_N=32, BLOCK_K=CHUNK, num_stages=1, B_TMA=True),
    "two-chunk-steps-sorted-rows": dict(BLOCK_M=16, BLOCK_N=32, BLOCK_K=2 * CHUNK, num_stages=1,
                                        B_TMA=True, SORTED_ROWS=True),
    "tails-swapped-gemm2-own-step": dict(BLOCK_M=32, BLOCK_N=32, BLOCK_K=2 * CHUNK, num_stages=1,
                                         BLOCK_K2=CHUNK, B_TMA=True, TAIL_M=16, TAIL_M2=16,
                                         TAIL_SWAP=True),
    "eight-warps-one-chunk-gemm1": dict(BLOCK_M=16, BLOCK_N=32, BLOCK_K=2 * CHUNK, num_warps=8,
                                        num_stages=1, B_TMA=True),
    "pointers": dict(BLOCK_M=16, BLOCK_N=32, BLOCK_K=2 * CHUNK, num_stages=1, TAIL_M=16),
    "pointers-half-chunk": dict(BLOCK_M=16, BLOCK_N=32, BLOCK_K=CHUNK // 2, num_stages=1),
}  # fmt: skip


@pytest.mark.parametrize("width", CHUNK_WIDTHS)
@pytest.mark.parametrize("tile", PATH_TILES)
def test_path_from_chunks_matches_the_weights_as_stored(monkeypatch, tile, width):
    """In chunks of 128 columns the 64-column steps read half a chunk, and inter 192 is a chunk
    and a half."""
    seed = zlib.crc32(f"chunked path {tile} {width}".encode())
    path_from_chunks_matches(monkeypatch, PATH_TILES[tile], torch.float32, "cpu", (128, 192),
                              (1, 3, 37, 150), seed, width=width)  # fmt: skip


@pytest.mark.parametrize("width", CHUNK_WIDTHS)
@pytest.mark.parametrize("tma", [True, False], ids=["tma", "pointers"])
def test_interleaved_path_from_chunks_matches_the_weights_as_stored(monkeypatch, tma, width):
    """gpt-oss's interleaved gate/up rows (``swigluoai``)."""
    seed = zlib.crc32(f"chunked interleaved path {tma} {width}".encode())
    tile = dict(BLOCK_M=16, BLOCK_N=32, BLOCK_K=CHUNK, num_stages=1, B_TMA=tma)
    path_from_chunks_matches(monkeypatch, tile, torch.float32, "cpu", (128, 96), (3, 40), seed,
                             activation="swigluoai", width=width)  # fmt: skip


@pytest.mark.parametrize("width", CHUNK_WIDTHS)
@pytest.mark.parametrize("path", ["token_sum", "expert_programs"])
def test_decode_paths_read_chunks(monkeypatch, path, width):
    """GEMM2 in token order (``token_sum_gemm``) and both GEMMs as one program per expert
    (``expert_programs``, one chunk a K step) on chunks, each checked to be the call's path."""
    from moekit.experts import triton_experts
    from moekit.experts._triton_impl import expert_programs, token_sum_gemm

    seed = zlib.crc32(f"chunked decode path {path} {width}".encode())
    calls: list[int] = []
    module, name = ((token_sum_gemm, "invoke_token_sum_gemm") if path == "token_sum"
                    else (expert_programs, "invoke_expert_programs"))  # fmt: skip
    real = getattr(module, name)
    monkeypatch.setattr(module, name, lambda *a, **kw: calls.append(1) or real(*a, **kw))
    if path == "token_sum":
        monkeypatch.setattr(triton_experts, "token_sum_gemm2", lambda *_: True)
        tile = dict(BLOCK_M=16, BLOCK_N=32, BLOCK_K=2 * CHUNK, num_stages=1)
        counts: tuple[int, ...] = (2, 7)
    else:
        monkeypatch.setattr(triton_experts, "EXPERT_PROGRAMS_MAX_ROWS", 64)
        monkeypatch.setattr(expert_programs, "BLOCK_N1", 32)
        monkeypatch.setattr(expert_programs, "BLOCK_N2", 32)
        tile = dict(BLOCK_M=16, BLOCK_N=32, BLOCK_K=CHUNK, num_stages=1, EXPERT_PROGRAMS=True)
        counts = (9, 40)
    path_from_chunks_matches(monkeypatch, tile, torch.float32, "cpu", (128, 192), counts, seed,
                             width=width)  # fmt: skip
    assert len(calls) == 2 * len(counts), f"the calls did not take the path, seed={seed}"


def test_batched_experts_read_chunks():
    """``BatchedTritonExperts`` (batched format, expert parallelism's layout) on chunks."""
    from helpers import as_tensors, make_problem

    from moekit.experts import (
        BatchedPrepareAndFinalize,
        BatchedTritonExperts,
        FusedMoEConfig,
        FusedMoEKernel,
        FusedMoEQuantConfig,
    )

    seed = zlib.crc32(b"chunked batched")
    problem = as_tensors(make_problem(seed, 20, 4, 2, 128, 96), torch.float32)
    config = FusedMoEConfig(num_experts=4, experts_per_token=2, hidden_dim=128,
                            intermediate_size=96, in_dtype=torch.float32)  # fmt: skip
    outputs = []
    for chunked in (False, True):
        kernel = FusedMoEKernel(
            BatchedPrepareAndFinalize(max_num_tokens=20, num_local_experts=4, num_dispatchers=1,
                                      rank=0),
            BatchedTritonExperts(config, FusedMoEQuantConfig(), max_num_tokens=20,
                                 num_dispatchers=1),
        )  # fmt: skip
        w1, w2 = problem["w1"], problem["w2"]
        if chunked:
            w1, w2 = chunk_weights(w1), chunk_weights(w2)
        outputs.append(kernel(problem["hidden_states"], w1, w2, problem["topk_weights"],
                              problem["topk_ids"]))  # fmt: skip
    assert torch.equal(outputs[0], outputs[1]), f"seed={seed}"


def test_chunks_are_refused_where_they_cannot_be_read():
    from helpers import as_tensors, make_problem

    from moekit.experts import fused_experts

    p = as_tensors(make_problem(zlib.crc32(b"chunked refused"), 4, 4, 2, 128, 96), torch.float32)
    args = (p["hidden_states"], chunk_weights(p["w1"]), chunk_weights(p["w2"]),
            p["topk_weights"], p["topk_ids"])  # fmt: skip
    with pytest.raises(TypeError, match="w1, w2: TorchExperts takes weights"):
        fused_experts(*args, backend="torch")
    with pytest.raises(ValueError, match="both be in K chunks"):
        fused_experts(p["hidden_states"], chunk_weights(p["w1"]), p["w2"], p["topk_weights"],
                      p["topk_ids"], backend="triton")  # fmt: skip
    with pytest.raises(ValueError, match=r"w2 in K chunks must be \[4, 2, 128, 64\]"):
        fused_experts(p["hidden_states"], chunk_weights(p["w1"]),
                      chunk_weights(p["w2"][:, :, :64]), p["topk_weights"], p["topk_ids"],
                      backend="triton")  # fmt: skip
    with pytest.raises(ValueError, match="w1 in K chunks must be contiguous"):
        w1 = chunk_weights(p["w1"])
        strided = torch.empty_like(w1).transpose(1, 2).contiguous().transpose(1, 2).copy_(w1)
        fused_experts(p["hidden_states"], strided, chunk_weights(p["w2"]), p["topk_weights"],
                      p["topk_ids"], backend="triton")  # fmt: skip
    with pytest.raises(TypeError, match="weights must be float16/bfloat16/float32"):
        chunk_weights(torch.zeros(2, 3, 4, dtype=torch.int32))
    with pytest.raises(ValueError, match="weights must be a non-empty 3-D"):
        chunk_weights(torch.zeros(2, 3))
    with pytest.raises(ValueError, match=r"width must be one of \(64, 128\), got 32"):
        chunk_weights(p["w1"], 32)
    with pytest.raises(TypeError, match="width must be an int, got float"):
        chunk_weights(p["w1"], 64.0)
    with pytest.raises(ValueError, match="w1 in K chunks must have chunks of 64 or 128 columns"):
        fused_experts(p["hidden_states"], chunk_weights(p["w1"]).reshape(4, 4, 192, 32),
                      chunk_weights(p["w2"]), p["topk_weights"], p["topk_ids"], backend="triton")  # fmt: skip


@pytest.mark.parametrize("path", ["aligned", "expert_programs"])
def test_chunks_of_two_widths(monkeypatch, path):
    """W13 in chunks of 128 columns and W2 in chunks of 64 (each GEMM reads its own), on the
    aligned path and on the one-program path (each checked to be taken): bit for bit against the
    weights as stored in the same products (GEMM2 in steps of 64), and against the reference."""
    from helpers import as_tensors, assert_matches, make_problem, reference, use_config

    from moekit.experts import fused_experts, triton_experts
    from moekit.experts._triton_impl import expert_programs

    seed = zlib.crc32(f"chunks of two widths {path}".encode())
    programs = path == "expert_programs"
    if programs:
        monkeypatch.setattr(triton_experts, "EXPERT_PROGRAMS_MAX_ROWS", 64)
        monkeypatch.setattr(expert_programs, "BLOCK_N1", 32)
        monkeypatch.setattr(expert_programs, "BLOCK_N2", 32)
    calls: list[int] = []
    real = expert_programs.invoke_expert_programs
    monkeypatch.setattr(expert_programs, "invoke_expert_programs",
                        lambda *a, **kw: calls.append(1) or real(*a, **kw))  # fmt: skip
    problem = make_problem(seed, 9, 8, 2, 256, 192, bias=True)
    t = as_tensors(problem, torch.float32)
    tile = dict(BLOCK_M=16, BLOCK_N=32, BLOCK_K=128, num_stages=1, B_TMA=True,
                EXPERT_PROGRAMS=programs)  # fmt: skip
    outputs = []
    for w1, w2, block_k2 in ((t["w1"], t["w2"], 64),
                             (chunk_weights(t["w1"], 128), chunk_weights(t["w2"], 64), 128)):  # fmt: skip
        with monkeypatch.context() as patch:
            use_config(patch, GemmConfig(**tile, BLOCK_K2=block_k2))
            patch.setattr(expert_programs, "BLOCK_K2", block_k2)
            outputs.append(fused_experts(t["hidden_states"], w1, w2, t["topk_weights"],
                                         t["topk_ids"], w1_bias=t["w1_bias"],
                                         w2_bias=t["w2_bias"], backend="triton"))  # fmt: skip
    assert len(calls) == 2 * programs, f"the calls did not take the path, seed={seed}"
    assert torch.equal(outputs[0], outputs[1]), f"seed={seed}"
    assert_matches(outputs[1], reference(problem, torch.float32), torch.float32, seed)


def test_the_experts_look_up_entries_for_the_weights_common_chunk_width(monkeypatch):
    """``get_config`` hears the chunk width both weights share (its tables of chunk entries),
    and 0 for weights as stored or of two widths; the result still matches the reference."""
    from helpers import as_tensors, assert_matches, make_problem, reference

    from moekit.experts import fused_experts, triton_experts
    from moekit.experts._triton_impl.configs import default_config

    seed = zlib.crc32(b"chunk width of the table")
    problem = make_problem(seed, 6, 4, 2, 256, 192)
    t = as_tensors(problem, torch.float32)
    asked: list[int] = []

    def get_config(num_tokens, top_k, num_experts, n, dtype, device, interpreter, chunks=0):
        asked.append(chunks)
        return default_config(num_tokens, top_k, num_experts, interpreter=True)

    monkeypatch.setattr(triton_experts, "get_config", get_config)
    want = reference(problem, torch.float32)
    for widths, expected in (((0, 0), 0), ((64, 64), 64), ((128, 128), 128), ((128, 64), 0)):
        w1, w2 = (chunk_weights(w, c) if c else w for w, c in zip((t["w1"], t["w2"]), widths))
        out = fused_experts(t["hidden_states"], w1, w2, t["topk_weights"], t["topk_ids"],
                            backend="triton")  # fmt: skip
        assert asked[-1] == expected, f"widths {widths}: asked for {asked[-1]}, seed={seed}"
        assert_matches(out, want, torch.float32, seed)
