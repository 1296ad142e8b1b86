"""Expert weights stored in K chunks: an opt-in layout that ``TritonExperts`` reads faster.

``chunk_weights(w)`` stores ``w [E, N, K]`` as ``[E, ceil(K / CHUNK), N, CHUNK]``: each run of
``CHUNK`` columns of every row of an expert, row after row, then the next ``CHUNK`` columns. A
tile of ``BLOCK_N`` rows and one chunk of K is then one contiguous run of memory instead of
``BLOCK_N`` runs of ``CHUNK`` columns, which HBM streams 2-3% faster. Most decode calls took up
to 4% less time on the H100 and up to 7% on the H200, but some lost: Qwen3-30B TP2 at 16-256
tokens on the H100 (1-2%), both Qwen3-30B shapes at 16 tokens on the H200 (14%); measure a
model before switching (``docs/benchmarks.md``, "Weights in K chunks"). Columns past ``K`` are
zeros.

Call it once when the weights are loaded and keep only its result: ``fused_experts``,
``FusedMoEKernel``, ``TritonExperts`` and ``BatchedTritonExperts`` take chunks for ``w1`` and
``w2`` (both, or neither) and return the same bits as with the weights as stored. The other
experts refuse them with a ``TypeError``.
"""

from __future__ import annotations

import torch

CHUNK = 64  # K columns of one chunk: 128 bytes of bf16, the widest box row TMA swizzles

_FLOAT = (torch.float16, torch.bfloat16, torch.float32)


def chunk_weights(weights: torch.Tensor) -> torch.Tensor:
    """``weights [E, N, K]`` (float16 / bfloat16 / float32, any strides) in K chunks:
    ``[E, ceil(K / CHUNK), N, CHUNK]``, contiguous, zeros past ``K``; element ``[e, n, k]`` is
    ``[e, k // CHUNK, n, k % CHUNK]``. One copy of the weights is made.

    Raises:
        TypeError: ``weights`` is not a float16/bfloat16/float32 tensor.
        ValueError: ``weights`` is not 3-D, or has no rows or columns.
    """
    if not isinstance(weights, torch.Tensor):
        raise TypeError(f"weights must be a torch.Tensor, got {type(weights).__name__}")
    if weights.dtype not in _FLOAT:
        raise TypeError(f"weights must be float16/bfloat16/float32, got {weights.dtype}")
    if weights.dim() != 3 or 0 in weights.shape:
        raise ValueError(f"weights must be a non-empty 3-D [E, N, K], got {tuple(weights.shape)}")
    num_experts, n, k = weights.shape
    # the pad is a copy of its own: only where K needs it, so that the weights are copied once
    padded = torch.nn.functional.pad(weights, (0, -k % CHUNK)) if k % CHUNK else weights
    return padded.reshape(num_experts, n, -1, CHUNK).transpose(1, 2).contiguous()


def is_chunked(weights: torch.Tensor) -> bool:
    """Whether ``weights`` are stored in K chunks (4-D, from ``chunk_weights``) rather than as
    ``[E, N, K]``."""
    return weights.dim() == 4


def experts_and_rows(weights: torch.Tensor) -> tuple[int, int]:
    """``(E, N)`` of weights ``[E, N, K]`` or of their chunks ``[E, K / CHUNK, N, CHUNK]``."""
    if is_chunked(weights):
        return weights.shape[0], weights.shape[2]
    return weights.shape[0], weights.shape[1]


def weight_strides(weights: torch.Tensor) -> tuple[int, int, int, int]:
    """Element strides of ``weights`` over (experts, rows, columns, chunks): of ``[E, N, K]``
    (no chunks: 0) or of their chunks ``[E, K / CHUNK, N, CHUNK]`` (columns within a chunk)."""
    if is_chunked(weights):
        return weights.stride(0), weights.stride(2), weights.stride(3), weights.stride(1)
    return weights.stride(0), weights.stride(1), weights.stride(2), 0


def check_chunks(chunks: torch.Tensor, name: str, experts: int, rows: int, cols: int) -> None:
    """``ValueError`` naming ``name`` unless ``chunks`` are ``chunk_weights`` of weights
    ``[experts, rows, cols]``: ``[experts, ceil(cols / CHUNK), rows, CHUNK]``, contiguous."""
    want = (experts, -(-cols // CHUNK), rows, CHUNK)
    if tuple(chunks.shape) != want:
        raise ValueError(
            f"{name} in K chunks must be {list(want)} (chunk_weights of "
            f"[{experts}, {rows}, {cols}]), got {list(chunks.shape)}"
        )
    if not chunks.is_contiguous():
        raise ValueError(f"{name} in K chunks must be contiguous, as chunk_weights returns them")
