"""The FusedMoE layer over torch.distributed (gloo, CPU): 2 and 4 processes on localhost give
the single-process layer's output for their own tokens (random and skewed routing, ranks that
receive nothing, a rank without tokens), the async dispatch matches the synchronous one, ranks
that disagree on the configuration are refused, and a dead peer is a clear error, not a hang."""

from __future__ import annotations

import time
from pathlib import Path

import distributed_workers as workers
import pytest
import torch.multiprocessing as mp

pytestmark = pytest.mark.distributed


def spawn(function, world: int, tmp_path: Path, timeout: float = 240.0) -> None:  # type: ignore[no-untyped-def]
    context = mp.start_processes(function, args=(world, str(tmp_path / "store"), str(tmp_path)),
                                 nprocs=world, join=False, start_method="spawn")  # fmt: skip
    deadline = time.monotonic() + timeout
    try:
        while not context.join(timeout=5):
            if time.monotonic() > deadline:
                raise AssertionError(f"{function.__name__} on {world} ranks hung past {timeout} s")
    except mp.ProcessException as error:
        errors = "\n".join(p.read_text() for p in sorted(tmp_path.glob("rank*.err")))
        raise AssertionError(f"a rank failed:\n{errors or error}") from error
    finally:
        for process in context.processes:
            if process.is_alive():
                process.kill()


@pytest.mark.parametrize("world", [2, 4])
def test_layer_across_ranks_matches_one_process(world, tmp_path):
    spawn(workers.run_scenarios, world, tmp_path)


def test_dead_peer_is_a_clear_error(tmp_path):
    spawn(workers.dead_peer, 2, tmp_path, timeout=120)
    message = (tmp_path / "dead_peer.txt").read_text()
    assert "expert-parallel all-to-all failed on rank 0" in message, message
