"""Every op refuses bad input with a ValueError/TypeError that names the argument."""

import pytest
import torch

import moekit.align as align

IDS = torch.zeros(4, 2, dtype=torch.int32)


@pytest.mark.parametrize(
    ("kwargs", "error", "name"),
    [
        (dict(topk_ids=torch.zeros(4, dtype=torch.int32)), ValueError, "topk_ids"),
        (dict(topk_ids=torch.zeros(4, 2)), TypeError, "topk_ids"),
        (dict(topk_ids=[[0, 1]]), TypeError, "topk_ids"),
        (dict(block_size=0), ValueError, "block_size"),
        (dict(block_size=2.0), TypeError, "block_size"),
        (dict(num_experts=0), ValueError, "num_experts"),
        (dict(expert_map=torch.zeros(3, dtype=torch.int32)), ValueError, "expert_map"),
        (dict(expert_map=torch.zeros(4, dtype=torch.int64)), TypeError, "expert_map"),
        (dict(expert_map=torch.tensor([0, 4, -1, 1], dtype=torch.int32)), ValueError, "expert_map"),
        (dict(expert_map=torch.tensor([0, 0, -1, 1], dtype=torch.int32)), ValueError, "expert_map"),
        (dict(backend="cuda"), ValueError, "backend"),
        (dict(programmatic_launch=1), TypeError, "programmatic_launch"),
    ],
)
def test_moe_align_block_size_refuses(kwargs, error, name):
    call = dict(topk_ids=IDS, block_size=4, num_experts=4) | kwargs
    with pytest.raises(error, match=name):
        align.moe_align_block_size(**call)


@pytest.mark.parametrize(
    ("counts", "error", "match"),
    [
        (torch.tensor([1, 9], dtype=torch.int32), ValueError, "expert_num_tokens"),
        (torch.tensor([-1, 2], dtype=torch.int32), ValueError, "expert_num_tokens"),
        (torch.tensor([1.0, 2.0]), TypeError, "expert_num_tokens"),
        (torch.zeros(2, 2, dtype=torch.int32), ValueError, "expert_num_tokens"),
    ],
)
def test_batched_refuses(counts, error, match):
    with pytest.raises(error, match=match):
        align.batched_moe_align_block_size(8, 4, counts)


def test_batched_refuses_bad_sizes():
    with pytest.raises(ValueError, match="max_tokens_per_batch"):
        align.batched_moe_align_block_size(0, 4, torch.zeros(2, dtype=torch.int32))


def test_moe_sum_refuses():
    x = torch.zeros(3, 2, 5)
    with pytest.raises(ValueError, match="output"):
        align.moe_sum(x, torch.zeros(3, 4))
    with pytest.raises(ValueError, match="output"):
        align.moe_sum(x, torch.zeros(5, 3).t())
    with pytest.raises(ValueError, match="input"):
        align.moe_sum(torch.zeros(3, 5), torch.zeros(3, 5))
    with pytest.raises(TypeError, match="input"):
        align.moe_sum(x.int(), torch.zeros(3, 5))
    with pytest.raises(ValueError, match="topk_ids"):
        align.moe_sum(x, torch.zeros(3, 5), topk_ids=torch.zeros(3, 3, dtype=torch.int32))
    with pytest.raises(ValueError, match="expert_map"):
        align.moe_sum(x, torch.zeros(3, 5), expert_map=torch.zeros(4, dtype=torch.int32))
    with pytest.raises(TypeError, match="programmatic_launch"):
        align.moe_sum(x, torch.zeros(3, 5), programmatic_launch="yes")


def test_count_and_permute_refuse():
    with pytest.raises(ValueError, match="num_local_experts"):
        align.count_expert_num_tokens(IDS, 0)
    with pytest.raises(ValueError, match="hidden_states"):
        align.moe_permute(torch.zeros(3, 8), IDS, 4)
    with pytest.raises(ValueError, match="num_local_experts"):
        align.moe_permute(torch.zeros(4, 8), IDS, 4, num_local_experts=2)
    emap = torch.tensor([0, 1, 2, -1], dtype=torch.int32)
    with pytest.raises(ValueError, match="num_local_experts"):
        align.moe_permute(torch.zeros(4, 8), IDS, 4, emap, num_local_experts=2)
    with pytest.raises(ValueError, match="permuted"):
        align.moe_unpermute(
            torch.zeros(7, 8), torch.zeros(4, 2), torch.zeros(8, dtype=torch.int32),
            torch.zeros(3, dtype=torch.int64),
        )  # fmt: skip


def test_validate_expert_map():
    align.validate_expert_map(torch.tensor([1, -1, 0], dtype=torch.int32), 3)
    with pytest.raises(ValueError, match="expert_map"):
        align.validate_expert_map(torch.tensor([1, 1, 0], dtype=torch.int32), 3)
