"""Launch parameters of the segment-layout kernels, chosen from the problem size alone."""

from __future__ import annotations

from dataclasses import dataclass

import triton

from moekit.align._backend import interpreter_enabled

# Up to SINGLE_CHUNK_MAX_SLOTS flat slots the layout runs as one launch (each program counts
# every slot); up to SHORT_CHUNKS_MAX_SLOTS a first kernel counts chunks of SHORT_CHUNK slots,
# with as many groups of experts as one chunk would have. The thresholds and splits come from
# sweeps on an H100 (top-8 of 256 experts, benchmarks/results/align_sweep_h100.json; top-8 of
# 128 and 256 experts at 16-1024 tokens, align_sweep_small_h100.json, and with programmatic
# launch, align_sweep_pdl_h100.json): fewer experts per program pays while the slots are few,
# down to about 128 groups of experts up to 2048 slots and 64 up to 8192. Chunks of 512 slots
# beat one chunk at 1024 and 2048 slots (128 experts at 256 tokens: 5.7 -> 4.2 us alone; in
# whole experts calls, experts_align_chunks_h100.json); longer chunks pay once slots are many.
SINGLE_CHUNK_MAX_SLOTS = 512
SINGLE_CHUNK_PROGRAMS = 128
SHORT_CHUNKS_MAX_SLOTS = 2048
SHORT_CHUNK = 512
FEW_CHUNKS_CHUNK = 1024
FEW_CHUNKS_GROUPS = 64
# Past SORT_MIN_SLOTS slots, one program per chunk sorts it by expert (sorted_chunk_kernels):
# the placement no longer reads every slot once per group of experts. Sweeps with programmatic
# launch on an H100 (align_sorted_sweep_h100_fe38401.log and align_sorted_sweep_h100.json in
# benchmarks/results): at 32768 slots of 8, 128 and 256 experts 8.8 -> 5.8, 20.2 -> 8.6 and
# 30.9 -> 9.5 us, at 131072 slots of 128 and 256 experts 56.0 -> 21.7 and 82.8 -> 16.0 us. At
# exactly SORT_MIN_SLOTS slots the sorted chunks pay from SORT_MIN_BINS_AT_MIN_SLOTS histogram
# bins on (256 experts: 12.9 -> 8.3 us on the H100, 12.7 -> 8.3 on the H200; DeepSeek-V3 TP4 at
# 1024 tokens -0.18% in two whole-call runs). On 8 and 64 experts the groups stay ahead (3.4
# against 4.8 us); on 128 the sorted chunks were 0.3 us faster alone but Qwen3-30B's calls at
# 1024 tokens 0.0-0.5% slower (experts_align_sort_rule_ab_h100.json); at 4096 and 6144 slots
# the groups won on every expert count swept (align_sort_rule_h100.json,
# align_sort_rule_h200.json). Up to SORT_MAX_BINS histogram bins, so that the per-chunk counts
# stay small.
SORT_MIN_SLOTS = 8192
SORT_MIN_BINS_AT_MIN_SLOTS = 512
SORT_MAX_BINS = 1024
# Chunk length: SHORT_SORT_CHUNK up to SHORT_SORT_MAX_SLOTS slots, and up to
# SHORT_SORT_MAX_SLOTS_FEW_BINS slots with at most SHORT_SORT_FEW_BINS bins; SORT_CHUNK beyond.
# On both boards chunks of 256 took 0.7-1.6 us off 512 at 16384 slots (8 to 256 experts) and
# 0.2-0.9 us at 32768 slots of up to 128 experts, but at 32768 slots of 256 experts (128 chunks
# of 512 bins) they cost 15.5 against 9.6 us, and from 65536 slots on they lost up to 10.7 us
# (65536 slots: 0.9, 1.3 and 8.5 us on 8, 128 and 256 experts, 0.2 ahead on 64). Chunks of 1024
# lost on every size but one (131072 slots of 128 experts: 17.2 against 21.4 us on the H100,
# 17.3 against 21.7 on the H200): a cost of programmatic launch at that size, erratic from size
# to size (align_sorted_pdl_probe_h100.json), which the rule leaves to chunks of 512.
SHORT_SORT_CHUNK = 256
SHORT_SORT_MAX_SLOTS = 16384
SHORT_SORT_MAX_SLOTS_FEW_BINS = 32768
SHORT_SORT_FEW_BINS = 256
SORT_CHUNK = 512
SORT_EXPERTS_PER_PROGRAM = 8


@dataclass(frozen=True)
class LayoutConfig:
    """``chunk`` slots per chunk; with ``sort_chunks`` one program sorts each chunk by expert
    (``sorted_chunk_kernels``), else programs own ``experts_per_program`` experts of one chunk
    and compare ``sub`` slots at a time (``segment_kernels``)."""

    chunk: int
    sub: int
    experts_per_program: int
    num_warps: int
    sort_chunks: bool = False

    def num_chunks(self, numel: int) -> int:
        return max(1, triton.cdiv(numel, self.chunk))


def layout_config(numel: int, num_layout_bins: int) -> LayoutConfig:
    """Chunking and work split for ``numel`` slots over ``num_layout_bins`` segments."""
    bins = triton.next_power_of_2(num_layout_bins)
    sort_chunk = sorted_chunk_length(numel, num_histogram_bins(num_layout_bins))
    if sort_chunk:
        return LayoutConfig(
            sort_chunk, sort_chunk, SORT_EXPERTS_PER_PROGRAM, num_warps=4, sort_chunks=True
        )
    if numel <= SHORT_CHUNKS_MAX_SLOTS:
        chunk = max(16, triton.next_power_of_2(numel))
        if numel > SINGLE_CHUNK_MAX_SLOTS:
            chunk = SHORT_CHUNK
        experts_per_program = min(2, max(1, bins // SINGLE_CHUNK_PROGRAMS))
    elif numel <= 8192:
        chunk = FEW_CHUNKS_CHUNK
        experts_per_program = min(4, max(1, bins // FEW_CHUNKS_GROUPS))
    elif numel <= 32768:
        chunk, experts_per_program = 2048, 4
    else:
        chunk, experts_per_program = 4096, 8
    if interpreter_enabled():
        # The CPU interpreter runs programs one after another: few wide programs are far faster.
        experts_per_program = 32
    experts_per_program = min(experts_per_program, bins)
    sub = min(chunk, 4096 // experts_per_program)
    return LayoutConfig(chunk, sub, experts_per_program, num_warps=4)


def sorted_chunk_length(numel: int, histogram_bins: int) -> int:
    """Slots per chunk where ``numel`` slots over ``histogram_bins`` bins run as sorted chunks,
    else 0 (see SORT_MIN_SLOTS and SHORT_SORT_CHUNK)."""
    if histogram_bins > SORT_MAX_BINS or numel < SORT_MIN_SLOTS:
        return 0
    if numel == SORT_MIN_SLOTS and histogram_bins < SORT_MIN_BINS_AT_MIN_SLOTS:
        return 0
    if numel <= SHORT_SORT_MAX_SLOTS or (
        numel <= SHORT_SORT_MAX_SLOTS_FEW_BINS and histogram_bins <= SHORT_SORT_FEW_BINS
    ):
        return SHORT_SORT_CHUNK
    return SORT_CHUNK


def num_histogram_bins(num_layout_bins: int) -> int:
    """Histogram width: every layout bin, one for unplaced slots, one for lanes past the end."""
    return triton.next_power_of_2(num_layout_bins + 2)


def pad_tile(block_size: int) -> int:
    return max(2, triton.next_power_of_2(block_size))
