"""Tile bookkeeping shared by the grouped GEMM kernels of the standard format."""

from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def tile_coordinates(num_m_tiles, num_n_tiles, GROUP_M: tl.constexpr):
    """(m tile, n tile) of this program, walking ``GROUP_M`` m-tiles per column of n-tiles so
    neighbouring programs share B tiles in L2."""
    pid = tl.program_id(0)
    tiles_per_group = GROUP_M * num_n_tiles
    first_m = (pid // tiles_per_group) * GROUP_M
    group_rows = tl.minimum(num_m_tiles - first_m, GROUP_M)
    pid_m = first_m + (pid % tiles_per_group) % group_rows
    pid_n = (pid % tiles_per_group) // group_rows
    return pid_m, pid_n


@triton.jit
def expert_group_coordinates(expert_ids_ptr, num_m_tiles, num_n_tiles, GROUP_M: tl.constexpr):
    """(m tile, n tile) of this program when the groups follow the experts: an expert with
    fewer than ``GROUP_M`` m-tiles is one group, so its weight tiles are read once whatever the
    routing; a longer one is cut at multiples of ``GROUP_M`` m-tiles. Within a group, the m-tiles
    walk each column of n-tiles in turn, as in ``tile_coordinates``.

    Program ``pid`` belongs to m-tile ``q = pid // num_n_tiles``'s group. Every program of a
    group must find the same group, so each reads the ``2 * GROUP_M`` entries of ``expert_ids``
    around ``q``: a run of equal ids shorter than ``GROUP_M`` shows both of its ends to each of
    its programs, and a longer run shows each of them that it is longer. ``GROUP_M`` must be a
    power of two."""
    pid = tl.program_id(0)
    q = pid // num_n_tiles
    pos = q - GROUP_M + tl.arange(0, 2 * GROUP_M)
    ids = tl.load(expert_ids_ptr + pos, mask=(pos >= 0) & (pos < num_m_tiles), other=-2)
    expert = tl.sum(tl.where(pos == q, ids, 0))
    other = ids != expert  # -2 (outside the tiles) differs from every id, -1 included
    # an end outside the window reads as q - GROUP_M or q + GROUP_M, so the run then reads as
    # GROUP_M or more long
    start = tl.max(tl.where(other & (pos < q), pos, q - GROUP_M - 1)) + 1
    end = tl.min(tl.where(other & (pos > q), pos, q + GROUP_M))
    whole = end - start < GROUP_M
    block = (q // GROUP_M) * GROUP_M
    first = tl.where(whole, start, tl.maximum(block, start))
    last = tl.where(whole, end, tl.minimum(block + GROUP_M, end))
    local = pid - first * num_n_tiles
    return first + local % (last - first), local // (last - first)


@triton.jit
def program_tile(expert_ids_ptr, num_m_tiles, grid_m_tiles, num_n_tiles, GROUP_M: tl.constexpr,
                 EXPERT_GROUPS: tl.constexpr):  # fmt: skip
    """(m tile, n tile) of this program: groups of one expert's ``num_m_tiles`` aligned m-tiles
    with ``EXPERT_GROUPS`` (``expert_group_coordinates``), else every ``GROUP_M`` of the grid's
    ``grid_m_tiles`` (``tile_coordinates``)."""
    if EXPERT_GROUPS:
        return expert_group_coordinates(expert_ids_ptr, num_m_tiles, num_n_tiles, GROUP_M)
    return tile_coordinates(grid_m_tiles, num_n_tiles, GROUP_M)


@triton.jit
def tile_slots(sorted_token_ids_ptr, start, num_sorted, num_valid_slots, ROWS: tl.constexpr):
    """The flat slots of the ``ROWS`` sorted positions from ``start`` (int64) and which of them
    are real (not padding)."""
    offs_m = start + tl.arange(0, ROWS)
    slots = tl.load(sorted_token_ids_ptr + offs_m, mask=offs_m < num_sorted,
                    other=num_valid_slots).to(tl.int64)  # fmt: skip
    return slots, slots < num_valid_slots


@triton.jit
def local_expert_of(ids, expert_map_ptr, num_global_experts, HAS_MAP: tl.constexpr):
    """The local expert (int64) of global ids, or -1 for a skipped slot: an id below 0, at or
    past ``num_global_experts``, or (with ``HAS_MAP``) of an expert on another rank."""
    ids = ids.to(tl.int64)
    valid = (ids >= 0) & (ids < num_global_experts)
    if HAS_MAP:
        ids = tl.load(expert_map_ptr + ids, mask=valid, other=-1).to(tl.int64)
    return tl.where(valid, ids, -1)


@triton.jit
def tile_rows(pid_m, sorted_token_ids_ptr, expert_ids_ptr, num_sorted, num_valid_slots,
              topk_ids_ptr, expert_map_ptr, num_global_experts, SLOTS_FROM_IDS: tl.constexpr,
              HAS_MAP: tl.constexpr, BLOCK_M: tl.constexpr):  # fmt: skip
    """``(slots, slot_ok, expert)`` of m-tile ``pid_m``; ``expert`` is the local id or -1.

    Aligned tiles read ``moe_align_block_size``'s output. With ``SLOTS_FROM_IDS`` (decode of one
    or a few tokens) tile ``pid_m`` holds slot ``pid_m`` alone and its expert comes straight from
    ``topk_ids`` (through ``expert_map``), so no alignment pass runs; a skipped slot (``-1``, out
    of range or not local) gives expert -1."""
    if SLOTS_FROM_IDS:
        row = tl.arange(0, BLOCK_M)
        slots = tl.full([BLOCK_M], 0, tl.int64) + pid_m
        slot_ok = row == 0
        expert = local_expert_of(tl.load(topk_ids_ptr + pid_m), expert_map_ptr,
                                 num_global_experts, HAS_MAP)  # fmt: skip
    else:
        slots, slot_ok = tile_slots(sorted_token_ids_ptr, pid_m * BLOCK_M, num_sorted,
                                    num_valid_slots, BLOCK_M)  # fmt: skip
        expert = tl.load(expert_ids_ptr + pid_m).to(tl.int64)
    return slots, slot_ok, expert


@triton.jit
def tile_matrix_rows(start, slots, slot_ok, num_sorted, ROWS_SORTED: tl.constexpr,
                     TOP_K: tl.constexpr, ROWS: tl.constexpr):  # fmt: skip
    """Rows of the ``ROWS`` sorted positions from ``start`` in a matrix and which of them to read
    or write: token rows ``slot // TOP_K``, or with ``ROWS_SORTED`` the positions themselves (a
    matrix laid out in ``sorted_token_ids`` order, padding rows included, so a tile is one block
    of rows)."""
    if ROWS_SORTED:
        rows = start + tl.arange(0, ROWS)
        return rows.to(tl.int64), rows < num_sorted
    return slots // TOP_K, slot_ok


@triton.jit
def dot(a, b, acc, IEEE_FP32: tl.constexpr):
    """``acc + a @ b``; exact float32 products when ``IEEE_FP32`` (tf32 otherwise would round
    float32 inputs)."""
    if IEEE_FP32:
        return tl.dot(a, b, acc, input_precision="ieee")
    return tl.dot(a, b, acc)


@triton.jit
def chunked_columns(cols, stride_chunk, CHUNK: tl.constexpr):
    """Element offsets of K columns ``cols`` in a weight row stored in K chunks of ``CHUNK``
    (``chunk_weights``): column ``k`` lies in chunk ``k // CHUNK``, ``stride_chunk`` elements
    per chunk on, at ``k % CHUNK``. A run of ``CHUNK`` columns stays one contiguous run, so the
    loads keep their vector width."""
    return (cols // CHUNK) * stride_chunk + cols % CHUNK
