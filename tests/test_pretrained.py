"""copkit.pretrained: the base models' config, training into shipped files, and reading them back,
on a tiny config (the real Fashion-MNIST, a few hundred images); `make test` runs the smoke
config."""

import dataclasses
import json
import shutil

import pytest
import torch
import yaml

from copkit import pretrained
from copkit.cli import main
from copkit.data import load_fashion_mnist
from copkit.io import DamagedFileError, file_sha256


def _tiny(tmp_path, **data):
    cfg = yaml.safe_load(pretrained.SMOKE_CONFIG.read_text())
    cfg["data"] = {"train_images": 192, "val_images": 64, "test_images": 64, **data}
    cfg["mar"]["sampling"]["samples"] = 20
    # trained in test_rank's orders test
    cfg = {k: v for k, v in cfg.items() if not k.startswith("comae")}
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


@pytest.fixture(scope="module")
def shipped(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("pretrained")
    config = _tiny(tmp)
    out = pretrained.pretrain(config=config, data_dir=tmp / "data", folder=tmp / "shipped",
                              progress=False)
    return config, tmp / "shipped", out


def test_every_model_is_shipped_with_its_description_and_curve(shipped):
    config, folder, out = shipped
    assert set(out) == {"classifier", "vit", "mar"}
    for name, path in out.items():
        meta = json.loads(path.with_suffix(".json").read_text())
        assert path.name == f"{name}-{meta['config_hash'][:8]}.safetensors" == meta["file"]
        assert meta["steps"] == 192 // 64 and meta["epochs"] == 1 and meta["train_seconds"] > 0
        assert {"config", "commit", "machine", "metrics", "command"} <= set(meta)
        curve = [json.loads(line)
                 for line in path.with_name(f"{path.stem}.metrics.jsonl").read_text().splitlines()]
        # eval_every 8 > 3 steps: start and end
        assert [r["step"] for r in curve if r.get("eval")] == [0, 3]
    summary = pretrained.summary(config, folder)
    assert (set(summary["models"]["mar"]) == {"file", "hash", "steps", "epochs", "train_seconds",
                                              "metrics", "command"})
    m = summary["models"]
    # the command that makes the file from this config today, whatever the file recorded
    assert m["mar"]["command"] == (f"python -m copkit pretrain --only mar --config {config} "
                                   f"--out {folder}")
    assert (0 <= m["classifier"]["metrics"]["test_top1"] <= 1
            and 0 <= m["vit"]["metrics"]["test_top1"] <= 1)
    assert ({"class_agreement_cfg", "class_agreement_nocfg", "fid_cfg",
             "fid_floor"} <= set(m["mar"]["metrics"]))


def test_shipped_mar_numbers_are_what_each_seed_scores(shipped):
    """The MAR's shipped numbers, recomputed independently from the loaded files: seed 1's
    samples with CFG and the floor's third draw of held-out images, scored by the shipped
    classifier and ViT against the 64 test images; each shipped number is the mean of its seeds."""
    from statistics import fmean

    from copkit.metrics import GenerativeScores

    config, folder, _ = shipped
    m = pretrained.info("mar", config, folder)["metrics"]
    s = pretrained.read_config(config)["mar"]["sampling"]
    classifier, vit = (pretrained.load(n, config=config, folder=folder) for n in ("classifier",
                                                                                "vit"))
    test = load_fashion_mnist("test", limit=64)[0]
    labels = torch.arange(20) % 10
    images = pretrained.generate_with(pretrained.load("mar", config=config, folder=folder), labels,
                                      s["cfg_scale"], 1, s)
    by_classifier, by_vit = GenerativeScores(classifier, test), GenerativeScores(vit, test)
    got = by_classifier(images)
    assert got["fid"] == pytest.approx(m["fid_cfg_seeds"][1], rel=1e-5)
    assert (got["precision"], got["recall"]) == (m["precision_cfg_seeds"][1],
                                                 m["recall_cfg_seeds"][1])
    assert by_vit(images)["fid"] == pytest.approx(m["fid_vit_cfg_seeds"][1], rel=1e-5)
    agree = (classifier(images).argmax(1) == labels).float().mean().item()
    assert agree == pytest.approx(m["class_agreement_cfg_seeds"][1])
    x, _ = load_fashion_mnist("train")
    held = x[len(x) - 64:][40:60]  # the validation images (the last 64), third draw of 20
    assert by_classifier(held)["fid"] == pytest.approx(m["fid_floor_seeds"][2], rel=1e-5)
    for key in ("fid_cfg", "fid_nocfg", "fid_floor", "fid_vit_floor", "recall_nocfg"):
        assert m[key] == pytest.approx(fmean(m[f"{key}_seeds"]))
    assert len(set(m["fid_cfg_seeds"])) == 3  # three seeds, three different sample sets


def test_shipped_metrics_are_what_the_loaded_models_score(shipped):
    """test_top1 recomputed independently from the loaded file on the same 64 test images."""
    config, folder, _ = shipped
    x, y = load_fashion_mnist("test", limit=64)
    for name in ("classifier", "vit"):
        model = pretrained.load(name, config=config, folder=folder)
        assert not model.training
        logits = model(x)
        assert logits.shape == (64, 10)
        top1 = (logits.argmax(1) == y).float().mean().item()
        assert (top1 == pytest.approx(pretrained.info(name, config, folder)["metrics"]["test_top1"],
                                      abs=1e-9))


def test_generate_gives_images_in_range_deterministic_in_the_seed(shipped):
    config, folder, _ = shipped
    labels = torch.tensor([0, 3, 7])
    a = pretrained.generate("mar", labels, 3.0, seed=5, config=config, folder=folder)
    b = pretrained.generate("mar", labels, 3.0, seed=5, config=config, folder=folder)
    c = pretrained.generate("mar", labels, 3.0, seed=6, config=config, folder=folder)
    assert a.shape == (3, 1, 28, 28) and a.min() >= -1 and a.max() <= 1
    assert torch.equal(a, b) and not torch.equal(a, c)
    with pytest.raises(ValueError, match="not a generator"):
        pretrained.generate("vit", labels, 3.0, 0, config=config, folder=folder)


def test_a_second_call_loads_instead_of_training(shipped):
    config, folder, out = shipped
    stamp = out["vit"].stat().st_mtime_ns
    assert pretrained.pretrain(["vit"], config=config, data_dir=folder.parent / "data",
                               folder=folder, progress=False)["vit"] == out["vit"]
    assert out["vit"].stat().st_mtime_ns == stamp


def test_missing_damaged_and_foreign_files_name_the_file_and_make_pretrain(shipped, tmp_path):
    config, folder, out = shipped
    with pytest.raises(FileNotFoundError, match="make pretrain"):
        pretrained.load("vit", config=config, folder=tmp_path)
    copy = tmp_path / "copy"
    shutil.copytree(folder, copy)
    target = copy / out["vit"].name
    target.write_bytes(target.read_bytes()[:100])
    with pytest.raises(DamagedFileError, match=f"{target.name}.*make pretrain"):
        pretrained.load("vit", config=config, folder=copy)
    # the classifier's file under the ViT's name: another configuration's weights
    shutil.copy(out["classifier"], target)
    with pytest.raises(DamagedFileError, match="another configuration.*make pretrain"):
        pretrained.load("vit", config=config, folder=copy)
    # another config (more training images) expects another file
    with pytest.raises(FileNotFoundError, match="vit-"):
        pretrained.load("vit", config=_tiny(tmp_path, train_images=128), folder=folder)


def test_validation_images_are_held_out_of_training(tmp_path):
    p = pretrained.plan("classifier", _tiny(tmp_path))
    x, _ = load_fashion_mnist("train")
    assert (torch.equal(p.data.images, x[:192]) and p.tag["train_images"] == 192
            and p.tag["val_images"] == 64)
    assert p.test[0].shape == (64, 1, 28, 28)


def test_config_is_read_strictly(tmp_path):
    cfg = yaml.safe_load(pretrained.SMOKE_CONFIG.read_text())
    cfg["vit"]["train"]["epoch"] = 2
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(cfg))
    with pytest.raises(ValueError, match="epoch"):
        pretrained.read_config(bad)
    cfg = yaml.safe_load(pretrained.SMOKE_CONFIG.read_text())
    cfg["resnet"] = cfg["vit"]
    bad.write_text(yaml.safe_dump(cfg))
    with pytest.raises(ValueError, match="unknown base model 'resnet'"):
        pretrained.read_config(bad)


def test_a_replicate_section_trains_the_same_model_from_its_own_seed(tmp_path):
    """``train.seed`` makes a replicate: the same configurations but the seed, so another run
    hash; a section without it is seed 0 and keeps its hash; a bad seed is refused by name."""
    cfg = yaml.safe_load(pretrained.SMOKE_CONFIG.read_text())
    cfg["comae_s1"] = {**cfg["comae"], "train": {**cfg["comae"]["train"], "seed": 1}}
    path = tmp_path / "replicates.yaml"
    path.write_text(yaml.safe_dump(cfg))
    read = pretrained.read_config(path)
    base, rep = pretrained.plan("comae", read), pretrained.plan("comae_s1", read)
    assert (base.train_cfg.seed, rep.train_cfg.seed) == (0, 1)
    assert base.model_cfg == rep.model_cfg
    assert dataclasses.replace(rep.train_cfg, seed=0) == base.train_cfg
    assert (pretrained.run_hash("comae", read)
            == pretrained.run_hash("comae", pretrained.SMOKE_CONFIG))
    assert pretrained.run_hash("comae_s1", read) != pretrained.run_hash("comae", read)
    # replicates() finds it by its configuration, whatever its name, and orders by seed
    cfg["comae_more"] = {**cfg["comae"], "train": {**cfg["comae"]["train"], "seed": 3}}
    cfg["comae_lr"] = {**cfg["comae"], "train": {**cfg["comae"]["train"], "lr": 1e-4, "seed": 2}}
    cfg["comae_s2"] = {**cfg["comae"], "train": {**cfg["comae"]["train"], "seed": 2}}
    path.write_text(yaml.safe_dump(cfg))
    assert pretrained.replicates("comae", path) == ["comae", "comae_s1", "comae_s2", "comae_more"]
    assert pretrained.replicates("comae_s2", path)[0] == "comae_s2"
    assert "comae" not in pretrained.replicates("comae0", path)  # another lambda_c
    cfg["comae_s2"]["train"]["seed"] = 1
    path.write_text(yaml.safe_dump(cfg))
    with pytest.raises(ValueError, match="same seed"):
        pretrained.replicates("comae_s1", path)
    cfg["comae_s1"]["train"]["seed"] = -1
    path.write_text(yaml.safe_dump(cfg))
    with pytest.raises(ValueError, match=r"comae_s1\.train\.seed: must be an integer >= 0"):
        pretrained.read_config(path)


def test_total_seconds_adds_the_sessions_of_a_resumed_run():
    records = [{"step": 0, "seconds": 1.0}, {"step": 10, "seconds": 5.0},
               {"step": 10, "eval": True}, {"step": 20, "seconds": 2.0},
               {"step": 30, "seconds": 4.0}]
    assert pretrained.total_seconds(records) == 9.0


def test_cli_rejects_an_unknown_name(capsys):
    assert main(["pretrain", "--only", "nope", "--config", "smoke"]) == 2
    assert "nope not in" in capsys.readouterr().err


def test_the_full_config_reads():
    cfg = pretrained.read_config()
    assert {"classifier", "vit", "mar"} <= set(cfg)


@pytest.mark.parametrize("profile", ["smoke", "cpu", "gpu"])
def test_every_profile_fine_tunes_networks_of_its_base_models_sizes(profile):
    """The chapters load the base models' weights into the networks their profile sizes: the two
    must agree, or loading fails (or, worse, the profile's numbers describe another network)."""
    from dataclasses import asdict

    from copkit import cmar, cvit
    from copkit.profiles import get_profile

    p = get_profile(profile)
    base = pretrained.read_config(p.pretrain)
    vit, _ = cvit.from_profile(p.cvit, 0, kind="vit")
    assert {k: v for k, v in base["vit"]["model"].items() if k != "shift"} == \
        {k: asdict(vit)[k] for k in base["vit"]["model"] if k != "shift"}
    mar, _ = cmar.from_profile(p.cmar, 0, phase="finetune")
    assert base["mar"]["model"] == {k: asdict(mar)[k] for k in base["mar"]["model"]}


def test_a_parked_unfinished_run_resumes_on_another_machine(tmp_path):
    """Interrupted on one machine (stop_after), parked into the shipped folder, resumed from there
    on a fresh data folder: the shipped weights equal an uninterrupted training's."""
    from copkit.train import fit

    config = pretrained.read_config(_tiny(tmp_path))
    p = pretrained.plan("vit", config)
    fit(p.recipe, p.model_cfg, p.train_cfg, p.data, p.tag, tmp_path / "a", progress=False,
        evaluate_ema=True, stop_after=1)
    parked = pretrained.park(["vit"], config, tmp_path / "a", tmp_path / "shipped")
    assert ([x.name
             for x in parked] == [pretrained.run_folder_of("vit", config, tmp_path / "a").name])
    resumed = pretrained.pretrain(["vit"], config, tmp_path / "b", tmp_path / "shipped",
                                  progress=False)["vit"]
    assert not (tmp_path / "shipped" / "unfinished" / parked[0].name).exists()  # gone once shipped
    whole = pretrained.pretrain(["vit"], config, tmp_path / "c", tmp_path / "whole",
                                progress=False)["vit"]
    a = pretrained.load("vit", config=config, folder=tmp_path / "shipped")
    b = pretrained.load("vit", config=config, folder=tmp_path / "whole")
    assert resumed.name == whole.name
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


def test_a_shipped_models_hash_is_computed_from_one_plan(shipped, monkeypatch):
    """base() loads the model (one plan, which loads or crops its data) and reads its description:
    the description, path and run folder reuse the hash instead of building the plan again."""
    config, folder, _ = shipped
    cfg = pretrained.read_config(config)
    cfg["vit"]["train"]["lr"] *= 0.5  # a config not seen yet in this process: nothing remembered
    expected = pretrained._run_hash(pretrained.plan("vit", cfg))
    calls = []
    real = pretrained.plan
    monkeypatch.setattr(pretrained, "plan", lambda *a, **k: calls.append(a) or real(*a, **k))
    assert pretrained.run_hash("vit", cfg) == expected and len(calls) == 1
    assert pretrained.path_of("vit", cfg, folder).name == f"vit-{expected[:8]}.safetensors"
    assert pretrained.run_folder_of("vit", cfg, "d").name == f"cvit-{expected[:8]}"
    assert len(calls) == 1


# -------------------------------------------------------------------- found from anywhere, verified
def test_the_shipped_folder_is_found_from_any_working_folder(tmp_path, monkeypatch):
    monkeypatch.delenv("COPKIT_PRETRAINED", raising=False)
    monkeypatch.chdir(tmp_path)
    assert pretrained.shipped_folder() == pretrained.REPOSITORY / "data" / "pretrained"
    # the committed file, though data/ is not under the working folder
    assert pretrained.path_of("vit").is_file()
    monkeypatch.setenv("COPKIT_PRETRAINED", str(tmp_path / "mine"))
    assert pretrained.shipped_folder() == tmp_path / "mine"
    assert pretrained.shipped_folder("elsewhere") == pretrained.Path("elsewhere")


def test_the_environment_folder_is_loaded_from(shipped, tmp_path, monkeypatch):
    config, folder, _ = shipped
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("COPKIT_PRETRAINED", str(folder))
    assert not pretrained.load("vit", config=config).training


def test_every_committed_description_records_its_weights_sha256():
    """Every model description (a .json beside its .safetensors; planted-sweep.json is a results
    file)."""
    described_models = sorted(p
                              for p in (pretrained.REPOSITORY / "data"
                                        / "pretrained").glob("*.json")
                              if p.with_suffix(".safetensors").exists())
    assert len(described_models) >= 6
    for described in described_models:
        meta = json.loads(described.read_text())
        assert meta["sha256"] == file_sha256(described.with_name(meta["file"])), described.name


def test_every_shipped_model_is_named_by_the_run_its_section_makes():
    """The shipped files are found by the hash of the training run their section of the
    pretraining config defines: however that configuration is made (through the model module's
    from_profile), each one's description records exactly that run and its hash."""
    from copkit.config import config_hash, jsonable

    config = pretrained.read_config()
    names = [k for k in config if k not in ("name", "data")]
    assert len(names) >= 6
    for name in names:
        p = pretrained.plan(name, config)
        run = p.recipe.run_config(p.model_cfg, p.train_cfg, p.data, p.tag)
        described = json.loads(pretrained.path_of(name).with_suffix(".json").read_text())
        assert (described["config_hash"] == config_hash(run) == pretrained.run_hash(name,
                                                                                    config)), name
        assert described["config"] == jsonable(run), name


def test_base_models_take_their_configurations_from_their_modules_from_profile():
    from copkit import cmar, cvit
    from copkit import metrics as feature_net
    from copkit.config import ConfigError
    from copkit.profiles import BaseSizes

    config = pretrained.read_config("smoke")
    section = config["vit"]
    train = {k: v for k, v in section["train"].items() if k != "epochs"}
    sizes = BaseSizes(section["model"], train, 2, 1024)
    model, tc = cvit.from_profile(sizes, 3, kind="vit")
    assert (model.train_drop, model.schedule, model.width, model.shift) == ("none", "none", 32, 2)
    assert (tc.steps, tc.seed, tc.batch_size, tc.eval_every) == (2 * 1024 // 64, 3, 64, 8)
    assert pretrained.plan("vit", config).model_cfg == cvit.from_profile(sizes, 0, kind="vit")[0]
    with pytest.raises(ValueError, match="plain ViT"):
        cvit.from_profile(sizes, 0, kind="cvit")
    with pytest.raises(ConfigError, match=r"model\.train_drop: set by pretraining \('none'\)"):
        cvit.from_profile(BaseSizes({**section["model"], "train_drop": "random"}, train, 1, 64), 0,
                          kind="vit")
    with pytest.raises(ValueError, match="phase 'mar'"):
        cmar.from_profile(BaseSizes(config["mar"]["model"], train, 1, 64), 0, phase="finetune")
    net, _ = feature_net.from_profile(BaseSizes(config["classifier"]["model"], train, 1, 64), 0)
    assert (net.width, net.features) == (8, 32)


def test_pretrain_records_the_sha256_and_load_checks_it(shipped, tmp_path):
    config, folder, out = shipped
    for path in out.values():
        assert json.loads(path.with_suffix(".json").read_text())["sha256"] == file_sha256(path)
    copy = tmp_path / "copy"
    shutil.copytree(folder, copy)
    target = copy / out["vit"].name
    data = bytearray(target.read_bytes())
    data[-3] ^= 0x01  # one bit of the last weight: the file still reads
    target.write_bytes(bytes(data))
    with pytest.raises(DamagedFileError,
                       match=f"{target.name}: its SHA-256 is not the one .* records.*make "
                             "pretrain"):
        pretrained.load("vit", config=config, folder=copy)


@pytest.mark.parametrize("damage, message", [
    (lambda text: text[:40], "is not readable JSON"),
    (lambda text: "garbage {", "is not readable JSON"),
    (lambda text: text.replace('"config_hash": "', '"config_hash": "deadbeef', 1),
     "does not describe .*records config_hash deadbeef"),
    (lambda text: "[1, 2]", "does not describe"),
])
def test_a_damaged_or_edited_description_names_the_file_and_the_remedy(shipped, tmp_path, damage,
                                                                       message):
    config, folder, out = shipped
    copy = tmp_path / "copy"
    shutil.copytree(folder, copy)
    described = copy / out["vit"].with_suffix(".json").name
    described.write_text(damage(described.read_text()))
    for call in (lambda: pretrained.load("vit", config=config, folder=copy),
                 lambda: pretrained.info("vit", config, copy)):
        with pytest.raises(DamagedFileError, match=f"{described.name}: {message}") as err:
            call()
        assert ("python -m copkit pretrain --only vit --config" in str(err.value)
                and str(copy) in str(err.value))
        assert len(str(err.value).splitlines()) == 1


def test_a_committed_file_is_restored_with_git_checkout():
    path = pretrained.path_of("vit")
    remedy = pretrained._remedy(path, "vit", None)
    assert f"git checkout -- data/pretrained/{path.name}" in remedy


def test_generate_is_the_same_image_whatever_the_batch(shipped):
    """An image depends on (seed, its label, how many of that label precede it) only: up to the
    rounding of batched matrix products, a sub-batch or another batch gives it again."""
    config, folder, _ = shipped
    whole = pretrained.generate("mar", [3, 7, 3, 0, 9], 3.0, seed=5, config=config, folder=folder)
    threes = pretrained.generate("mar", [3, 3], 3.0, seed=5, config=config, folder=folder)
    mixed = pretrained.generate("mar", torch.tensor([0, 1, 9, 7]), 3.0, seed=5, config=config,
                                folder=folder)
    torch.testing.assert_close(threes, whole[[0, 2]], rtol=0, atol=1e-4)
    torch.testing.assert_close(mixed[[0, 2, 3]], whole[[3, 4, 1]], rtol=0, atol=1e-4)
    assert (whole[0] - whole[2]).abs().max() > 0.1  # the second 3 is another image
