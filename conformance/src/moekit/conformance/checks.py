"""Checkers shared by the cases: invariants of an alignment, comparisons, reproduction lines."""

from __future__ import annotations

import numpy as np

TOLERANCES = {  # (atol, rtol) against a float64 reference
    "float32": (1e-5, 1e-5),
    "float16": (2e-2, 2e-2),
    "bfloat16": (2e-2, 2e-2),
}


def round_to_dtype(values: np.ndarray, dtype: str) -> np.ndarray:
    """``values`` rounded to ``dtype`` (float32, float16 or bfloat16, round-to-nearest-even),
    returned as float64: the inputs an implementation in that dtype actually sees."""
    if dtype != "bfloat16":
        return np.asarray(values).astype(dtype).astype(np.float64)
    bits = np.asarray(values, dtype=np.float32).view(np.uint32)
    rounded = (bits + np.uint32(0x7FFF) + ((bits >> 16) & np.uint32(1))) & np.uint32(0xFFFF0000)
    return rounded.view(np.float32).astype(np.float64)


def array_repr(array: np.ndarray | None) -> str:
    """A Python expression rebuilding ``array`` (used in reproduction lines)."""
    if array is None:
        return "None"
    return f"np.array({np.asarray(array).tolist()!r}, dtype=np.{np.asarray(array).dtype})"


def call_repr(op: str, args: dict[str, object]) -> str:
    """One line that replays a call through the adapter: ``adapter.op(arg=..., ...)``."""
    parts = []
    for key, value in args.items():
        text = array_repr(value) if isinstance(value, np.ndarray) else repr(value)
        if len(text) > 400:
            text = f"<{type(value).__name__} of shape {np.shape(value)}; see the case's seed>"
        parts.append(f"{key}={text}")
    return f"adapter.{op}({', '.join(parts)})"


class ConformanceError(AssertionError):
    """A failed check; its message ends with the one-line reproduction."""

    def __init__(self, what: str, reproduce: str) -> None:
        super().__init__(f"{what}\n  reproduce: {reproduce}")


def segments_as_sets(
    sorted_token_ids: np.ndarray, expert_ids: np.ndarray, block_size: int
) -> list[tuple[int, tuple[int, ...]]]:
    """The alignment read block by block: (expert, sorted slot ids) for every used block."""
    blocks = []
    for block, expert in enumerate(expert_ids):
        rows = sorted_token_ids[block * block_size : (block + 1) * block_size]
        blocks.append((int(expert), tuple(sorted(int(r) for r in rows))))
    return blocks


def compare_align(
    expected: tuple[np.ndarray, ...],
    actual: tuple[np.ndarray, ...],
    block_size: int,
    ordered: bool,
    reproduce: str,
    names: tuple[str, ...] = (
        "sorted_token_ids",
        "expert_ids",
        "num_tokens_post_pad",
        "scatter_idx",
    ),
) -> None:
    """Exact comparison of integer outputs; with ``ordered=False`` the slots of each block of
    ``sorted_token_ids`` are compared as a set (and ``scatter_idx`` must invert it)."""
    if len(expected) != len(actual):
        raise ConformanceError(f"{len(actual)} outputs, expected {len(expected)}", reproduce)
    for name, want, got in zip(names, expected, actual):
        got = np.asarray(got)
        if want.shape != got.shape:
            raise ConformanceError(f"{name}: shape {got.shape}, expected {want.shape}", reproduce)
        if name == "sorted_token_ids" and not ordered:
            want_blocks = segments_as_sets(want, expected[1], block_size)
            got_blocks = segments_as_sets(got, actual[1], block_size)
            if want_blocks != got_blocks:
                raise ConformanceError(f"{name}: block contents differ", reproduce)
            continue
        if name == "scatter_idx" and not ordered:
            sorted_ids = np.asarray(actual[0])
            placed = got[:, 0] >= 0
            if not np.array_equal(placed, want[:, 0] >= 0) or not np.array_equal(
                sorted_ids[got[placed, 0]], np.flatnonzero(placed)
            ):
                raise ConformanceError(f"{name} does not invert sorted_token_ids", reproduce)
            continue
        if not np.array_equal(want, got):
            bad = np.flatnonzero(want.reshape(-1) != got.reshape(-1))
            first = int(bad[0])
            raise ConformanceError(
                f"{name}: {bad.size} elements differ; first at {first}: "
                f"got {got.reshape(-1)[first]}, expected {want.reshape(-1)[first]}",
                reproduce,
            )


def layout_experts(
    topk_ids: np.ndarray,
    num_experts: int,
    expert_map: np.ndarray | None,
    ignore_invalid_experts: bool,
) -> np.ndarray:
    """Segment each flat slot belongs to (global id, or local id when the map lays out by local
    id); ``-1`` for a slot that is not placed."""
    flat = np.asarray(topk_ids).reshape(-1).astype(np.int64)
    in_range = (flat >= 0) & (flat < num_experts)
    if expert_map is not None and ignore_invalid_experts:
        local = np.where(in_range, np.asarray(expert_map)[np.where(in_range, flat, 0)], -1)
        return np.where(in_range & (local >= 0), local, -1)
    return np.where(in_range, flat, -1)


def check_align_invariants(
    topk_ids: np.ndarray,
    block_size: int,
    num_experts: int,
    outputs: tuple[np.ndarray, ...],
    expert_map: np.ndarray | None = None,
    ignore_invalid_experts: bool = False,
    reproduce: str = "",
) -> None:
    """The spec's properties of an alignment, checked without the reference."""
    sorted_ids, expert_ids, post_pad_arr = (np.asarray(o) for o in outputs[:3])
    flat = np.asarray(topk_ids).reshape(-1).astype(np.int64)
    numel = flat.size
    post_pad = int(post_pad_arr[0])

    def fail(what: str) -> None:
        raise ConformanceError(what, reproduce)

    if post_pad % block_size:
        fail(f"num_tokens_post_pad={post_pad} is not a multiple of block_size={block_size}")
    if post_pad > sorted_ids.size:
        fail(f"num_tokens_post_pad={post_pad} exceeds len(sorted_token_ids)={sorted_ids.size}")
    if expert_ids.size != -(-sorted_ids.size // block_size):
        fail(f"len(expert_ids)={expert_ids.size} != cdiv({sorted_ids.size}, {block_size})")
    tail = sorted_ids[post_pad:]
    if np.any(tail != numel):
        fail(f"sorted_token_ids past num_tokens_post_pad must be the sentinel {numel}")
    if np.any(expert_ids[post_pad // block_size :] != -1):
        fail("expert_ids past the used blocks must be -1")

    placed_expert = layout_experts(topk_ids, num_experts, expert_map, ignore_invalid_experts)

    used = sorted_ids[:post_pad]
    real = used[used != numel]
    if np.any((real < 0) | (real > numel)):
        fail("sorted_token_ids holds values outside [0, numel]")
    should_place = np.flatnonzero(placed_expert >= 0)
    if not np.array_equal(np.sort(real), should_place):
        fail("every valid slot must be placed exactly once and nothing else")

    segment_of_block = []
    for block in range(post_pad // block_size):
        rows = used[block * block_size : (block + 1) * block_size]
        slots = rows[rows != numel]
        if slots.size == 0:
            fail(f"block {block} holds only padding")
        experts = set(placed_expert[slots].tolist())
        if len(experts) != 1:
            fail(f"block {block} mixes experts {sorted(experts)}")
        if np.any(rows[: slots.size] != slots):
            fail(f"block {block}: padding must follow the slots")
        segment_of_block.append(experts.pop())
    if segment_of_block != sorted(segment_of_block):
        fail("segments must follow each other in ascending expert order")
    for block, expert in enumerate(segment_of_block):
        want = expert
        if expert_map is not None and not ignore_invalid_experts:
            want = int(np.asarray(expert_map)[expert])
        if int(expert_ids[block]) != want:
            fail(f"expert_ids[{block}]={int(expert_ids[block])}, expected {want}")
    for block in range(1, len(segment_of_block)):
        same = segment_of_block[block] == segment_of_block[block - 1]
        previous = used[(block - 1) * block_size : block * block_size]
        if same and np.any(previous == numel):
            fail(f"segment padding inside the segment of expert {segment_of_block[block]}")


def assert_close(
    expected: np.ndarray, actual: np.ndarray, dtype: str, reproduce: str, what: str = "output"
) -> None:
    atol, rtol = TOLERANCES[dtype]
    actual = np.asarray(actual, dtype=np.float64)
    if expected.shape != actual.shape:
        raise ConformanceError(
            f"{what}: shape {actual.shape}, expected {expected.shape}", reproduce
        )
    if not np.all(np.isfinite(actual)):
        raise ConformanceError(f"{what}: non-finite values (unwritten or overflow)", reproduce)
    if not np.allclose(actual, expected, atol=atol, rtol=rtol):
        err = np.max(np.abs(actual - expected))
        raise ConformanceError(
            f"{what}: max abs error {err:.3g} over atol={atol}, rtol={rtol} ({dtype})", reproduce
        )
