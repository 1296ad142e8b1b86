"""The aligned-order copy of the hidden states that ``SORTED_ROWS`` entries read through TMA."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from moekit.align import moe_align_block_size
from moekit.experts._triton_impl.gather_rows import gather_sorted_rows
from moekit.experts._triton_impl.tile_source import TileSource


@pytest.mark.parametrize("seed", [3, 41])
@pytest.mark.parametrize("num_tokens, top_k, num_experts, hidden", [(7, 2, 4, 48), (33, 3, 5, 520)])
def test_rows_follow_the_aligned_order(seed, num_tokens, top_k, num_experts, hidden):
    rng = np.random.default_rng(seed)
    ids = np.stack([rng.permutation(num_experts)[:top_k] for _ in range(num_tokens)])
    ids[0, 0] = -1  # a dropped slot never reaches the copy
    hidden_states = torch.from_numpy(rng.standard_normal((num_tokens, hidden), dtype=np.float32))
    tiles = TileSource(*moe_align_block_size(torch.from_numpy(ids).int(), 16, num_experts,
                                             ignore_invalid_experts=True, backend="triton"))  # fmt: skip
    assert tiles.sorted_token_ids is not None and tiles.num_tokens_post_padded is not None
    out = torch.full((tiles.sorted_token_ids.shape[0], hidden), float("nan"))
    gather_sorted_rows(hidden_states, tiles, top_k, out=out)

    live = int(tiles.num_tokens_post_padded.item())
    slots = tiles.sorted_token_ids[:live].long()
    real = slots < num_tokens * top_k
    want = torch.zeros(live, hidden)
    want[real] = hidden_states[slots[real] // top_k]
    assert torch.equal(out[:live], want), f"seed {seed}"


def test_one_tokens_ids_have_no_aligned_order():
    tiles = TileSource(topk_ids=torch.zeros(2, dtype=torch.int32))
    with pytest.raises(ValueError, match="tiles"):
        gather_sorted_rows(torch.zeros(1, 16), tiles, 2)


def test_out_of_the_wrong_shape_is_refused():
    ids = torch.tensor([[0, 1], [1, 2]], dtype=torch.int32)
    tiles = TileSource(*moe_align_block_size(ids, 16, 3, backend="triton"))
    with pytest.raises(ValueError, match="out"):
        gather_sorted_rows(torch.zeros(2, 16), tiles, 2, out=torch.zeros(3, 16))
