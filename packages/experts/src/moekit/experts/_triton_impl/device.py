"""Properties of the device a call runs on, read once per device (no Triton import)."""

from __future__ import annotations

import functools

import torch


@functools.cache
def sm_count(device: torch.device) -> int:
    """The multiprocessors of CUDA device ``device``."""
    return torch.cuda.get_device_properties(device).multi_processor_count
