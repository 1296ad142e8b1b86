"""The shipped tuned tables parse and the lookup picks the entry ``entry_tokens`` chooses."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from moekit.experts._triton_impl import configs
from moekit.experts._triton_impl.configs import (
    CONFIG_DIR,
    GemmConfig,
    default_config,
    entry_tokens,
    table_name,
)

SHIPPED = sorted(CONFIG_DIR.glob("*.json"))


def test_tables_are_shipped():
    assert SHIPPED, f"no tuned tables in {CONFIG_DIR}"


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.stem)
def test_shipped_table_is_valid(path):
    raw = json.loads(path.read_text())
    assert raw, f"{path.name} is empty"
    for tokens, entry in raw.items():
        assert int(tokens) > 0, path.name
        config = GemmConfig(**entry)
        assert GemmConfig(**config.as_dict()) == config
        for gemm in (config, config.gemm2()):
            for block in (gemm.BLOCK_M, gemm.BLOCK_N, gemm.BLOCK_K, gemm.BLOCK_N1 or 16):
                assert block >= 16 and block & (block - 1) == 0, f"{path.name} M={tokens}: {gemm}"
            assert gemm.num_warps in (1, 2, 4, 8, 16) and gemm.num_stages >= 1, path.name
        assert isinstance(config.B_TMA, bool), f"{path.name} M={tokens}"


def test_gemm2_takes_its_own_fields_where_set():
    shared = GemmConfig(64, 128, 64, 8, 8, 3, BLOCK_N1=32)
    assert shared.gemm2() == GemmConfig(64, 128, 64, 8, 8, 3)
    own = GemmConfig(64, 128, 64, 8, 8, 3, BLOCK_N2=256, BLOCK_K2=32, num_warps2=4, B_TMA=True)
    assert own.gemm2() == GemmConfig(64, 256, 32, 8, 4, 3, B_TMA=True)


def test_tables_store_only_the_optional_fields_that_are_set():
    stored = GemmConfig(64, 128, 64, 8, 8, 3, BLOCK_K2=128, B_TMA=True).as_dict()
    assert stored == {"BLOCK_M": 64, "BLOCK_N": 128, "BLOCK_K": 64, "GROUP_M": 8, "num_warps": 8,
                      "num_stages": 3, "BLOCK_K2": 128, "B_TMA": True}  # fmt: skip


def test_table_name_spells_device_without_spaces():
    name = table_name(8, 28672, torch.bfloat16, "NVIDIA H100 80GB HBM3")
    assert name == "E=8,N=28672,dtype=bfloat16,device=NVIDIA_H100_80GB_HBM3.json"


def tiles(block_m: int) -> GemmConfig:
    return GemmConfig(block_m, 64, 64)


LADDER = {1: tiles(16), 16: tiles(16), 64: tiles(32), 256: tiles(64), 4096: tiles(128)}


@pytest.mark.parametrize(
    ("tokens", "want"),
    [
        (1, 1), (4, 1),  # small batches: the one-token entry
        (5, 1), (40, 16),  # 1.25 and 10 rows per expert fit 0.8 of BLOCK_M 16
        (60, 64),  # 15 rows do not: the larger entry
        (64, 64), (102, 64), (103, 256),  # 25.5 rows fit 0.8 of 32, 25.75 do not
        (200, 256), (300, 4096), (4096, 4096), (99999, 4096),
    ],
)  # fmt: skip
def test_entry_tokens_keeps_the_smaller_entry_while_its_tiles_hold_the_rows(tokens, want):
    assert configs.SMALL_BATCH_TOKENS == 4 and configs.LOWER_ENTRY_FILL == 0.8  # the cases' premise
    assert entry_tokens(LADDER, tokens, top_k=2, num_experts=8) == want


def test_entry_tokens_below_the_smallest_entry_takes_it():
    table = {16: tiles(16), 256: tiles(64)}
    for tokens in (1, 2, 8, 16):
        assert entry_tokens(table, tokens, top_k=8, num_experts=128) == 16


def test_entry_tokens_needs_an_entry():
    with pytest.raises(ValueError, match="table"):
        entry_tokens({}, 16, top_k=2, num_experts=8)


def write_table(directory: Path, entries: dict[int, GemmConfig], dtype: torch.dtype, device: str,
                chunks: int = 0) -> Path:  # fmt: skip
    """``entries`` as the table of ``(E=4, N=64, dtype)`` on ``device`` (of chunk width ``chunks``)."""
    path = directory / table_name(4, 64, dtype, device, chunks)
    path.write_text(json.dumps({str(m): c.as_dict() for m, c in entries.items()}))
    return path


def clear_table_caches() -> None:
    configs.load_table.cache_clear()
    configs.device_table.cache_clear()


@pytest.fixture
def fake_gpu(monkeypatch, tmp_path):
    """Tables read from ``tmp_path`` for a GPU named "Fake GPU" of compute capability 1.0 (no
    sibling tables), with the lookup's caches empty before and after; yields ``tmp_path``."""
    monkeypatch.setattr(configs, "CONFIG_DIR", tmp_path)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "Fake GPU")
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (1, 0))
    clear_table_caches()
    yield tmp_path
    clear_table_caches()


def test_lookup_takes_the_entry_entry_tokens_picks(fake_gpu):
    one = GemmConfig(16, 64, 128, 8, 4, 3)
    small = GemmConfig(16, 64, 128, 1, 4, 4)
    large = GemmConfig(128, 256, 64, 8, 8, 3)
    write_table(fake_gpu, {1: one, 16: small, 4096: large}, torch.float16, "Fake GPU")
    cuda = torch.device("cuda")
    # top-2 over 4 experts: half a row per token and expert; 0.8 of BLOCK_M 16 is 12.8
    cases = ((1, one), (4, one), (5, one), (16, small), (25, small), (26, large),
             (2000, large), (99999, large))  # fmt: skip
    for tokens, want in cases:
        got = configs.get_config(tokens, 2, 4, 64, torch.float16, cuda, interpreter=False)
        assert got == want, f"M={tokens}: {got}"
    # No table for this N: the heuristic.
    got = configs.get_config(64, 2, 4, 128, torch.float16, cuda, interpreter=False)
    assert got == default_config(64, 2, 4, interpreter=False)
    # A CPU tensor or the interpreter never reads a table.
    cpu = torch.device("cpu")
    got = configs.get_config(16, 2, 4, 64, torch.float16, cpu, interpreter=False)
    assert got == default_config(16, 2, 4, interpreter=False)


def test_a_device_without_tables_uses_its_architectures(monkeypatch, fake_gpu):
    tuned = GemmConfig(64, 128, 64, 8, 4, 3, B_TMA=True)
    write_table(fake_gpu, {256: tuned}, torch.bfloat16, "Tuned GPU")
    monkeypatch.setattr(configs, "TUNED_DEVICES", {(9, 0): "Tuned GPU"})
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "Sibling GPU")
    cuda = torch.device("cuda")
    for capability, want in (((9, 0), tuned), ((8, 0), default_config(256, 2, 4, False))):
        monkeypatch.setattr(torch.cuda, "get_device_capability", lambda d=None, c=capability: c)
        configs.device_table.cache_clear()  # resolved once per device otherwise
        got = configs.get_config(256, 2, 4, 64, torch.bfloat16, cuda, interpreter=False)
        assert got == want, f"capability {capability}: {got}"


def test_table_name_of_chunk_entries_names_the_width():
    stored = table_name(8, 28672, torch.bfloat16, "NVIDIA H100 80GB HBM3")
    assert table_name(8, 28672, torch.bfloat16, "NVIDIA H100 80GB HBM3", 0) == stored
    chunked = table_name(8, 28672, torch.bfloat16, "NVIDIA H100 80GB HBM3", 64)
    assert chunked == stored.removesuffix(".json") + ",chunks=64.json"


def test_chunk_entries_replace_the_stored_ones_for_their_token_counts(fake_gpu):
    stored = {16: GemmConfig(16, 64, 128, 1, 4, 4), 256: GemmConfig(64, 128, 64, 8, 4, 3)}
    chunk64 = {256: GemmConfig(64, 64, 64, 1, 4, 5, B_TMA=True)}
    chunk128 = {256: GemmConfig(64, 256, 128, 1, 8, 3, B_TMA=True)}
    paths = {chunks: write_table(fake_gpu, entries, torch.bfloat16, "Fake GPU", chunks)
             for chunks, entries in ((0, stored), (64, chunk64), (128, chunk128))}  # fmt: skip
    cuda = torch.device("cuda")
    cases = ((0, 256, stored[256]), (64, 256, chunk64[256]), (128, 256, chunk128[256]),
             (64, 16, stored[16]), (128, 16, stored[16]))  # fmt: skip
    for chunks, tokens, want in cases:
        got = configs.get_config(tokens, 2, 4, 64, torch.bfloat16, cuda, False, chunks)
        assert got == want, f"chunks={chunks}, M={tokens}: {got}"
    # A width with no table of its own: the stored entries.
    paths[128].unlink()
    clear_table_caches()
    got = configs.get_config(256, 2, 4, 64, torch.bfloat16, cuda, False, 128)
    assert got == stored[256]


def test_chunk_entries_alone_make_a_table(fake_gpu):
    only = GemmConfig(64, 64, 64, 1, 4, 5, B_TMA=True)
    write_table(fake_gpu, {256: only}, torch.bfloat16, "Fake GPU", 64)
    cuda = torch.device("cuda")
    assert configs.get_config(16, 2, 4, 64, torch.bfloat16, cuda, False, 64) == only
    got = configs.get_config(16, 2, 4, 64, torch.bfloat16, cuda, False, 0)
    assert got == default_config(16, 2, 4, interpreter=False)
