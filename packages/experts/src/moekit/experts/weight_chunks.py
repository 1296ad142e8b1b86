"""Expert weights stored in K chunks: an opt-in layout that ``TritonExperts`` reads faster.

``chunk_weights(w, width)`` stores ``w [E, N, K]`` as ``[E, ceil(K / width), N, width]``: each
run of ``width`` columns (``CHUNK_WIDTHS``) of every row of an expert, row after row, then the
next ``width`` columns. A tile of ``BLOCK_N`` rows and one chunk of K is then one contiguous run
of memory instead of ``BLOCK_N`` runs of ``width`` columns, which HBM streams 2-3% faster.
Columns past ``K`` are zeros. In chunks of 64 columns most decode calls took up to 4% less time
on the H100 and up to 7% on the H200, but some lost: Qwen3-30B TP2 at 16-256 tokens on the H100
(1-2%), both Qwen3-30B shapes at 16 tokens on the H200 (14-16%). In chunks of 128 no decode cell
of the H200's table lost more than 1.1%, while on the H100 the 1024-token cells gained less
(their K steps of 64 read half a chunk). Measure a model before switching (``docs/benchmarks.md``,
"Weights in K chunks").

Call it once when the weights are loaded and keep only its result: ``fused_experts``,
``FusedMoEKernel``, ``TritonExperts`` and ``BatchedTritonExperts`` take chunks for ``w1`` and
``w2`` (both, or neither) and return the same bits as with the weights as stored. The other
experts refuse them with a ``TypeError``.
"""

from __future__ import annotations

import torch

CHUNK = 64  # the default K columns of one chunk: 128 bytes of bf16, the widest box row TMA swizzles
CHUNK_WIDTHS = (64, 128)

_FLOAT = (torch.float16, torch.bfloat16, torch.float32)


def chunk_weights(weights: torch.Tensor, width: int = CHUNK) -> torch.Tensor:
    """``weights [E, N, K]`` (float16 / bfloat16 / float32, any strides) in K chunks of ``width``
    columns (64 or 128): ``[E, ceil(K / width), N, width]``, contiguous, zeros past ``K``;
    element ``[e, n, k]`` is ``[e, k // width, n, k % width]``. One copy of the weights is made.

    Raises:
        TypeError: ``weights`` is not a float16/bfloat16/float32 tensor, or ``width`` not an int.
        ValueError: ``weights`` is not 3-D, or has no rows or columns; ``width`` is not one of
            ``CHUNK_WIDTHS``.
    """
    if not isinstance(weights, torch.Tensor):
        raise TypeError(f"weights must be a torch.Tensor, got {type(weights).__name__}")
    if weights.dtype not in _FLOAT:
        raise TypeError(f"weights must be float16/bfloat16/float32, got {weights.dtype}")
    if weights.dim() != 3 or 0 in weights.shape:
        raise ValueError(f"weights must be a non-empty 3-D [E, N, K], got {tuple(weights.shape)}")
    if not isinstance(width, int) or isinstance(width, bool):
        raise TypeError(f"width must be an int, got {type(width).__name__}")
    if width not in CHUNK_WIDTHS:
        raise ValueError(f"width must be one of {CHUNK_WIDTHS}, got {width}")
    num_experts, n, k = weights.shape
    # the pad is a copy of its own: only where K needs it, so that the weights are copied once
    padded = torch.nn.functional.pad(weights, (0, -k % width)) if k % width else weights
    return padded.reshape(num_experts, n, -1, width).transpose(1, 2).contiguous()


def is_chunked(weights: torch.Tensor) -> bool:
    """Whether ``weights`` are stored in K chunks (4-D, from ``chunk_weights``) rather than as
    ``[E, N, K]``."""
    return weights.dim() == 4


def chunk_width(weights: torch.Tensor) -> int:
    """K columns per chunk of weights in K chunks ``[E, K / W, N, W]``: ``W``; 0 for weights
    ``[E, N, K]``."""
    return weights.shape[-1] if is_chunked(weights) else 0


def table_chunk_width(w1: torch.Tensor, w2: torch.Tensor) -> int:
    """The chunk width whose tuned table entries serve a call on ``w1`` and ``w2``: their
    common chunk width; 0 (the entries tuned on weights as stored) when either is stored as
    ``[E, N, K]`` or their widths differ, since no table is tuned on mixed widths."""
    width = chunk_width(w1)
    return width if width == chunk_width(w2) else 0


def experts_and_rows(weights: torch.Tensor) -> tuple[int, int]:
    """``(E, N)`` of weights ``[E, N, K]`` or of their chunks ``[E, K / W, N, W]``."""
    if is_chunked(weights):
        return weights.shape[0], weights.shape[2]
    return weights.shape[0], weights.shape[1]


def weight_strides(weights: torch.Tensor) -> tuple[int, int, int, int]:
    """Element strides of ``weights`` over (experts, rows, columns, chunks): of ``[E, N, K]``
    (no chunks: 0) or of their chunks ``[E, K / W, N, W]`` (columns within a chunk)."""
    if is_chunked(weights):
        return weights.stride(0), weights.stride(2), weights.stride(3), weights.stride(1)
    return weights.stride(0), weights.stride(1), weights.stride(2), 0


def check_chunks(chunks: torch.Tensor, name: str, experts: int, rows: int, cols: int) -> None:
    """``ValueError`` naming ``name`` unless ``chunks`` are ``chunk_weights`` of weights
    ``[experts, rows, cols]``: ``[experts, ceil(cols / W), rows, W]`` with ``W`` one of
    ``CHUNK_WIDTHS``, contiguous."""
    width = chunks.shape[-1]
    if width not in CHUNK_WIDTHS:
        raise ValueError(
            f"{name} in K chunks must have chunks of {' or '.join(map(str, CHUNK_WIDTHS))} "
            f"columns (its last dimension), got {list(chunks.shape)}"
        )
    want = (experts, -(-cols // width), rows, width)
    if tuple(chunks.shape) != want:
        raise ValueError(
            f"{name} in K chunks must be {list(want)} (chunk_weights of "
            f"[{experts}, {rows}, {cols}], width {width}), got {list(chunks.shape)}"
        )
    if not chunks.is_contiguous():
        raise ValueError(f"{name} in K chunks must be contiguous, as chunk_weights returns them")
