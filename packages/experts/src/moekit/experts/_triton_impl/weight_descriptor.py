"""Tensor-memory (TMA) descriptors over the stacked expert weights, for Hopper and later.

A grouped GEMM tile reads ``BLOCK_N`` consecutive weight rows of one expert and ``BLOCK_K``
columns. With a descriptor, one thread issues that copy and the hardware fills shared memory,
instead of every thread computing and issuing its own loads. The weights ``[E, N, K]`` are seen
as one matrix ``[E * N, K]``, so expert ``e``'s rows start at ``e * N``. Rows past an expert's
``N`` in a tail tile belong to the next expert: they only feed output columns that are masked
at the store. Columns past ``K`` come back as zeros.

The weights can also be stored in K chunks (``chunk_weights``): ``[E, K / W, N, W]`` with ``W``
64 or 128 columns, so that the ``[block_n, W]`` box of a K step is ``block_n * W`` contiguous
elements instead of ``block_n`` runs of ``W``, one per weight row (HBM streams those 2-3% faster:
NOTES, lever 48). The view is then ``[E * K / W * N, W]``: expert ``e``'s row ``n`` of chunk
``c`` is view row ``(e * K / W + c) * N + n``, and a kernel reading it steps at most ``W``
columns of K at a time, at column ``k % W`` of chunk ``k // W``.
"""

from __future__ import annotations

import re
from typing import Any

import torch
import triton

from moekit.align import interpreter_enabled
from moekit.experts.weight_chunks import CHUNK_WIDTHS

try:  # kernel arguments that are host-built descriptors: Triton 3.4 and later
    from triton.tools.tensor_descriptor import TensorDescriptor
except ImportError:  # pragma: no cover (the CI's Triton has them)
    TensorDescriptor = None
_release = re.match(r"(\d+)\.(\d+)", triton.__version__)
if _release is None or (int(_release[1]), int(_release[2])) < (3, 4):
    TensorDescriptor = None  # older releases load through pointers


def chunked_descriptor(chunks: torch.Tensor, block_n: int, block_k: int,
                       row_pairs: bool = False) -> Any | None:  # fmt: skip
    """A ``TensorDescriptor`` of ``[block_n, block_k]`` boxes over ``chunks [E, K / W, N, W]``
    (see ``chunk_weights``) seen as ``[E * K / W * N, W]``, or None where ``block_k`` does not
    divide ``W`` or the device or the Triton release does not allow one. With ``row_pairs``
    (gpt-oss's interleaved gate/up rows ``2n``, ``2n + 1``) the view is ``[E * K / W * N / 2,
    2 * W]``: a chunk of gate row ``n`` is view row ``n`` of its chunk's ``N / 2``, columns
    ``[0, W)``, and of its up row the same view row, columns ``[W, 2 * W)``."""
    width = chunks.shape[-1]
    if chunks.dim() != 4 or width not in CHUNK_WIDTHS or not chunks.is_contiguous():
        return None
    if width % block_k:  # a box within one chunk
        return None
    if row_pairs:
        if chunks.shape[2] % 2:
            return None
        return rows_descriptor(chunks.view(-1, 2 * width), block_n, block_k)
    return rows_descriptor(chunks.view(-1, width), block_n, block_k)


def chunk_product(block_k: int, width: int) -> int:
    """K columns of one product where a step of ``block_k`` reads chunks of ``width`` columns
    through TMA: the step itself within one chunk, else whole chunks; 0 where neither divides
    the other (or there are no chunks)."""
    if width and (width % block_k == 0 or block_k % width == 0):
        return min(block_k, width)
    return 0


def _tma_capable(weights: torch.Tensor) -> bool:
    if TensorDescriptor is None:
        return False
    if interpreter_enabled():
        return True
    if weights.device.type != "cuda":
        return False
    return torch.cuda.get_device_capability(weights.device)[0] >= 9


def weight_descriptor(weights: torch.Tensor, block_n: int, block_k: int,
                      row_pairs: bool = False) -> Any | None:  # fmt: skip
    """A ``TensorDescriptor`` of ``[block_n, block_k]`` blocks over ``weights [E, N, K]`` seen as
    ``[E * N, K]``, or None where the layout, the device or the Triton release does not allow one
    (the caller then loads through pointers: a table entry asking for TMA stays correct, only
    slower).

    With ``row_pairs`` (gpt-oss's interleaved gate/up rows ``2n``, ``2n + 1``) the view is
    ``[E * N / 2, 2 * K]``: gate row ``n`` of an expert is view row ``n``, columns ``[0, K)``,
    and its up row the same view row, columns ``[K, 2K)``. That view is only taken when
    ``block_k`` divides ``K``, so a gate block never reaches into the up columns.
    """
    num_experts, n, k = weights.shape
    # an up block starts K columns into its view row: K itself must keep 16-byte alignment
    if not weights.is_contiguous() or (k * weights.element_size()) % 16:
        return None
    if row_pairs:
        if n % 2 or k % block_k:
            return None
        matrix = weights.view(num_experts * n // 2, 2 * k)
    else:
        matrix = weights.view(num_experts * n, k)
    return rows_descriptor(matrix, block_n, block_k)


def rows_descriptor(matrix: torch.Tensor, block_m: int, block_k: int) -> Any | None:
    """A ``TensorDescriptor`` of ``[block_m, block_k]`` blocks over a row-major ``matrix [R, K]``
    (rows past ``R`` and columns past ``K`` read as zeros), or None where the layout, the device
    or the Triton release does not allow one."""
    if matrix.stride(1) != 1 or not _tma_capable(matrix):
        return None
    if (matrix.stride(0) * matrix.element_size()) % 16 or matrix.data_ptr() % 16:
        return None
    return TensorDescriptor.from_tensor(matrix, [block_m, block_k])
