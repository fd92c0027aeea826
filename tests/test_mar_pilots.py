"""tools/mar_pilots.py and the pilots config: MAR candidates as base-model sections, scored by the
book's judges from another folder, tabulated from a tiny shipped folder this test trains (three
steps per model on 192 Fashion-MNIST images)."""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path

import pytest
import torch
import yaml

from copkit import fmt, pretrained
from copkit.config import ConfigError

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))

import mar_pilots  # noqa: E402

PILOTS = ROOT / "copkit" / "configs" / "mar-pilots.yaml"


def _tiny_pilots(tmp_path: Path) -> Path:
    """The smoke config's classifier and ViT and two MAR candidates that differ in their head."""
    smoke = yaml.safe_load(pretrained.SMOKE_CONFIG.read_text())
    mar = smoke["mar"]
    mar["sampling"]["samples"] = 20
    cfg = {"name": "tiny-pilots",
           "data": {"train_images": 192, "val_images": 64, "test_images": 64},
           "classifier": smoke["classifier"], "vit": smoke["vit"],
           "mar_a": mar,
           "mar_b": {**mar, "model": {**mar["model"], "head_width": 48, "mask_ratio_min": 0.5}}}
    path = tmp_path / "tiny-pilots.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


@pytest.fixture(scope="module")
def pilots(tmp_path_factory):
    """The judges shipped in one folder (the book's, through $COPKIT_PRETRAINED), ``mar_a`` shipped
    into a folder of its own, ``mar_b`` not shipped."""
    tmp = tmp_path_factory.mktemp("pilots")
    config = _tiny_pilots(tmp)
    judges, folder = tmp / "judges", tmp / "pilots"
    pretrained.pretrain(["classifier", "vit"], config, tmp / "data", judges, progress=False)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("COPKIT_PRETRAINED", str(judges))
        pretrained.pretrain(["mar_a"], config, tmp / "data", folder, progress=False)
    return config, judges, folder


def test_the_pilots_config_keeps_the_books_judges_and_validates():
    """Its classifier and ViT are the shipped ones (same run hash, so the same files); every MAR
    candidate is a MAR section that plans."""
    cfg = pretrained.read_config(PILOTS)
    for judge in ("classifier", "vit"):
        assert pretrained.run_hash(judge, cfg) == pretrained.run_hash(judge, pretrained.CONFIG)
    names = mar_pilots.candidates(cfg)
    assert len(names) >= 2 and all(n.startswith("mar_") for n in names)
    for name in names:
        p = pretrained.plan(name, cfg)
        assert pretrained.kind_of(name) == "mar" and p.recipe.name == "mar"
        assert p.train_cfg.steps == int(cfg[name]["train"]["epochs"] * 55000) // 128
    assert len({pretrained.run_hash(n, cfg) for n in names}) == len(names)


def test_mar_candidate_names():
    assert pretrained.kind_of("mar_anything") == "mar"
    for bad in ("mar_", "marx", "mar-a"):
        with pytest.raises(ValueError, match="mar_<anything>"):
            pretrained.kind_of(bad)


def test_a_pilot_without_its_judges_stops_before_training(tmp_path, monkeypatch):
    monkeypatch.setenv("COPKIT_PRETRAINED", str(tmp_path / "empty"))
    config = _tiny_pilots(tmp_path)
    with pytest.raises(FileNotFoundError, match="shipped classifier.*--only classifier"):
        pretrained.pretrain(["mar_a"], config, tmp_path / "data", tmp_path / "out", progress=False)
    assert not (tmp_path / "data" / "runs").exists()
    raw = yaml.safe_load(config.read_text())
    del raw["classifier"]
    config.write_text(yaml.safe_dump(raw))
    with pytest.raises(ConfigError, match="'classifier' section"):
        pretrained.pretrain(["mar_a"], config, tmp_path / "data", tmp_path / "out", progress=False)


def test_a_pilot_shipped_apart_is_scored_by_the_judges_over_seeds(pilots):
    config, judges, folder = pilots
    assert not any(folder.glob("classifier-*")) and any(judges.glob("classifier-*"))
    m = pretrained.info("mar_a", config, folder)["metrics"]
    for key in ("fid_cfg", "fid_nocfg", "fid_floor", "fid_vit_cfg", "fid_vit_floor",
                "precision_cfg", "recall_floor", "class_agreement_cfg"):
        assert len(m[f"{key}_seeds"]) == 3
        assert m[key] == pytest.approx(statistics.fmean(m[f"{key}_seeds"]))
        assert m[f"{key}_sd"] == pytest.approx(statistics.stdev(m[f"{key}_seeds"]))
    assert m["floor_images"] == "held-out" and m["seeds"] == [0, 1, 2]


def test_the_pilot_table_reads_the_shipped_files(pilots, tmp_path):
    config, judges, folder = pilots
    table = mar_pilots.pilot_table(config, folder, bench=True, bench_steps=1, matmul_n=256)
    a, b = table["pilots"]["mar_a"], table["pilots"]["mar_b"]
    assert not b["shipped"] and a["shipped"]
    meta = pretrained.info("mar_a", config, folder)
    p = pretrained.plan("mar_a", config)
    torch.manual_seed(0)
    assert a["parameters"] == sum(t.numel() for t in p.recipe.build(p.model_cfg, p.data)
                                  .parameters())
    assert a["steps"] == 192 // 64
    assert a["train_minutes"] * 60 == pytest.approx(meta["train_seconds"], rel=1e-12)
    assert a["recorded_images_per_s"] == pytest.approx(3 * 64 / meta["train_seconds"])
    for key in ("val_loss", "fid_cfg", "fid_cfg_sd", "fid_floor", "fid_vit_cfg",
                "class_agreement_nocfg", "precision_cfg", "recall_cfg"):
        assert a[key] == meta["metrics"][key]
    assert a["images_per_s"] > 0 and 0 < a["fraction_of_matmul"] < 1
    assert table["bench"]["matmul_gflops"] > 0
    text = mar_pilots.markdown(table)
    cost_row, score_row = [line for line in text.splitlines() if line.startswith("| mar_a |")]
    assert fmt.count(a["parameters"]) in cost_row
    assert f"{fmt.fid(a['fid_cfg'])} ± {fmt.fid(a['fid_cfg_sd'])}" in score_row
    assert f"FID {fmt.fid(a['fid_floor'])} ± {fmt.fid(a['fid_floor_sd'])}" in text
    assert f"| mar_b (not trained) | {fmt.count(b['parameters'])} |" in text
    assert "seeds 0, 1, 2," in text
    # an untrained candidate's count is the built model's, and a note says when it would not fit
    p = pretrained.plan("mar_b", config)
    assert b["parameters"] == sum(t.numel() for t in p.recipe.build(p.model_cfg, p.data)
                                  .parameters())
    assert "mar_b is not trained" not in text  # a tiny model fits the room left
    mb = 3 * 4 * b["parameters"] / 2**20
    assert mar_pilots.shipped_mb(b["parameters"]) == pytest.approx(mb)
    crowded = mar_pilots.markdown({**table, "room_mb": mb / 2})
    assert ("mar_b is not trained:" in crowded and f"{fmt.num(mb, 1)} MB, more than the "
            f"{fmt.num(mb / 2, 1)} MB" in crowded)


def test_the_room_left_is_the_limit_less_what_else_is_shipped(tmp_path):
    base = mar_pilots.parameters("mar", pretrained.read_config(pretrained.CONFIG))
    (tmp_path / "a.bin").write_bytes(b"x" * 2**20)
    (tmp_path / "runs").mkdir()
    (tmp_path / "runs" / "b.bin").write_bytes(b"x" * 2**21)
    assert mar_pilots.room_mb(tmp_path) == pytest.approx(
        mar_pilots.LIMIT_MB - (3 - 3 * 4 * base / 2**20))


def test_the_tool_writes_json_and_markdown(pilots, tmp_path):
    config, _, folder = pilots
    out = tmp_path / "results" / "pilots"
    out.parent.mkdir()
    assert mar_pilots.main(["--config", str(config), "--folder", str(folder), "--out", str(out),
                            "--no-bench"]) == 0
    table = json.loads(out.with_suffix(".json").read_text())
    assert table["bench"] is None and table["pilots"]["mar_a"]["shipped"]
    # the table as JSON and as Markdown, and nothing else beside them
    assert out.with_suffix(".md").read_text() == mar_pilots.markdown(table)
    assert (sorted(p.name for p in out.parent.iterdir())
            == [out.with_suffix(".json").name, out.with_suffix(".md").name])
    # --render writes the same Markdown again from the .json alone, filling what it lacks
    del table["pilots"]["mar_b"]["parameters"], table["room_mb"]
    out.with_suffix(".json").write_text(json.dumps(table))
    out.with_suffix(".md").unlink()
    assert mar_pilots.main(["--config", str(config), "--out", str(out), "--render"]) == 0
    again = json.loads(out.with_suffix(".json").read_text())
    assert again["pilots"]["mar_b"]["parameters"] > 0 and again["room_mb"] > 0
    assert out.with_suffix(".md").read_text() == mar_pilots.markdown(again)


def test_one_seed_numbers_are_refused_by_name(pilots, tmp_path):
    import shutil

    config, _, folder = pilots
    copy = tmp_path / "old"
    shutil.copytree(folder, copy)
    described = pretrained.path_of("mar_a", config, copy).with_suffix(".json")
    meta = json.loads(described.read_text())
    meta["metrics"] = {k: v for k, v in meta["metrics"].items() if not k.endswith("_seeds")}
    described.write_text(json.dumps(meta))
    with pytest.raises(ValueError, match=f"{described.name}.*means over sampling seeds"):
        mar_pilots.pilot_table(config, copy, bench=False)
    raw = yaml.safe_load(Path(config).read_text())
    for name in ("mar_a", "mar_b"):
        del raw[name]
    with pytest.raises(ValueError, match="no MAR section"):
        mar_pilots.pilot_table(raw, copy, bench=False)


def test_the_pilot_with_the_base_mars_network_is_marked():
    base = pretrained.read_config(pretrained.CONFIG)["mar"]["model"]
    rows = {"same": {"shipped": True, "model": dict(base)},
            "wider": {"shipped": True, "model": {**base, "width": base["width"] * 2}},
            "untrained": {"shipped": False}}
    mar_pilots.mark_base(rows)
    assert {n: r["base"] for n, r in rows.items()} == {"same": True, "wider": False,
                                                        "untrained": False}
