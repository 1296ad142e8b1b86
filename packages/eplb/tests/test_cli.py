"""The moekit-eplb command: simulate, plan with both policies, and bad files."""

from __future__ import annotations

import json

import numpy as np
import pytest

from moekit.eplb import DefaultEplbPolicy, rank_load
from moekit.eplb.cli import main


def test_simulate_then_plan(tmp_path, capsys):
    load_path = tmp_path / "load.npy"
    assert main(["simulate", "--strategy", "zipf", "--layers", "3", "--experts", "32",
                 "--tokens", "512", "--top-k", "4", "--out", str(load_path)]) == 0  # fmt: skip
    load = np.load(load_path)
    assert load.shape == (3, 32) and (load.sum(axis=1) == 512 * 4).all()
    maps = tmp_path / "maps.json"
    assert main(["plan", str(load_path), "--replicas", "40", "--groups", "4", "--nodes", "2",
                 "--ranks", "8", "--out", str(maps)]) == 0  # fmt: skip
    out = capsys.readouterr().out
    assert "balanced before" in out and "replica moves" in out
    written = json.loads(maps.read_text())
    want, _, count = DefaultEplbPolicy.rebalance_experts(load, 40, 4, 2, 8)
    assert written["physical_to_logical_map"] == want.tolist()
    assert written["expert_count"] == count.tolist()
    ilp = tmp_path / "ilp.npy"
    assert main(["plan", str(load_path), "--replicas", "40", "--groups", "4", "--nodes", "2",
                 "--ranks", "8", "--policy", "ilp", "--time-limit", "0.2", "--old", str(maps),
                 "--out", str(ilp)]) == 0  # fmt: skip
    assert "status" in capsys.readouterr().out
    p2l = np.load(ilp)
    assert np.load(tmp_path / "ilp.count.npy").sum() == 3 * 40
    got = rank_load(load, p2l, 8).max(axis=1)
    assert (got <= rank_load(load, want, 8).max(axis=1) + 1e-9).all()


def test_csv_and_json_loads(tmp_path):
    load = np.arange(16, dtype=np.float64).reshape(2, 8)
    (tmp_path / "load.csv").write_text("\n".join(",".join(map(str, row)) for row in load))
    (tmp_path / "load.json").write_text(json.dumps({"0": load[0].tolist(), "1": load[1].tolist()}))
    for name in ("load.csv", "load.json"):
        out = tmp_path / f"{name}.maps.json"
        assert main(["plan", str(tmp_path / name), "--replicas", "8", "--ranks", "4",
                     "--out", str(out)]) == 0  # fmt: skip
        assert len(json.loads(out.read_text())["physical_to_logical_map"]) == 2


@pytest.mark.parametrize("content, reason", [
    ("[[1, 2], [3", "cannot read a load matrix"),
    ("[[1, -2], [3, 4]]", "must be >= 0"),
    ("[1, 2, 3]", "must be 2-D"),
])  # fmt: skip
def test_bad_file_names_path_and_reason(tmp_path, capsys, content, reason):
    bad = tmp_path / "bad.json"
    bad.write_text(content)
    assert main(["plan", str(bad), "--replicas", "4", "--ranks", "2", "--out",
                 str(tmp_path / "x.json")]) == 2  # fmt: skip
    err = capsys.readouterr().err
    assert str(bad) in err and reason in err


def test_missing_file_and_bad_layout(tmp_path, capsys):
    assert main(["plan", str(tmp_path / "none.npy"), "--replicas", "4", "--ranks", "2",
                 "--out", str(tmp_path / "x.json")]) == 2  # fmt: skip
    assert "no such file" in capsys.readouterr().err
    np.save(tmp_path / "load.npy", np.ones((1, 8)))
    assert main(["plan", str(tmp_path / "load.npy"), "--replicas", "10", "--ranks", "4",
                 "--out", str(tmp_path / "x.json")]) == 2  # fmt: skip
    assert "num_replicas (10) must be a multiple of num_ranks (4)" in capsys.readouterr().err
