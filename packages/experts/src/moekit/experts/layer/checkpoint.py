"""Checkpoint names -> the layer's parameters: ``make_expert_params_mapping`` and the loader.

Checkpoints store one tensor per expert and projection in the usual naming
(``model.layers.N.mlp.experts.E.{gate_proj,up_proj,down_proj}.weight``); the layer stores them
stacked (``w13_weight [E_local, 2I, K]`` with gate rows first, ``w2_weight [E_local, K, I]``).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

import torch

from moekit.experts._checks import check_int

if TYPE_CHECKING:
    from moekit.experts.layer.runner import MoERunner


class ExpertParam(NamedTuple):
    """One row of :func:`make_expert_params_mapping`: the checkpoint tensor named
    ``weight_name + "weight"`` (or ``"bias"``) fills shard ``shard_id`` (``"w1"`` gate,
    ``"w3"`` up, ``"w2"`` down) of physical expert ``expert_id`` in the parameter
    ``param_name + "weight"`` (or ``"bias"``)."""

    param_name: str
    weight_name: str
    expert_id: int
    shard_id: str


def make_expert_params_mapping(ckpt_gate_proj_name: str = "gate_proj",
                               ckpt_down_proj_name: str = "down_proj",
                               ckpt_up_proj_name: str = "up_proj", num_experts: int = 0,
                               num_redundant_experts: int = 0) -> list[ExpertParam]:  # fmt: skip
    """Every (checkpoint name -> layer parameter) pair of a layer's routed experts.

    Physical expert ``p`` of ``num_experts + num_redundant_experts`` holds logical expert
    ``p % num_experts`` (the placement before any EPLB rearrangement), so a redundant slot loads
    a copy of its expert. Names are relative to the MoE block (``experts.3.gate_proj.``).

    Raises:
        TypeError: a count that is not an int.
        ValueError: ``num_experts < 1``, ``num_redundant_experts < 0`` or an empty name.
    """
    check_int(num_experts, "num_experts", 1)
    check_int(num_redundant_experts, "num_redundant_experts", 0)
    names = {"ckpt_gate_proj_name": ckpt_gate_proj_name, "ckpt_up_proj_name": ckpt_up_proj_name,
             "ckpt_down_proj_name": ckpt_down_proj_name}  # fmt: skip
    for argument, name in names.items():
        if not isinstance(name, str) or not name or "." in name:
            raise ValueError(f"{argument} must be a non-empty name without dots, got {name!r}")
    mapping = []
    for physical in range(num_experts + num_redundant_experts):
        logical = physical % num_experts
        for shard, projection in (("w1", ckpt_gate_proj_name), ("w3", ckpt_up_proj_name),
                                  ("w2", ckpt_down_proj_name)):  # fmt: skip
            param = "w2_" if shard == "w2" else "w13_"
            mapping.append(ExpertParam(param, f"experts.{logical}.{projection}.", physical, shard))
    return mapping


def _shard_view(runner: MoERunner, shard: str, kind: str, slot: int) -> torch.Tensor:
    """The slice of a parameter that one checkpoint tensor fills (a view, written in place)."""
    param = getattr(runner, ("w2_" if shard == "w2" else "w13_") + kind)[slot]
    if shard == "w2":
        return param
    inter = runner.intermediate_size
    if runner.interleaved_gate_up:  # swigluoai: gate rows 0, 2, 4, ...; up rows 1, 3, 5, ...
        return param[0::2] if shard == "w1" else param[1::2]
    return param[:inter] if shard == "w1" else param[inter:]


def expected_weights(runner: MoERunner) -> dict[str, tuple[int, ...]]:
    """Every checkpoint name (relative to the MoE block) the layer needs, with its shape."""
    expected: dict[str, tuple[int, ...]] = {}
    names = runner.checkpoint_names
    kinds = ("weight", "bias") if runner.has_bias else ("weight",)
    for logical in sorted(set(runner.local_logical_experts().tolist())):
        for shard, projection in (("w1", names[0]), ("w3", names[1]), ("w2", names[2])):
            for kind in kinds:
                slot = 0
                shape = tuple(_shard_view(runner, shard, kind, slot).shape)
                expected[f"experts.{logical}.{projection}.{kind}"] = shape
    if runner.shared_experts is not None:
        for name, tensor in runner.shared_experts.state_dict().items():
            expected[f"shared_experts.{name}"] = tuple(tensor.shape)
    if runner.e_score_correction_bias is not None:
        expected["gate.e_score_correction_bias"] = tuple(runner.e_score_correction_bias.shape)
    return expected


def _copy_checked(target: torch.Tensor, source: torch.Tensor, name: str) -> None:
    if not isinstance(source, torch.Tensor):
        raise TypeError(f"checkpoint tensor {name} must be a torch.Tensor, got "
                        f"{type(source).__name__}")  # fmt: skip
    if tuple(source.shape) != tuple(target.shape):
        raise ValueError(f"checkpoint tensor {name} has shape {list(source.shape)}, expected "
                         f"{list(target.shape)}")  # fmt: skip
    with torch.no_grad():
        target.copy_(source)


def load_weights(runner: MoERunner, weights: Iterable[tuple[str, torch.Tensor]]) -> set[str]:
    """Copy the tensors the layer owns from ``(name, tensor)`` pairs; return the names used.

    Names are relative to the MoE block (``experts.3.up_proj.weight``,
    ``shared_experts.down_proj.weight``, ``gate.e_score_correction_bias``). Experts held by
    other ranks and names the layer does not own are skipped, so one checkpoint can feed
    every rank. A redundant (EPLB) slot receives a copy of its logical expert.

    Raises:
        ValueError: a tensor whose shape differs from the parameter's, naming both.
        TypeError: a value that is not a tensor.
    """
    gate, up, down = (re.escape(name) for name in runner.checkpoint_names)
    pattern = re.compile(rf"experts\.(\d+)\.({gate}|{up}|{down})\.(weight|bias)")
    shard_of = dict(zip(runner.checkpoint_names, ("w1", "w3", "w2"), strict=True))
    slots_of: dict[int, list[int]] = {}
    for slot, logical in enumerate(runner.local_logical_experts().tolist()):
        slots_of.setdefault(logical, []).append(slot)
    shared = dict(runner.shared_experts.named_parameters()) if runner.shared_experts else {}
    used = set()
    for name, tensor in weights:
        match = pattern.fullmatch(name)
        if match is not None:
            logical, projection, kind = int(match[1]), match[2], match[3]
            if kind == "bias" and not runner.has_bias:
                continue
            for slot in slots_of.get(logical, []):
                view = _shard_view(runner, shard_of[projection], kind, slot)
                _copy_checked(view, tensor, name)
                used.add(name)
        elif name.startswith("shared_experts.") and name[len("shared_experts.") :] in shared:
            _copy_checked(shared[name[len("shared_experts.") :]], tensor, name)
            used.add(name)
        elif name == "gate.e_score_correction_bias" and runner.e_score_correction_bias is not None:
            _copy_checked(runner.e_score_correction_bias, tensor, name)
            used.add(name)
    return used


def load_checkpoint(runner: MoERunner, paths: str | Path | Sequence[str | Path],
                    prefix: str = "") -> set[str]:  # fmt: skip
    """Load the layer from safetensors file(s) and check nothing it needs is missing.

    Args:
        runner: the layer.
        paths: one ``.safetensors`` file or the shards of one checkpoint.
        prefix: the MoE block's name in the checkpoint, e.g. ``"model.layers.3.mlp"``;
            only names under it are read.

    Returns:
        The checkpoint names loaded (with the prefix).

    Raises:
        ImportError: safetensors is not installed (``pip install moekit-experts[checkpoint]``).
        FileNotFoundError: a path that does not exist.
        ValueError: a tensor the layer needs is missing or misshaped (named, with the expected
            shape).
    """
    try:
        from safetensors import safe_open
    except ImportError as error:
        raise ImportError("load_checkpoint needs safetensors: pip install "
                          "'moekit-experts[checkpoint]'") from error  # fmt: skip
    files = [Path(paths)] if isinstance(paths, (str, Path)) else [Path(p) for p in paths]
    lead = f"{prefix}." if prefix else ""
    used: set[str] = set()
    for file in files:
        if not file.is_file():
            raise FileNotFoundError(f"checkpoint file {file} does not exist")
        with safe_open(str(file), framework="pt") as handle:
            names = [n for n in handle.keys() if n.startswith(lead)]  # noqa: SIM118 (not a dict)
            pairs = ((n[len(lead) :], handle.get_tensor(n)) for n in names)
            used |= load_weights(runner, pairs)
    missing = {name: shape for name, shape in expected_weights(runner).items()
               if name not in used}  # fmt: skip
    if missing:
        listed = ", ".join(f"{lead}{name} (expected shape {list(shape)})"
                           for name, shape in list(missing.items())[:5])  # fmt: skip
        more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
        raise ValueError(
            f"checkpoint lacks {len(missing)} tensor(s) the layer needs: {listed}{more}"
        )
    return {lead + name for name in used}
