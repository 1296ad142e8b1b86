"""Expert parallelism on GPUs over NCCL: correctness in bf16 and dispatch + experts + combine
against one GPU running the whole layer.

    NCCL_NVLS_ENABLE=0 torchrun --standalone --nproc_per_node 2 benchmarks/experts/bench_ep.py \\
        --out ep.json

Each rank builds the whole layer (the one-GPU baseline, every expert) and the expert-parallel
layer (its share of the experts, ``process_group=WORLD``), with the same weights.

Correctness: each rank's tokens through the EP layer are compared with the same tokens through
the whole layer, relative to the output scale.

Speed: with M tokens per rank, the EP step (each GPU its M tokens, experts split across the
GPUs) is timed against one GPU running the whole layer on M tokens and on W·M tokens (the same
total work). Times are CUDA-event medians after warm-up, eager: the dispatch reads the split
sizes on the host, so the step cannot be captured in a CUDA graph.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
from pathlib import Path

import torch
import torch.distributed as dist

from moekit.experts import FusedMoE, SharedExpertsMLP

SHAPE = dict(num_experts=256, top_k=8, hidden=7168, inter=2048, groups=8, topk_group=4)


def build(shared_weights: dict, process_group=None, **options):  # type: ignore[no-untyped-def]
    s = SHAPE
    shared = SharedExpertsMLP(s["hidden"], s["inter"], dtype=torch.bfloat16, device="cuda")
    layer = FusedMoE(
        s["num_experts"], s["top_k"], s["hidden"], s["inter"], params_dtype=torch.bfloat16,
        use_grouped_topk=True, num_expert_group=s["groups"], topk_group=s["topk_group"],
        scoring_func="sigmoid", e_score_correction_bias=torch.zeros(s["num_experts"]),
        routed_scaling_factor=2.5, shared_experts=shared, device="cuda",
        process_group=process_group, **options,
    )  # fmt: skip
    slots = layer.local_logical_experts().cuda()
    with torch.no_grad():
        layer.w13_weight.copy_(shared_weights["w13"][slots])
        layer.w2_weight.copy_(shared_weights["w2"][slots])
        for name, param in layer.shared_experts.named_parameters():
            param.copy_(shared_weights[name])
    return layer


def weights() -> dict:
    s = SHAPE
    generator = torch.Generator(device="cuda").manual_seed(0)

    def randn(*shape: int) -> torch.Tensor:
        return (torch.randn(*shape, generator=generator, device="cuda") / shape[-1] ** 0.5).to(
            torch.bfloat16
        )

    return {
        "w13": randn(s["num_experts"], 2 * s["inter"], s["hidden"]),
        "w2": randn(s["num_experts"], s["hidden"], s["inter"]),
        "gate_proj.weight": randn(s["inter"], s["hidden"]),
        "up_proj.weight": randn(s["inter"], s["hidden"]),
        "down_proj.weight": randn(s["hidden"], s["inter"]),
    }


def inputs(tokens: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator(device="cuda").manual_seed(seed)
    x = (torch.randn(tokens, SHAPE["hidden"], generator=generator, device="cuda") / 4).to(
        torch.bfloat16
    )
    return x, torch.randn(tokens, SHAPE["num_experts"], generator=generator, device="cuda")


def median_ms(fn, repeats: int = 20, collective: bool = False) -> float:  # type: ignore[no-untyped-def]
    for _ in range(3):
        fn()
    times = []
    for _ in range(repeats):
        if collective:
            dist.barrier()
        torch.cuda.synchronize()
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)


def extra_checks(shared: dict, whole, rank: int, world: int) -> dict:  # type: ignore[no-untyped-def]
    """The batched all-to-all format against the whole layer, and an EPLB rearrangement across
    the GPUs on skewed routing: outputs before and after, weights that crossed GPUs."""
    results: dict = {}
    with torch.no_grad():
        batched = build(shared, dist.group.WORLD, all2all_format="batched",
                        max_num_tokens_per_rank=256)  # fmt: skip
        x, logits = inputs(256, 300 + rank)
        expected = whole(x, logits).float()
        error = float((batched(x, logits).float() - expected).abs().max() / expected.abs().max())
        del batched
        eplb = build(shared, dist.group.WORLD, enable_eplb=True, num_redundant_experts=32,
                     eplb_step_interval=10**6)  # fmt: skip
        x, logits = inputs(512, 400 + rank)
        logits[:, :32] += 2.0  # rank 0's first experts are hot
        before = eplb(x, logits)
        eplb.eplb_step()
        rearrangement = eplb.rearrange()
        after = eplb(x, logits)
        per_rank = eplb.num_local_experts
        crossing = sum(m.source_slot // per_rank != m.target_slot // per_rank
                       for m in rearrangement.moves)  # fmt: skip
        row = dict(batched_rel_error=error, eplb_moves=len(rearrangement.moves),
                   eplb_moves_across_gpus=int(crossing),
                   eplb_balancedness=[rearrangement.balancedness_before,
                                      rearrangement.balancedness_after],
                   eplb_max_difference=float((after.float() - before.float()).abs().max()))  # fmt: skip
    gathered: list[dict | None] = [None] * world
    dist.all_gather_object(gathered, row)
    results["ranks"] = gathered
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--tokens", nargs="+", type=int, default=[1, 16, 128, 1024, 4096])
    args = parser.parse_args()
    dist.init_process_group("nccl")
    rank, world = dist.get_rank(), dist.get_world_size()
    torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", rank)))
    shared = weights()
    whole = build(shared)
    ep = build(shared, process_group=dist.group.WORLD)
    rows = []
    with torch.no_grad():
        for tokens in args.tokens:
            x, logits = inputs(tokens, 100 + rank)
            expected = whole(x, logits).float()
            got = ep(x, logits).float()
            error = float((got - expected).abs().max() / expected.abs().max().clamp_min(1e-6))
            ep_ms = median_ms(lambda x=x, logits=logits: ep(x, logits), collective=True)
            one_ms = median_ms(lambda x=x, logits=logits: whole(x, logits))
            big_x, big_logits = inputs(tokens * world, 200 + rank)
            one_all_ms = median_ms(lambda: whole(big_x, big_logits))
            row = dict(tokens_per_rank=tokens, rel_error=error, ep_ms=ep_ms,
                       one_gpu_same_tokens_ms=one_ms, one_gpu_all_tokens_ms=one_all_ms)  # fmt: skip
            gathered: list[dict | None] = [None] * world
            dist.all_gather_object(gathered, row)
            if rank == 0:
                worst = max(r["rel_error"] for r in gathered)
                ep_max = max(r["ep_ms"] for r in gathered)
                print(f"M={tokens:5d}/rank: rel error {worst:.1e}  EP step {ep_max:8.3f} ms  "
                      f"one GPU, M tokens {one_ms:8.3f} ms, {world}M tokens {one_all_ms:8.3f} ms",
                      flush=True)  # fmt: skip
                rows.append(dict(tokens_per_rank=tokens, ranks=gathered))
    checks = extra_checks(shared, whole, rank, world)
    if rank == 0:
        print(json.dumps(checks), flush=True)
        environment = dict(device=torch.cuda.get_device_name(), gpus=world,
                           torch=torch.__version__, nccl=".".join(map(str, torch.cuda.nccl.version())),
                           commit=os.environ.get("MOEKIT_COMMIT", "unknown"),
                           nvls=os.environ.get("NCCL_NVLS_ENABLE"))  # fmt: skip
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(dict(environment=environment, shape=SHAPE, rows=rows,
                                            checks=checks), indent=1) + "\n")  # fmt: skip
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
