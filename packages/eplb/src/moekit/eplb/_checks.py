"""Validation and array-kind handling shared by the policies: every check runs before any work."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

ArrayLike = torch.Tensor | np.ndarray


@dataclass(frozen=True)
class EplbProblem:
    """The validated arguments of one ``rebalance_experts`` call."""

    weight: torch.Tensor  # float32 [num_layers, num_logical], CPU, contiguous
    num_replicas: int
    num_groups: int
    num_nodes: int
    num_ranks: int
    old_physical_to_logical: torch.Tensor | None  # int64 [num_layers, num_replicas], CPU
    as_numpy: bool  # the caller passed NumPy: answer in NumPy
    device: torch.device  # the caller's device (torch input): answer there

    @property
    def num_layers(self) -> int:
        return self.weight.shape[0]

    @property
    def num_logical(self) -> int:
        return self.weight.shape[1]

    def output(self, tensor: torch.Tensor) -> ArrayLike:
        """``tensor`` in the kind and on the device the caller used."""
        return tensor.numpy() if self.as_numpy else tensor.to(self.device)


def check_int(value: object, name: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return int(value)


def to_cpu_tensor(array: object, name: str) -> tuple[torch.Tensor, bool, torch.device]:
    """(CPU tensor, came as NumPy, original device) for a torch tensor or NumPy array."""
    if isinstance(array, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(array)), True, torch.device("cpu")
    if isinstance(array, torch.Tensor):
        return array.detach().cpu(), False, array.device
    raise TypeError(f"{name} must be a torch.Tensor or numpy.ndarray, got {type(array).__name__}")


def check_weight(weight: object, name: str = "weight", dtype: torch.dtype = torch.float32
                 ) -> tuple[torch.Tensor, bool, torch.device]:  # fmt: skip
    """``weight`` must be a 2-D real array ``[num_layers, num_logical]`` of finite loads >= 0;
    returned as ``dtype`` on the CPU (the policies compute with float32 loads, the metrics
    with float64)."""
    tensor, as_numpy, device = to_cpu_tensor(weight, name)
    if tensor.dtype == torch.bool or tensor.is_complex():
        raise TypeError(f"{name} must hold real numbers, got {tensor.dtype}")
    if tensor.dim() != 2:
        raise ValueError(f"{name} must be 2-D [num_layers, num_logical_experts], got "
                         f"{tensor.dim()}-D {tuple(tensor.shape)}")  # fmt: skip
    if tensor.shape[0] < 1 or tensor.shape[1] < 1:
        raise ValueError(f"{name} must have at least one layer and one expert, got "
                         f"{tuple(tensor.shape)}")  # fmt: skip
    as_float = tensor.to(torch.float64)
    if not torch.isfinite(as_float).all():
        raise ValueError(f"{name} must be finite, got NaN or inf loads")
    if (as_float < 0).any():
        raise ValueError(f"{name} must be >= 0, got a minimum of {as_float.min().item()}")
    return tensor.to(dtype).contiguous(), as_numpy, device


def check_layout(num_logical: int, num_replicas: object, num_groups: object, num_nodes: object,
                 num_ranks: object) -> tuple[int, int, int, int]:  # fmt: skip
    """The divisibility preconditions of the spec, each error naming its argument."""
    num_replicas = check_int(num_replicas, "num_replicas", 1)
    num_groups = check_int(num_groups, "num_groups", 1)
    num_nodes = check_int(num_nodes, "num_nodes", 1)
    num_ranks = check_int(num_ranks, "num_ranks", 1)
    if num_replicas < num_logical:
        raise ValueError(f"num_replicas ({num_replicas}) must be >= the number of logical "
                         f"experts ({num_logical})")  # fmt: skip
    if num_replicas % num_ranks:
        raise ValueError(f"num_replicas ({num_replicas}) must be a multiple of num_ranks "
                         f"({num_ranks})")  # fmt: skip
    if num_ranks % num_nodes:
        raise ValueError(f"num_ranks ({num_ranks}) must be a multiple of num_nodes ({num_nodes})")
    if num_logical % num_groups:
        raise ValueError(f"the number of logical experts ({num_logical}) must be a multiple of "
                         f"num_groups ({num_groups})")  # fmt: skip
    return num_replicas, num_groups, num_nodes, num_ranks


def check_physical_map(mapping: object, num_layers: int, num_replicas: int, num_logical: int,
                       name: str) -> torch.Tensor:  # fmt: skip
    """An int map ``[num_layers, num_replicas]`` of logical ids in ``[0, num_logical)``."""
    tensor, _, _ = to_cpu_tensor(mapping, name)
    if tensor.dtype.is_floating_point or tensor.dtype == torch.bool or tensor.is_complex():
        raise TypeError(f"{name} must hold integer expert ids, got {tensor.dtype}")
    if tuple(tensor.shape) != (num_layers, num_replicas):
        raise ValueError(f"{name} must have shape [num_layers, num_replicas] = "
                         f"[{num_layers}, {num_replicas}], got {tuple(tensor.shape)}")  # fmt: skip
    tensor = tensor.to(torch.int64)
    if tensor.numel() and (tensor.min() < 0 or tensor.max() >= num_logical):
        raise ValueError(f"{name} must hold logical ids in [0, {num_logical}), got values in "
                         f"[{tensor.min().item()}, {tensor.max().item()}]")  # fmt: skip
    return tensor.contiguous()


def check_problem(weight: object, num_replicas: object, num_groups: object, num_nodes: object,
                  num_ranks: object, old_global_expert_indices: object = None) -> EplbProblem:  # fmt: skip
    tensor, as_numpy, device = check_weight(weight)
    layout = check_layout(tensor.shape[1], num_replicas, num_groups, num_nodes, num_ranks)
    old = None
    if old_global_expert_indices is not None:
        old = check_physical_map(old_global_expert_indices, tensor.shape[0], layout[0],
                                 tensor.shape[1], "old_global_expert_indices")  # fmt: skip
    return EplbProblem(tensor, *layout, old, as_numpy, device)
