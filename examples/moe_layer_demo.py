"""moekit demo: a DeepSeek-style MoE layer serves a skewed stream, then EPLB rebalances it.

The layer: 64 routed experts, grouped top-6 (8 groups, 4 kept) on sigmoid scores with a
correction bias, routed scale 2.5, one shared expert, 8 redundant expert slots for EPLB,
planned for 8 simulated ranks. Small dimensions on a CPU, DeepSeek-V3's (hidden 7168,
intermediate 2048, bf16) on a GPU.

What it does:

1. Loads the expert weights from a checkpoint in the usual naming.
2. Checks one batch against the NumPy reference.
3. Serves a stream of batches routed by a Zipf simulator, printing throughput per step and
   recording the load per expert.
4. Rebalances the load for 8 ranks with the default and the ILP policies, printing the
   balancedness before and after each.
5. Moves the weights inside the layer, checks that the outputs are unchanged, and serves again.
6. Writes a PNG of the per-rank load before and after.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from moekit.eplb import DefaultEplbPolicy, IlpEplbPolicy, aggregate_balancedness, rank_load
from moekit.experts import FusedMoE, MoERunner, SharedExpertsMLP
from moekit.reference import experts as ref_experts
from moekit.reference import routing as ref_routing
from moekit.routing import RoutingSimulatorRouter, ZipfRouting

NUM_EXPERTS, TOP_K, GROUPS, TOPK_GROUP, SCALE = 64, 6, 8, 4, 2.5
REDUNDANT, RANKS = 8, 8
PREFIX = "model.layers.3.mlp"
DIMS = {"cpu": (256, 128, 128), "cuda": (7168, 2048, 2048)}  # hidden, routed I, shared I


def checkpoint_tensors(hidden: int, inter: int, shared_inter: int, seed: int,
                       device: str) -> dict[str, torch.Tensor]:  # fmt: skip
    """Random weights under the names a DeepSeek-style checkpoint uses, scaled like a trained
    layer's (outputs of order 1)."""
    generator = torch.Generator(device=device).manual_seed(seed)

    def tensor(rows: int, cols: int) -> torch.Tensor:
        return torch.randn(rows, cols, generator=generator, device=device) / cols**0.5

    tensors = {}
    for expert in range(NUM_EXPERTS):
        base = f"{PREFIX}.experts.{expert}"
        tensors[f"{base}.gate_proj.weight"] = tensor(inter, hidden)
        tensors[f"{base}.up_proj.weight"] = tensor(inter, hidden)
        tensors[f"{base}.down_proj.weight"] = tensor(hidden, inter)
    for name, rows, cols in (("gate", shared_inter, hidden), ("up", shared_inter, hidden),
                             ("down", hidden, shared_inter)):  # fmt: skip
        tensors[f"{PREFIX}.shared_experts.{name}_proj.weight"] = tensor(rows, cols)
    bias = torch.rand(NUM_EXPERTS, generator=generator, device=device) * 0.1
    tensors[f"{PREFIX}.gate.e_score_correction_bias"] = bias
    return tensors


def build_layer(hidden: int, inter: int, shared_inter: int, dtype: torch.dtype,
                device: str, steps: int) -> MoERunner:  # fmt: skip
    shared = SharedExpertsMLP(hidden, shared_inter, dtype=dtype, device=device)
    return FusedMoE(
        NUM_EXPERTS, TOP_K, hidden, inter, params_dtype=dtype, use_grouped_topk=True,
        num_expert_group=GROUPS, topk_group=TOPK_GROUP, scoring_func="sigmoid",
        routed_scaling_factor=SCALE, e_score_correction_bias=torch.zeros(NUM_EXPERTS),
        shared_experts=shared, enable_eplb=True, num_redundant_experts=REDUNDANT,
        eplb_num_ranks=RANKS, eplb_window_size=steps, eplb_step_interval=10**9, device=device,
    )  # fmt: skip


def load_weights(layer: MoERunner, tensors: dict[str, torch.Tensor], device: str) -> str:
    """From a safetensors file on a CPU; straight from memory on a GPU (a 5 GB file would
    only time the disk)."""
    if device == "cpu":
        from safetensors.torch import save_file

        with tempfile.TemporaryDirectory() as folder:
            path = Path(folder) / "model.safetensors"
            save_file(tensors, str(path))
            loaded = layer.load_checkpoint(path, prefix=PREFIX)
        return f"{len(loaded)} tensors from a safetensors checkpoint"
    pairs = ((name[len(PREFIX) + 1 :], tensor) for name, tensor in tensors.items())
    return f"{len(layer.load_weights(pairs))} tensors from memory"


def reference_output(tensors: dict[str, torch.Tensor], x: torch.Tensor,
                     logits: torch.Tensor) -> np.ndarray:  # fmt: skip
    """The whole layer in NumPy float64, from the checkpoint's tensors, rounded to x's dtype."""

    def array(name: str) -> np.ndarray:
        return tensors[f"{PREFIX}.{name}"].to(x.dtype).double().cpu().numpy()

    bias = tensors[f"{PREFIX}.gate.e_score_correction_bias"].double().cpu().numpy()
    x_np = x.double().cpu().numpy()
    weights, ids = ref_routing.grouped_topk(logits.double().cpu().numpy(), TOP_K, True, GROUPS,
                                            TOPK_GROUP, "sigmoid", SCALE, bias)  # fmt: skip
    used = np.unique(ids)  # only the routed experts in float64: real dims would need 15 GB
    compact = np.full(NUM_EXPERTS, -1, dtype=np.int64)
    compact[used] = np.arange(len(used))
    gate_up = np.stack([np.concatenate([array(f"experts.{e}.gate_proj.weight"),
                                        array(f"experts.{e}.up_proj.weight")]) for e in used])  # fmt: skip
    down = np.stack([array(f"experts.{e}.down_proj.weight") for e in used])
    out = ref_experts.fused_experts(x_np, gate_up, down, weights, ids, "silu", expert_map=compact,
                                    global_num_experts=NUM_EXPERTS)  # fmt: skip
    gate = x_np @ array("shared_experts.gate_proj.weight").T
    up = x_np @ array("shared_experts.up_proj.weight").T
    shared = (gate / (1 + np.exp(-gate)) * up) @ array("shared_experts.down_proj.weight").T
    return out + shared


def serve(layer: MoERunner, steps: int, tokens: int, hidden: int, dtype: torch.dtype,
          device: str, seed: int, label: str) -> list[float]:  # fmt: skip
    """Run the stream; return tokens per second of each step. The step time includes the
    routing; the simulator samples on the CPU, so its share is printed beside it."""
    generator = torch.Generator(device=device).manual_seed(seed)
    rates = []
    routing_seconds = [0.0]
    select_experts = layer.router.select_experts

    def timed_select_experts(hidden_states, router_logits):  # type: ignore[no-untyped-def]
        start = time.perf_counter()
        result = select_experts(hidden_states, router_logits)
        if device == "cuda":
            torch.cuda.synchronize()
        routing_seconds[0] = time.perf_counter() - start
        return result

    layer.router.select_experts = timed_select_experts
    bar = tqdm(range(steps), desc=label, unit="step", leave=False)
    for step in bar:
        x = (torch.randn(tokens, hidden, generator=generator, device=device) / 4).to(dtype)
        logits = torch.randn(tokens, NUM_EXPERTS, generator=generator, device=device)
        if device == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        layer(x, logits)
        if device == "cuda":
            torch.cuda.synchronize()
        seconds = time.perf_counter() - start
        rates.append(tokens / seconds)
        layer.eplb_step()
        bar.write(f"  {label} step {step + 1:3d}: {tokens} tokens in {seconds * 1e3:7.2f} ms = "
                  f"{rates[-1]:10,.0f} tokens/s (simulated routing {routing_seconds[0] * 1e3:.2f}"
                  " ms of it)")  # fmt: skip
    del layer.router.select_experts
    return rates


def plot(loads: dict[str, np.ndarray], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4))
    width = 0.8 / len(loads)
    for index, (label, load) in enumerate(loads.items()):
        share = load / load.mean()
        ranks = np.arange(len(load)) + (index - (len(loads) - 1) / 2) * width
        ax.bar(ranks, share, width, label=f"{label} (balancedness {load.mean() / load.max():.3f})")
    ax.axhline(1.0, color="black", linewidth=0.8)
    ax.set_xlabel("rank")
    ax.set_ylabel("load / mean rank load")
    ax.set_title(f"EPLB, {NUM_EXPERTS} experts + {REDUNDANT} redundant on {RANKS} ranks, "
                 "Zipf-routed stream", fontsize=10)  # fmt: skip
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    parser.add_argument("--steps", type=int, default=24)
    parser.add_argument("--tokens", type=int, default=None, help="per batch (CPU 512, GPU 4096)")
    parser.add_argument("--skew", type=float, default=1.2, help="Zipf exponent of the stream")
    parser.add_argument("--ilp-seconds", type=float, default=2.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--plot", type=Path, default=Path("demo-out/eplb_rank_load.png"))
    args = parser.parse_args()
    device = ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" \
        else args.device  # fmt: skip
    hidden, inter, shared_inter = DIMS[device]
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    tokens = args.tokens or (4096 if device == "cuda" else 512)
    torch.manual_seed(args.seed)

    print(f"moekit demo on {device}: DeepSeek-style layer, {NUM_EXPERTS} experts top-{TOP_K} "
          f"(grouped {GROUPS}/{TOPK_GROUP}, sigmoid + bias, scale {SCALE}), hidden {hidden}, "
          f"intermediate {inter}, shared expert {shared_inter}, {dtype}")  # fmt: skip
    layer = build_layer(hidden, inter, shared_inter, dtype, device, args.steps)
    tensors = checkpoint_tensors(hidden, inter, shared_inter, args.seed, device)
    print(f"loaded {load_weights(layer, tensors, device)}")

    # 1. One batch through the model's own router, against the NumPy reference.
    check_tokens = 4 if device == "cuda" else 64
    x = (torch.randn(check_tokens, hidden, device=device) / 4).to(dtype)
    logits = torch.randn(check_tokens, NUM_EXPERTS, device=device)
    expected = reference_output(tensors, x, logits)
    got = layer(x, logits).double().cpu().numpy()
    error = float(np.abs(got - expected).max() / np.abs(expected).max())
    tolerance = 2e-2 if dtype == torch.bfloat16 else 1e-4
    verdict = "OK" if error <= tolerance else "MISMATCH"
    print(f"reference check ({check_tokens} tokens): max error {error:.1e} of the output scale "
          f"(tolerance {tolerance:.0e}): {verdict}")  # fmt: skip
    if verdict != "OK":
        raise SystemExit(1)
    layer.eplb_state.expert_load_pass.zero_()  # the check is not part of the stream's load

    # 2. The stream, routed by a skewed simulator in place of the router.
    layer.router = RoutingSimulatorRouter(ZipfRouting(args.skew, seed=args.seed), TOP_K,
                                          NUM_EXPERTS, wrapped=layer.router)  # fmt: skip
    rates = serve(layer, args.steps, tokens, hidden, dtype, device, args.seed + 1, "serve")
    print(f"served {args.steps} x {tokens} tokens: median {statistics.median(rates):,.0f} "
          f"tokens/s (first step {rates[0]:,.0f}, includes warm-up)")  # fmt: skip

    # 3. What the stream did to the experts and the ranks, and what each policy makes of it.
    state = layer.eplb_state
    load = state.logical_load().numpy().astype(np.float64)
    top = np.argsort(-load[0])[:4]
    shares = ", ".join(f"expert {e}: {load[0, e] / load.sum():.1%}" for e in top)
    print(f"recorded load: {int(load.sum())} routed slots; busiest {shares}")
    current = state.physical_to_logical_map.cpu().numpy()
    loads = {"before": rank_load(load, current, RANKS)[0]}
    layout = (state.num_replicas, state.num_groups, state.num_nodes, RANKS)
    plans = {"default": (DefaultEplbPolicy, {}),
             "ilp": (IlpEplbPolicy, {"time_limit": args.ilp_seconds})}  # fmt: skip
    print(f"balancedness (mean / max rank load) on {RANKS} ranks, before: "
          f"{aggregate_balancedness(loads['before'][None]):.3f}")  # fmt: skip
    for name, (policy, options) in plans.items():
        start = time.perf_counter()
        p2l, _, _ = policy.rebalance_experts(load, *layout, current, **options)
        seconds = time.perf_counter() - start
        loads[name] = rank_load(load, np.asarray(p2l), RANKS)[0]
        print(f"  {name:8s} policy: {aggregate_balancedness(loads['before'][None]):.3f} -> "
              f"{aggregate_balancedness(loads[name][None]):.3f} ({seconds:.2f} s)")  # fmt: skip

    # 4. Rearrange the layer with the better plan: weights move, outputs must not change.
    best = max(plans, key=lambda name: aggregate_balancedness(loads[name][None]))
    state.policy, state.policy_options = plans[best]
    x = (torch.randn(32, hidden, device=device) / 4).to(dtype)
    logits = torch.randn(32, NUM_EXPERTS, device=device)
    layer.router = layer.router.wrapped  # the model's router, so both calls route alike
    before = layer(x, logits)
    rearrangement = layer.rearrange()
    after = layer(x, logits)
    difference = float((after.float() - before.float()).abs().max())
    print(f"rearranged with the {best} policy: {len(rearrangement.moves)} expert slots moved; "
          f"same batch before/after: max difference {difference:.1e}")  # fmt: skip
    if difference > (1e-2 if dtype == torch.bfloat16 else 1e-5):
        raise SystemExit("outputs changed across the rearrangement")

    # 5. Serve again on the new placement and measure the ranks' load it actually got.
    layer.router = RoutingSimulatorRouter(ZipfRouting(args.skew, seed=args.seed), TOP_K,
                                          NUM_EXPERTS, wrapped=layer.router)  # fmt: skip
    state.expert_load_window.zero_()
    rates = serve(layer, max(4, args.steps // 4), tokens, hidden, dtype, device, args.seed + 2,
                  "after")  # fmt: skip
    physical = state.expert_load_window.sum(dim=0).cpu().numpy()[0].astype(np.float64)
    measured = physical.reshape(RANKS, -1).sum(axis=1)
    loads[f"{best}, measured after"] = measured
    print(f"after the move: measured rank balancedness {measured.mean() / measured.max():.3f}, "
          f"median {statistics.median(rates):,.0f} tokens/s (one process runs every rank's "
          "slots, so the placement changes which slots work, not how much work there is)")  # fmt: skip
    plot(loads, args.plot)
    print(f"per-rank load plot: {args.plot}")


if __name__ == "__main__":
    main()
