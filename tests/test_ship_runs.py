"""tools/ship_runs.py: what a chapter trained is shipped from its results file's ``runs``, within
the size limit, and a fresh clone's fit loads it; results files list the runs fit returned."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))

import ship_runs  # noqa: E402

from copkit import (  # noqa: E402
    checkpoint,  # noqa: E402
    cvit,
    results,
)
from copkit.recipe import TrainConfig  # noqa: E402
from copkit.train import fit  # noqa: E402


@pytest.fixture(autouse=True)
def _own_kernel(monkeypatch):
    """Each test as one chapter's kernel: it lists only the runs it fitted itself."""
    monkeypatch.setattr(checkpoint, "_USED", {"runs": {}, "records": {}, "files": {}})


def _run(data_dir: Path, seed: int):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(24, 1, 28, 28, generator=g) * 2 - 1
    y = torch.randint(0, 10, (24,), generator=g)
    orders = torch.stack([torch.randperm(49, generator=g) for _ in range(24)])
    cfg = cvit.CViTConfig(width=16, depth=2, heads=2, train_drop="learned")
    tc = TrainConfig(steps=3, batch_size=8, lr=1e-3, warmup_steps=1, seed=seed, log_every=1,
                     ckpt_every=2)
    return fit(cvit.RECIPE, cfg, tc, cvit.CViTData(x, y, orders), {"tiny": seed}, data_dir,
               progress=False), (cfg, tc, cvit.CViTData(x, y, orders), {"tiny": seed})


def _results(folder: Path, chapter: str) -> Path:
    claim = results.claim("a", {"x": 1.0}, "not testable", "Nothing to test.")
    claim["verdict"] = "not testable"
    return results.write_results(folder, chapter, profile=results.book_profile(), device="cpu",
                                 seeds=[0], claims={"c": claim}, metrics={})


def test_results_list_the_runs_and_the_tool_ships_them_for_a_fresh_clone(tmp_path, monkeypatch):
    data, res = tmp_path / "data", tmp_path / "results"
    run_a, spec_a = _run(data, 0)
    run_b, _ = _run(data, 1)
    written = json.loads(_results(res, "05_x").read_text())
    ids = {f"cvit-{run_a.hash[:8]}", f"cvit-{run_b.hash[:8]}"}
    assert ids <= set(written["runs"])
    lines = ship_runs.ship(res, data, ["05_x"], prune=False)
    assert sum(line.startswith("shipped ") for line in lines) == len(written["runs"])
    # a fresh clone: the runs' folders are gone, fit loads the shipped weights without training
    shutil.rmtree(data / "runs")
    loaded = fit(cvit.RECIPE, *spec_a, data, progress=False)
    assert loaded.folder == data / "pretrained" / "runs" / f"cvit-{run_a.hash[:8]}"
    a, b = run_a.model.state_dict(), loaded.model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    # shipping again is a no-op; a run no chapter lists any more is pruned with --all --prune
    (data / "pretrained" / "runs" / "cvit-00000000").mkdir()
    lines = ship_runs.ship(res, data, ["05_x"], prune=True)
    assert not any(line.startswith("shipped ") for line in lines)
    assert "removed cvit-00000000 (no chapter lists it)" in lines
    assert not (data / "pretrained" / "runs" / "cvit-00000000").exists()


def test_the_tool_refuses_what_it_cannot_ship_and_writes_nothing(tmp_path):
    data, res = tmp_path / "data", tmp_path / "results"
    _run(data, 0)
    written = json.loads(_results(res, "05_x").read_text())
    # over the limit: nothing is shipped
    with pytest.raises(SystemExit, match="over the 0.001 MB limit; nothing was shipped"):
        ship_runs.ship(res, data, ["05_x"], prune=False, limit_mb=0.001)
    assert not (data / "pretrained" / "runs").exists()
    # a listed run that is neither in data/runs nor shipped is named with its chapter
    shutil.rmtree(data / "runs" / written["runs"][0])
    with pytest.raises(SystemExit, match=f"{written['runs'][0]} \\(listed by 05_x\\)"):
        ship_runs.ship(res, data, ["05_x"], prune=False)
    with pytest.raises(SystemExit, match="no results file"):
        ship_runs.ship(res, data, ["09_none"], prune=False)


def test_records_and_caches_ship_without_weights_and_are_read_back(tmp_path):
    from copkit.checkpoint import cache_file, run_record
    from copkit.recipe import TrainConfig as TC

    data, res = tmp_path / "data", tmp_path / "results"
    run, (cfg, tc, d, tag) = _run(data, 0)
    config = cvit.RECIPE.run_config(cfg, tc, d, tag)
    assert run_record(data, "cvit", config) == run.metrics
    # a run never trained, or stopped early, has no record: the chapter trains it
    longer = cvit.RECIPE.run_config(cfg, TC(**{**tc.__dict__, "steps": 9}), d, tag)
    assert run_record(data, "cvit", longer) is None
    fit(cvit.RECIPE, cfg, TC(**{**tc.__dict__, "steps": 9}), d, tag, data, progress=False,
        stop_after=2)
    assert run_record(data, "cvit", longer) is None
    path = cache_file(data, "scores-test.json")
    assert path == data / "runs" / "scores-test.json"
    path.write_text('{"fid": 12.5}')
    # the chapter needed only the record of the first run, and its cache
    checkpoint._USED["runs"].clear()
    written = json.loads(_results(res, "04_x").read_text())
    assert written["records"] == [f"cvit-{run.hash[:8]}"] and written["runs"] == []
    assert written["files"] == ["scores-test.json"]
    lines = ship_runs.ship(res, data, ["04_x"], prune=False)
    assert any("metrics only" in line for line in lines)
    assert any("a cache" in line for line in lines)
    shipped = data / "pretrained" / "runs"
    assert not (shipped / f"cvit-{run.hash[:8]}" / "weights.safetensors").exists()
    shutil.rmtree(data / "runs")
    assert run_record(data, "cvit", config) == run.metrics
    assert cache_file(data, "scores-test.json") == shipped / "scores-test.json"
    assert json.loads((shipped / "scores-test.json").read_text()) == {"fid": 12.5}
