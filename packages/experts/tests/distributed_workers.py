"""Code each rank runs in the gloo tests (a module of its own so spawned processes import it)."""

from __future__ import annotations

import datetime
import importlib.util
import itertools
import os
import traceback

import torch
import torch.distributed as dist

from moekit.experts import FusedMoE, SharedExpertsMLP

HIDDEN, INTER = 32, 16


def build(num_experts: int, top_k: int, backend: str = "torch", **options):  # type: ignore[no-untyped-def]
    shared = SharedExpertsMLP(HIDDEN, 24, dtype=torch.float32)
    return FusedMoE(num_experts, top_k, HIDDEN, INTER, params_dtype=torch.float32,
                    shared_experts=shared, routed_scaling_factor=1.5, backend=backend,
                    **options)  # fmt: skip


def fill(layer, seed: int) -> None:  # type: ignore[no-untyped-def]
    """The same logical weights on every rank; each holds its own experts' slice."""
    generator = torch.Generator().manual_seed(seed)
    rows = layer.w13_weight.shape[1]
    w1 = torch.randn(layer.num_experts, rows, HIDDEN, generator=generator) / 10
    w2 = torch.randn(layer.num_experts, HIDDEN, INTER, generator=generator) / 10
    slots = layer.local_logical_experts()
    with torch.no_grad():
        layer.w13_weight.copy_(w1[slots])
        layer.w2_weight.copy_(w2[slots])
        for param in layer.shared_experts.parameters():
            param.copy_(torch.randn(param.shape, generator=generator) / 10)


def batches(world: int, num_experts: int, seed: int, scenario: str):  # type: ignore[no-untyped-def]
    """Every rank's tokens and logits (all ranks draw the same, each uses its own)."""
    generator = torch.Generator().manual_seed(seed)
    tokens = [5 + 3 * rank for rank in range(world)]
    if scenario == "rank_without_tokens":
        tokens[1] = 0
    xs = [torch.randn(t, HIDDEN, generator=generator) / 4 for t in tokens]
    logits = [torch.randn(t, num_experts, generator=generator) for t in tokens]
    if scenario == "skewed":
        for block in logits:
            block[:, 0] += 4.0
    if scenario == "empty_ranks":  # every slot goes to rank 0's experts: the others get nothing
        per_rank = num_experts // world
        for block in logits:
            block[:, per_rank:] -= 100.0
    return xs, logits


def run_scenarios(rank: int, world: int, store_path: str, result_dir: str) -> None:
    try:
        dist.init_process_group("gloo", init_method=f"file://{store_path}", rank=rank,
                                world_size=world, timeout=datetime.timedelta(seconds=60))  # fmt: skip
        num_experts, top_k = 8, 3
        whole = build(num_experts, top_k)
        fill(whole, 7)
        layer = build(num_experts, top_k, process_group=dist.group.WORLD)
        fill(layer, 7)
        assert layer.ep_size == world and layer.ep_rank == rank
        assert layer.num_local_experts == num_experts // world
        for scenario in ("random", "skewed", "empty_ranks", "rank_without_tokens"):
            xs, logits = batches(world, num_experts, 11, scenario)
            expected = whole(torch.cat(xs), torch.cat(logits))
            start = sum(x.shape[0] for x in xs[:rank])
            got = layer(xs[rank], logits[rank])
            mine = expected[start : start + xs[rank].shape[0]]
            torch.testing.assert_close(got, mine, rtol=1e-5, atol=1e-6,
                                       msg=lambda m, s=scenario: f"{s}, rank {rank}: {m}")  # fmt: skip
        backends = ["torch"] + (["triton"] if importlib.util.find_spec("triton") else [])
        for backend, scenario in itertools.product(backends, ("random", "skewed",
                                                              "rank_without_tokens")):  # fmt: skip
            batched = build(num_experts, top_k, process_group=dist.group.WORLD,
                            all2all_format="batched", max_num_tokens_per_rank=16,
                            backend=backend)  # fmt: skip
            fill(batched, 7)
            xs, logits = batches(world, num_experts, 13, scenario)
            expected = whole(torch.cat(xs), torch.cat(logits))
            start = sum(x.shape[0] for x in xs[:rank])
            got = batched(xs[rank], logits[rank])
            torch.testing.assert_close(got, expected[start : start + xs[rank].shape[0]],
                                       rtol=1e-5, atol=1e-6,
                                       msg=lambda m, s=scenario, b=backend:
                                       f"batched {s} ({b}), rank {rank}: {m}")  # fmt: skip
        check_eplb(whole, rank, world)
        check_async(layer, rank, world)
        check_config_mismatch(rank)
        check_group_divides(world)
        dist.destroy_process_group()
    except BaseException:
        with open(os.path.join(result_dir, f"rank{rank}.err"), "w") as handle:
            handle.write(traceback.format_exc())
        raise


def logical_w1(layer, seed: int) -> torch.Tensor:  # type: ignore[no-untyped-def]
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(layer.num_experts, layer.w13_weight.shape[1], HIDDEN,
                       generator=generator) / 10  # fmt: skip


def check_eplb(whole, rank: int, world: int) -> None:  # type: ignore[no-untyped-def]
    """Load summed over the ranks, one map on every rank, weights moved between ranks, outputs
    the same before and after (and equal to the single-process layer)."""
    layer = build(8, 3, process_group=dist.group.WORLD, enable_eplb=True,
                  num_redundant_experts=world, eplb_step_interval=3)  # fmt: skip
    fill(layer, 7)
    xs, logits = batches(world, 8, 21, "skewed")
    expected = whole(torch.cat(xs), torch.cat(logits))
    start = sum(x.shape[0] for x in xs[:rank])
    mine = expected[start : start + xs[rank].shape[0]]
    before = layer(xs[rank], logits[rank])
    torch.testing.assert_close(before, mine, rtol=1e-5, atol=1e-6)
    assert layer.eplb_step() is None
    layer(xs[rank], logits[rank])
    assert layer.eplb_step() is None
    layer(xs[rank], logits[rank])
    rearrangement = layer.eplb_step()  # the third step rearranges
    assert rearrangement is not None and rearrangement.moves, "nothing moved"
    maps: list[object] = [None] * world
    dist.all_gather_object(maps, layer.eplb_state.physical_to_logical_map.tolist())
    assert all(m == maps[0] for m in maps), "the ranks committed different maps"
    crossing = [m for m in rearrangement.moves
                if m.source_slot // layer.num_local_experts != m.target_slot // layer.num_local_experts]  # fmt: skip
    assert crossing, "no weight crossed ranks: the test would not see a broken exchange"
    slots = layer.local_logical_experts()
    assert torch.equal(layer.w13_weight, logical_w1(layer, 7)[slots]), f"rank {rank}: wrong weights"
    after = layer(xs[rank], logits[rank])
    torch.testing.assert_close(after, before, rtol=1e-5, atol=1e-6)


def check_async(layer, rank: int, world: int) -> None:  # type: ignore[no-untyped-def]
    """prepare_async's receiver gives what prepare gives; finalize_async fills the output."""
    pf = layer.prepare_finalize
    generator = torch.Generator().manual_seed(100 + rank)
    x = torch.randn(6, HIDDEN, generator=generator)
    ids = torch.stack([torch.randperm(8, generator=generator)[:3] for _ in range(6)]).int()
    weights = torch.rand(6, 3, generator=generator)
    sync = pf.prepare(x, weights, ids, 8, layer.expert_map, False, None)
    hook, receiver = pf.prepare_async(x, weights, ids, 8, layer.expert_map, False, None)
    hook()
    got = receiver()
    for a, b in zip(sync, got, strict=True):
        assert (a is None and b is None) or torch.equal(a, b)
    from moekit.experts import TopKWeightAndReduceContiguous

    fused = torch.randn(got[0].shape[0], 3, HIDDEN, generator=generator)
    out_sync = torch.full((6, HIDDEN), float("nan"))
    out_async = torch.full((6, HIDDEN), float("nan"))
    reduce = TopKWeightAndReduceContiguous()
    pf.finalize(out_sync, fused, got[4], got[3], False, reduce)
    pf.prepare(x, weights, ids, 8, layer.expert_map, False, None)
    hook, receiver = pf.finalize_async(out_async, fused, got[4], got[3], False, reduce)
    receiver()
    assert torch.equal(out_sync, out_async) and not torch.isnan(out_sync).any()


def check_group_divides(world: int) -> None:
    """Refused before any collective, so every rank raises on its own."""
    for options, what in ((dict(num_experts=2 * world + 1), "num_experts"),
                          (dict(num_experts=8, enable_eplb=True, num_redundant_experts=1),
                           "replicas")):  # fmt: skip
        try:
            FusedMoE(top_k=2, hidden_size=HIDDEN, intermediate_size=INTER,
                     process_group=dist.group.WORLD, **options)  # fmt: skip
        except ValueError as error:
            assert f"size {world} does not divide" in str(error) and what in str(error), error
        else:
            raise AssertionError(f"a group of {world} accepted {options}")


def check_config_mismatch(rank: int) -> None:
    try:
        FusedMoE(8, 2, HIDDEN + 16 * rank, INTER, params_dtype=torch.float32,
                 process_group=dist.group.WORLD)  # fmt: skip
    except ValueError as error:
        assert "disagree on the layer's configuration" in str(error), error
    else:
        raise AssertionError("ranks built with different hidden sizes were not refused")


def dead_peer(rank: int, world: int, store_path: str, result_dir: str) -> None:
    """Rank 1 leaves after construction; rank 0's forward must fail with a clear error."""
    dist.init_process_group("gloo", init_method=f"file://{store_path}", rank=rank,
                            world_size=world, timeout=datetime.timedelta(seconds=5))  # fmt: skip
    layer = build(4, 2, process_group=dist.group.WORLD)
    fill(layer, 3)
    if rank == 1:
        os._exit(0)
    try:
        layer(torch.randn(4, HIDDEN), torch.randn(4, 4))
    except RuntimeError as error:
        with open(os.path.join(result_dir, "dead_peer.txt"), "w") as handle:
            handle.write(str(error))
    os._exit(0)
