"""The default launch rule at the sizes the interpreter is too slow for, on a real GPU: each side
of the sorted chunks' thresholds (past 8192 slots, and at 8192 with 512 histogram bins or more;
chunks of 256 up to 16384 slots and up to 32768 with at most 256 bins, 512 beyond) matches the
torch path, with every option and programmatic launch. Run on a CUDA machine with the
interpreter off:
``TRITON_INTERPRET=0 pytest packages/align/tests/test_gpu_layout.py``.
"""

import os

import numpy as np
import pytest
import torch
from test_layout_configs import _PoisonedTorch

import moekit.align._triton_impl.block_align as launcher
from moekit.align import moe_align_block_size, moe_permute
from moekit.align._triton_impl.launch_config import layout_config

pytestmark = pytest.mark.skipif(
    not torch.cuda.is_available() or os.environ.get("TRITON_INTERPRET") == "1",
    reason="needs a CUDA GPU with the Triton interpreter off (TRITON_INTERPRET=0)",
)

# (slots, experts, top_k): each side of each threshold of the rule, and the table's sizes
CASES = [
    (4096, 256, 8), (8191, 256, 1), (8192, 128, 8), (8192, 254, 8), (8192, 255, 8),
    (16384, 300, 8), (16386, 300, 2), (16385, 200, 1), (32768, 254, 8), (32770, 254, 2),
    (65536, 64, 8), (131072, 128, 8), (131072, 256, 8), (40000, 1022, 4),
]  # fmt: skip
# (block_size, expert map: none / local layout / global layout, pad_sorted_ids, programmatic)
OPTIONS = [(16, 0, False, True), (64, 1, True, False), (16, 2, False, True)]


@pytest.fixture(autouse=True)
def poisoned_outputs(monkeypatch):
    monkeypatch.setattr(launcher, "torch", _PoisonedTorch())


@pytest.mark.parametrize(("numel", "num_experts", "top_k"), CASES)
def test_default_rule_matches_torch_path_on_gpu(numel, num_experts, top_k):
    seed = numel * 1009 + num_experts
    rng = np.random.default_rng(seed)
    device = torch.device("cuda")
    ids = torch.from_numpy(rng.integers(-1, num_experts + 1, (numel // top_k, top_k)))
    ids = ids.to(device)
    emap = torch.full((num_experts,), -1, dtype=torch.int32)
    local = torch.from_numpy(rng.permutation(num_experts)[: num_experts // 2 + 1])
    emap[local] = torch.arange(local.numel(), dtype=torch.int32)
    emap = emap.to(device)
    maps = [(None, False), (emap, True), (emap, False)]
    config = layout_config(ids.numel(), num_experts)
    for block, which_map, pad, programmatic in OPTIONS:
        expert_map, ignore = maps[which_map]
        args = (ids, block, num_experts, expert_map, pad, ignore, True)
        want = moe_align_block_size(*args, backend="torch")
        got = moe_align_block_size(*args, backend="triton", programmatic_launch=programmatic)
        for name, w, g in zip(("sorted_token_ids", "expert_ids", "post_pad", "scatter"), want,
                              got):  # fmt: skip
            assert torch.equal(w, g), (
                f"{name}: seed={seed} numel={ids.numel()} E={num_experts} {config} "
                f"block={block} map={which_map} pad={pad} programmatic={programmatic}"
            )
    valid = ids.clamp(0, num_experts - 1)
    hidden = torch.randn(valid.shape[0], 64, device=device, dtype=torch.bfloat16)
    permuted = [
        moe_permute(hidden, valid, num_experts, emap, local.numel(), backend=backend)
        for backend in ("torch", "triton")
    ]
    for w, g in zip(*permuted):
        assert torch.equal(w, g), f"moe_permute: seed={seed} numel={ids.numel()} {config}"
