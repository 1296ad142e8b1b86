"""Tile configurations of the grouped GEMM: a tuned table when one matches, else a heuristic.

Tables are JSON files in ``moekit/experts/configs/`` named
``E={E},N={N},dtype={dtype},device={device}.json`` (device name with spaces as ``_``), mapping
a token count ``M`` to a config; ``entry_tokens`` picks the entry a call uses. Entries tuned on
weights in K chunks of ``W`` columns (``chunk_weights``) live in a table of the same name ending
``,chunks={W}.json``; a call on such chunks takes them over the first table's entries for the
same token counts. ``benchmarks/experts/tune.py`` writes both.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch

CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"


OPTIONAL_FIELDS = (
    "BLOCK_N1",
    "BLOCK_N2",
    "BLOCK_K2",
    "num_warps2",
    "num_stages2",
    "B_TMA",
    "SORTED_ROWS",
    "EXPERT_GROUPS",
    "TAIL_M",
    "TAIL_M2",
    "TAIL_SWAP",
    "ROWS_DEFAULT_POLICY",
    "EXPERT_PROGRAMS",
    "EXPERT_PROGRAMS_ROWS",
)


@dataclass(frozen=True)
class GemmConfig:
    """Tiles of both grouped GEMMs (``BLOCK_M`` is shared: both walk the same aligned slots).

    ``BLOCK_N1`` is GEMM1's activation columns per tile when it differs from the rule (0: half of
    ``BLOCK_N`` for gated activations, so a tile spans ``BLOCK_N`` rows of W13; ``BLOCK_N``
    otherwise). ``BLOCK_N2``, ``BLOCK_K2``, ``num_warps2`` and ``num_stages2`` are GEMM2's own
    tile when set (0: GEMM1's). With ``B_TMA`` both GEMMs read the expert weights through
    Hopper tensor-memory descriptors instead of per-thread loads, where the layout allows (see
    ``weight_descriptor``). With ``SORTED_ROWS`` the hidden states are first copied in the
    aligned order and GEMM1 writes its output in that order, so every A tile of both GEMMs is
    one block of rows, read through TMA where possible (see ``gather_rows``); a call with tiles
    from ``topk_ids`` (one or a few tokens), which has no aligned order, ignores it. With
    ``EXPERT_GROUPS`` the tile order groups each expert's aligned m-tiles, at most ``GROUP_M``
    (a power of two) at a time, instead of every ``GROUP_M`` m-tiles (see
    ``expert_group_coordinates``); tiles from ``topk_ids`` ignore it too. ``TAIL_M`` (0: off; else
    a power of two from 16 to ``BLOCK_M``) lets a GEMM1 program also compute the first
    ``TAIL_M`` rows of the next m-tile when that is its expert's last one and holds no more live
    rows (``BLOCK_M``: whatever its rows), so that tile's weights are not streamed again (see
    ``tail_fold``); ``TAIL_M2`` does the same for GEMM2, independently (0: off, not GEMM1's);
    tiles from ``topk_ids`` ignore both. With ``TAIL_SWAP`` both GEMMs compute their folded rows'
    products transposed, so that the rows fill the MMA's N operand rather than a padded M (see
    ``tail_fold``); without a tail it does nothing. With ``ROWS_DEFAULT_POLICY`` the rows each
    GEMM stores for the next kernel keep L2's default eviction policy instead of ``row_cache``'s.
    With ``EXPERT_PROGRAMS`` a call this entry serves runs both GEMMs as one program per local
    expert, with the path's own tile, where ``TritonExperts``'s rule lets it (see
    ``expert_programs``); the entry's tiles then serve the calls the rule leaves to the aligned
    path. ``EXPERT_PROGRAMS_ROWS`` is the most slots per
    local expert, on average, for which the rule lets it (0: the rule's default,
    ``EXPERT_PROGRAMS_MAX_ROWS``)."""

    BLOCK_M: int
    BLOCK_N: int
    BLOCK_K: int
    GROUP_M: int = 1
    num_warps: int = 4
    num_stages: int = 3
    BLOCK_N1: int = 0
    BLOCK_N2: int = 0
    BLOCK_K2: int = 0
    num_warps2: int = 0
    num_stages2: int = 0
    B_TMA: bool = False
    SORTED_ROWS: bool = False
    EXPERT_GROUPS: bool = False
    TAIL_M: int = 0
    TAIL_M2: int = 0
    TAIL_SWAP: bool = False
    ROWS_DEFAULT_POLICY: bool = False
    EXPERT_PROGRAMS: bool = False
    EXPERT_PROGRAMS_ROWS: int = 0

    def __post_init__(self) -> None:
        if self.EXPERT_PROGRAMS_ROWS < 0 or (
            self.EXPERT_PROGRAMS_ROWS and not self.EXPERT_PROGRAMS
        ):
            raise ValueError("EXPERT_PROGRAMS_ROWS: 0, or a positive count with EXPERT_PROGRAMS, "
                             f"got {self.EXPERT_PROGRAMS_ROWS}")  # fmt: skip
        if self.EXPERT_GROUPS and (self.GROUP_M < 1 or self.GROUP_M & (self.GROUP_M - 1)):
            raise ValueError(f"GROUP_M: EXPERT_GROUPS needs a power of two, got {self.GROUP_M}")
        for name, tail in (("TAIL_M", self.TAIL_M), ("TAIL_M2", self.TAIL_M2)):
            if tail and (tail < 16 or tail & (tail - 1) or tail > self.BLOCK_M):
                raise ValueError(f"{name}: 0 or a power of two from 16 to BLOCK_M "
                                 f"({self.BLOCK_M}), got {tail}")  # fmt: skip

    def with_block_m(self, block_m: int) -> GemmConfig:
        """This config with ``BLOCK_M = block_m``, each folded tail dropped where it no longer
        fits (more than the new ``BLOCK_M``)."""

        def fitting(tail: int) -> int:
            return tail if tail <= block_m else 0

        return replace(self, BLOCK_M=block_m, TAIL_M=fitting(self.TAIL_M),
                       TAIL_M2=fitting(self.TAIL_M2))  # fmt: skip

    def as_dict(self) -> dict[str, int]:
        """The form the tables store: every field but the optional ones left unset."""
        return {name: value for name, value in asdict(self).items()
                if name not in OPTIONAL_FIELDS or value}  # fmt: skip

    def gemm2(self) -> GemmConfig:
        """The tile GEMM2 runs with: this config with GEMM2's own fields where they are set."""
        return replace(
            self,
            BLOCK_N=self.BLOCK_N2 or self.BLOCK_N,
            BLOCK_K=self.BLOCK_K2 or self.BLOCK_K,
            num_warps=self.num_warps2 or self.num_warps,
            num_stages=self.num_stages2 or self.num_stages,
            TAIL_M=self.TAIL_M2,
            BLOCK_N1=0, BLOCK_N2=0, BLOCK_K2=0, num_warps2=0, num_stages2=0, TAIL_M2=0,
        )  # fmt: skip


def table_name(num_experts: int, n: int, dtype: torch.dtype, device_name: str,
               chunks: int = 0) -> str:  # fmt: skip
    """The file name of the table for ``(E, N, dtype)`` on ``device_name``; with ``chunks``
    (a chunk width, 0: none), of the entries tuned on weights in K chunks of that width."""
    dtype_name = str(dtype).removeprefix("torch.")
    layout = f",chunks={chunks}" if chunks else ""
    device = device_name.replace(" ", "_")
    return f"E={num_experts},N={n},dtype={dtype_name},device={device}{layout}.json"


@functools.cache
def load_table(name: str) -> dict[int, GemmConfig] | None:
    path = CONFIG_DIR / name
    if not path.is_file():
        return None
    raw = json.loads(path.read_text())
    return {int(m): GemmConfig(**cfg) for m, cfg in raw.items()}


def default_config(num_tokens: int, top_k: int, num_experts: int, interpreter: bool) -> GemmConfig:
    """A config for shapes without a tuned entry: small tiles when few rows reach each expert."""
    if interpreter:
        return GemmConfig(BLOCK_M=16, BLOCK_N=32, BLOCK_K=32, num_warps=4, num_stages=1)
    rows_per_expert = num_tokens * top_k / max(num_experts, 1)
    if rows_per_expert <= 16:
        return GemmConfig(BLOCK_M=16, BLOCK_N=64, BLOCK_K=128, GROUP_M=1, num_warps=4,
                          num_stages=4)  # fmt: skip
    if rows_per_expert <= 64:
        return GemmConfig(BLOCK_M=64, BLOCK_N=64, BLOCK_K=64, GROUP_M=8, num_warps=4,
                          num_stages=4)  # fmt: skip
    return GemmConfig(BLOCK_M=128, BLOCK_N=128, BLOCK_K=64, GROUP_M=8, num_warps=8, num_stages=3)


# Devices whose tables also serve devices of the same architecture that have none of their own.
TUNED_DEVICES = {(9, 0): "NVIDIA H100 80GB HBM3"}


@functools.cache
def device_table(num_experts: int, n: int, dtype: torch.dtype, device: torch.device,
                 chunks: int = 0) -> dict[int, GemmConfig] | None:  # fmt: skip
    """The table for ``(E, N, dtype)`` tuned on ``device``'s model, else on a device of the same
    compute capability (``TUNED_DEVICES``), else None; resolved once per device. With ``chunks``
    (the weights' chunk width, 0: as stored), a device's entries tuned on such chunks replace
    its other entries for the same token counts, so a table of chunk entries may hold only the
    counts where they differ."""
    names = [torch.cuda.get_device_name(device)]
    sibling = TUNED_DEVICES.get(torch.cuda.get_device_capability(device))
    if sibling is not None and sibling != names[0]:
        names.append(sibling)
    for name in names:
        table = load_table(table_name(num_experts, n, dtype, name))
        chunk_entries = (
            load_table(table_name(num_experts, n, dtype, name, chunks)) if chunks else None
        )
        if chunk_entries:
            table = {**(table or {}), **chunk_entries}
        if table:
            return table
    return None


# Calls of at most this many tokens use the table's smallest entry (tuned at one token): on most
# shapes they take their tiles from topk_ids, one 16-row tile per slot, as one token does.
SMALL_BATCH_TOKENS = 4
# Between two tuned token counts, a call keeps the smaller count's entry while its mean rows per
# expert fill at most this share of that entry's BLOCK_M, so that the spread of rows between
# experts seldom spills into a second tile (see entry_tokens).
LOWER_ENTRY_FILL = 0.8


def neighbour_tokens(tuned_tokens: Iterable[int], num_tokens: int) -> tuple[int, int]:
    """The largest tuned count at or below ``num_tokens`` and the smallest at or above it (the
    nearest end of the tuned counts where none is)."""
    tuned = sorted(tuned_tokens)
    if not tuned:
        raise ValueError("tuned_tokens: a table needs at least one entry")
    lower = max((m for m in tuned if m <= num_tokens), default=tuned[0])
    upper = min((m for m in tuned if m >= num_tokens), default=tuned[-1])
    return lower, upper


def entry_tokens(table: Mapping[int, GemmConfig], num_tokens: int, top_k: int,
                 num_experts: int) -> int:  # fmt: skip
    """The tuned token count whose entry serves a call of ``num_tokens`` tokens, each with
    ``top_k`` slots over ``num_experts`` experts.

    Up to ``SMALL_BATCH_TOKENS`` tokens: the smallest entry. Otherwise, between two tuned counts,
    the smaller one while the call's mean rows per expert (``num_tokens * top_k / num_experts``)
    fill at most ``LOWER_ENTRY_FILL`` of its ``BLOCK_M``, else the larger; below or above every
    tuned count, the nearest end. An entry tuned for fewer tokens splits each expert's rows into
    more tiles once they outgrow its ``BLOCK_M``, and each tile streams that expert's weights
    again; one tuned for more tokens pads each expert to a taller tile, which costs MMA work.
    Between the shipped entries (``benchmarks/experts/bench_between_entries.py``), the nearest
    entry, the rule before this one, was up to 30% slower on the H100 and 38% on the H200 than
    the better neighbour; beyond four tokens this rule was at most 2.5% slower on the runs that
    set it, and 5.3% on a later H200 run."""
    lower, upper = neighbour_tokens(table, num_tokens)
    if num_tokens <= SMALL_BATCH_TOKENS:
        return min(table)
    rows_per_expert = num_tokens * top_k / max(num_experts, 1)
    return lower if rows_per_expert <= LOWER_ENTRY_FILL * table[lower].BLOCK_M else upper


def get_config(num_tokens: int, top_k: int, num_experts: int, n: int, dtype: torch.dtype,
               device: torch.device, interpreter: bool, chunks: int = 0) -> GemmConfig:  # fmt: skip
    """The tuned entry ``entry_tokens`` picks for ``(E, N, dtype, device)``, else the table tuned
    on a device of the same compute capability (``TUNED_DEVICES``: an H200 uses the H100's),
    else the default heuristic. ``chunks``: the weights' chunk width (0: as stored), whose own
    entries win where a device has them (``device_table``)."""
    if device.type == "cuda" and not interpreter:
        table = device_table(num_experts, n, dtype, device, chunks)
        if table:
            return table[entry_tokens(table, num_tokens, top_k, num_experts)]
    return default_config(num_tokens, top_k, num_experts, interpreter)
