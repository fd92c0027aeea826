"""The command line and its configuration files: strict loading, every stage end to end on a tiny
image folder made here, resuming, and the profiles as files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from copkit.config import ConfigError, build, dump_yaml, load, read_config


def make_image_folder(root: Path, classes=("cat", "dog"), per_class=(12, 4), size=(40, 36)) -> Path:
    """<root>/{train,val}/<class>/<i>.png, random RGB images of another size than the crop."""
    from PIL import Image

    rng = np.random.default_rng(0)
    for split, n in zip(("train", "val"), per_class):
        for c in classes:
            d = root / split / c
            d.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                Image.fromarray((rng.random((*size, 3))
                                 * 255).astype(np.uint8)).save(d / f"{i}.png")
    return root


TINY_COMAE = """
val_images = 4
data_dir = "{out}"
device = "cpu"
[data]
source = "imagefolder"
root = "{imgs}"
image_size = 32
[tokenizer]
kind = "pixels"
patch = 8
[model]
grid = [4, 4]
token_dim = 192
enc_width = 16
enc_depth = 1
enc_heads = 2
dec_width = 16
dec_depth = 1
dec_heads = 2
targets_per_image = 4
[train]
steps = {steps}
batch_size = 4
lr = 0.01
ema_decay = 0.5
ckpt_every = 2
log_every = 1
"""


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


@pytest.fixture(scope="module")
def imgs(tmp_path_factory) -> Path:
    return make_image_folder(tmp_path_factory.mktemp("folder"))


# ---------------------------------------------------------------------------------- config files
def test_unknown_and_ill_typed_keys_are_named(tmp_path):
    from copkit.stages import TrainComae

    good = TINY_COMAE.format(out=tmp_path, imgs=tmp_path, steps=2)
    assert load(TrainComae, write(tmp_path / "ok.toml", good)).model.grid == (4, 4)
    with pytest.raises(ConfigError,
                       match=r"model\.enc_widht: unknown key; known keys: grid, token_dim"):
        load(TrainComae, write(tmp_path / "a.toml", good.replace("enc_width", "enc_widht")))
    with pytest.raises(ConfigError, match=r"train\.steps: expected int, got str '2'"):
        load(TrainComae, write(tmp_path / "b.toml", good.replace("steps = 2", 'steps = "2"')))
    with pytest.raises(ConfigError, match=r"train\.lr: expected float, got bool"):
        load(TrainComae, write(tmp_path / "c.toml", good.replace("lr = 0.01", "lr = true")))
    with pytest.raises(ConfigError, match=r"model\.grid: expected a list of 2 values, got 3"):
        load(TrainComae, write(tmp_path / "d.toml", good.replace("grid = [4, 4]", "grid = [4, 4, "
                                                                                  "4]")))
    with pytest.raises(ConfigError, match=r"train\.batch_size: required key is missing"):
        load(TrainComae, write(tmp_path / "e.toml", good.replace("batch_size = 4\n", "")))
    with pytest.raises(ConfigError, match=r"data: source must be 'fashion-mnist' or 'imagefolder'"):
        load(TrainComae, write(tmp_path / "f.toml", good.replace('"imagefolder"', '"imagenet"')))
    with pytest.raises(ConfigError, match="not valid TOML"):
        load(TrainComae, write(tmp_path / "g.toml", good + "\n[model\n"))
    with pytest.raises(ConfigError, match="must end in .toml, .yaml or .yml"):
        read_config(write(tmp_path / "h.json", "{}"))


def test_yaml_and_toml_give_the_same_config(tmp_path):
    import tomllib

    from copkit.stages import TrainComae

    toml_text = TINY_COMAE.format(out=tmp_path, imgs=tmp_path, steps=2)
    from_toml = load(TrainComae, write(tmp_path / "c.toml", toml_text))
    from_yaml = load(TrainComae, write(tmp_path / "c.yaml", dump_yaml(from_toml)))
    assert from_yaml == from_toml
    assert build(TrainComae, tomllib.loads(toml_text)) == from_toml


def test_profiles_are_files_read_strictly(tmp_path):
    from copkit.profiles import _FILES, PROFILES, get_profile, load_profile

    for name, profile in PROFILES.items():
        assert load_profile(_FILES / f"{name}.yaml") == profile
    mine = tmp_path / "mine.yaml"
    mine.write_text((_FILES / "smoke.yaml").read_text().replace("steps: 20\n", "steps: 7\n", 1))
    assert get_profile(str(mine)).comae.steps == 7
    mine.write_text((_FILES / "smoke.yaml").read_text().replace("sigma:", "sigmaa:"))
    with pytest.raises(ConfigError, match=r"comae\.sigmaa: unknown key"):
        get_profile(str(mine))


def test_config_command_prints_what_the_profile_makes(capsys):
    import yaml

    from copkit.cli import main
    from copkit.comae import from_profile
    from copkit.profiles import get_profile
    from copkit.stages import TrainComae

    assert main(["config", "train-comae", "--profile", "smoke"]) == 0
    cfg = build(TrainComae, yaml.safe_load(capsys.readouterr().out))
    p = get_profile("smoke").comae
    # the chapter's own configuration
    assert (cfg.model, cfg.train) == from_profile(p, 0, lambda_c=0.01)


def test_cli_refuses_a_bad_file_with_the_key(tmp_path, capsys):
    from copkit.cli import main

    bad = write(tmp_path / "bad.toml", "[model]\nwidht = 3\n[train]\nsteps = 1\nbatch_size = 2\n")
    assert main(["train-cvit", "--config", str(bad)]) == 2
    assert "model.widht: unknown key" in capsys.readouterr().err


# ---------------------------------------------------------------------------------- the stages
def test_every_stage_on_an_image_folder(tmp_path, imgs):
    from copkit.checkpoint import read_metrics
    from copkit.cli import main
    from copkit.imagefolder import ImageFolderImages
    from copkit.orders import load_orders

    out = tmp_path / "out"
    assert (main(["train-comae", "--config",
                  str(write(tmp_path / "c.toml",
                            TINY_COMAE.format(out=out, imgs=imgs, steps=4)))]) == 0)
    (comae_run,) = (out / "runs").glob("comae-*")
    hist = read_metrics(comae_run / "metrics.jsonl")
    assert [r["step"] for r in hist if not r.get("eval")] == [0, 1, 2, 3]
    assert all(np.isfinite(r["loss"]) for r in hist if not r.get("eval"))

    data = f"data: {{source: imagefolder, root: {imgs}, image_size: 32}}\n"
    write(tmp_path / "r.yaml",
          f"comae_run: {comae_run}\nout: {out}/orders.npz\ndevice: cpu\nshard_size: "
          f"10\n{data}tokenizer: {{kind: pixels, patch: 8}}\n")
    assert main(["rank", "--config", str(tmp_path / "r.yaml")]) == 0
    orders, split, digest = load_orders(out / "orders.npz")
    assert orders.shape == (24, 16) and (np.sort(orders, 1) == np.arange(16)).all()
    assert digest == json.loads((comae_run / "config.json").read_text())["config_hash"]

    write(tmp_path / "m.yaml",
          f"data_dir: {out}\ndevice: cpu\nkind: descending\norders: "
          f"{out}/orders.npz\n{data}tokenizer: {{kind: pixels, patch: 8}}\nmodel: {{grid: [4, 4], "
          "token_dim: 192, n_classes: 2, width: 16, enc_depth: 1, dec_depth: 1, heads: 2, "
          "head_width: 16, head_depth: 1}\ntrain: {steps: 3, batch_size: 4, lr: 0.001}\n")
    assert main(["train-cmar", "--config", str(tmp_path / "m.yaml")]) == 0
    (mar_run,) = (out / "runs").glob("mar-*")
    write(tmp_path / "s.yaml",
          f"mar_run: {mar_run}\nout: {out}/samples.npz\ntokenizer: {{kind: pixels, patch: "
          "8}\nper_class: 2\nsteps: 4\ndiffusion_steps: 3\ndevice: cpu\n")
    assert main(["sample-cmar", "--config", str(tmp_path / "s.yaml")]) == 0
    with np.load(out / "samples.npz") as z:
        assert z["images"].shape == (4, 3, 32, 32) and z["images"].dtype == np.uint8
        assert z["labels"].tolist() == [0, 0, 1, 1]
    assert (out / "samples.png").is_file()

    write(tmp_path / "v.yaml", f"data_dir: {out}\ndevice: cpu\norders: {out}/orders.npz\n{data}"
          "model: {width: 16, depth: 2, heads: 2, img_size: 32, patch: 8, classes: 2, in_chans: "
          "3}\ntrain: {steps: 3, batch_size: 4, lr: 0.001}\n")
    assert main(["train-cvit", "--config", str(tmp_path / "v.yaml")]) == 0
    (cvit_run,) = (out / "runs").glob("cvit-*")
    write(tmp_path / "e.yaml",
          f"cvit_run: {cvit_run}\nout: {out}/eval.json\ndevice: cpu\norder: random\nratios: "
          f"6\ndata: {{source: imagefolder, root: {imgs}, split: val, image_size: 32}}\n")
    assert main(["eval-cvit", "--config", str(tmp_path / "e.yaml")]) == 0
    res = json.loads((out / "eval.json").read_text())
    assert res["kept"][0] == 16 and len(res["top1"]) == len(res["ratios"]) >= 6
    assert 0.0 <= res["auc"] <= 100.0
    val = ImageFolderImages(imgs / "val", 32)
    assert len(val) == 8 and val.labels.tolist() == [0] * 4 + [1] * 4


@pytest.mark.fashion_mnist
def test_a_stage_fine_tunes_a_shipped_base_model_into_the_run_its_config_names(tmp_path, capsys):
    """``init: pretrained:vit`` starts from the shipped base ViT of the stage's pretraining config
    (here a tiny one, shipped into <data_dir>/pretrained as make smoke does): the run folder is the
    one run_config names, the run records the base's hash, and at learning rate 0 the trained
    weights are the base's. ``--init none`` trains the same configuration from scratch, another
    run."""
    import dataclasses

    import yaml

    from copkit import pretrained
    from copkit.checkpoint import load_weights
    from copkit.cli import main
    from copkit.config import config_hash
    from copkit.cvit import build_model
    from copkit.stages import chapter_config, run_config, run_stage

    base = yaml.safe_load(pretrained.SMOKE_CONFIG.read_text())
    tiny = write(tmp_path / "tiny.yaml", yaml.safe_dump({"name": "tiny", "vit": base["vit"],
                                                        "data": {"train_images": 128,
                                                                 "val_images": 64,
                                                                 "test_images": 64}}))
    data_dir = tmp_path / "data"
    pretrained.pretrain(["vit"], tiny, data_dir, data_dir / "pretrained", progress=False)
    cfg = chapter_config("train-cvit", "smoke", kind="vit", data_dir=str(data_dir))
    cfg = dataclasses.replace(cfg, pretrain=str(tiny), device="cpu",
                              data=dataclasses.replace(cfg.data, limit=128),
                              train=dataclasses.replace(cfg.train, steps=2, lr=0.0, warmup_steps=0))
    assert cfg.init == "pretrained:vit"
    folder = run_stage("train-cvit", cfg)
    meta = json.loads((folder / "config.json").read_text())
    assert (folder.name == f"cvit-{config_hash(run_config(cfg))[:8]}"
            and meta["config_hash"] == config_hash(run_config(cfg)))
    assert meta["config"]["init"] == pretrained.run_hash("vit", tiny)
    trained = build_model(cfg.model)
    load_weights(folder, "model", trained)
    shipped = pretrained.load("vit", config=tiny, folder=data_dir / "pretrained")
    assert all(torch.equal(a, b)
               for a, b in zip(trained.state_dict().values(), shipped.state_dict().values()))
    capsys.readouterr()
    # the base ViT's pretraining run and the fine-tune
    before = set((data_dir / "runs").glob("cvit-*"))
    assert (main(["train-cvit", "--config", str(write(tmp_path / "v.yaml", dump_yaml(cfg))),
                  "--init", "none"]) == 0)
    (scratch,) = set((data_dir / "runs").glob("cvit-*")) - before
    assert "init" not in json.loads((scratch / "config.json").read_text())["config"]


@pytest.mark.fashion_mnist
def test_a_profile_cmar_stage_trains_on_the_shipped_comaes_orders_from_the_shipped_mar(tmp_path):
    """train-cmar as Chapter 4 runs it: ``orders: pretrained:comae`` ranks the training images with
    the shipped CoMAE (as the chapter's copkit.orders.dataset_orders does), ``init: pretrained:mar``
    starts from the shipped MAR, and both hashes name the run, in the folder run_config names."""
    import dataclasses

    import yaml

    from copkit import pretrained
    from copkit.config import config_hash
    from copkit.stages import chapter_config, run_config, run_stage

    base = yaml.safe_load(pretrained.SMOKE_CONFIG.read_text())
    tiny = write(tmp_path / "tiny.yaml", yaml.safe_dump({
        "name": "tiny", "classifier": base["classifier"], "mar": base["mar"],
        "comae": base["comae"],
        "data": {"train_images": 128, "val_images": 64, "test_images": 64}}))
    data_dir = tmp_path / "data"
    pretrained.pretrain(None, tiny, data_dir, data_dir / "pretrained", progress=False)
    cfg = chapter_config("train-cmar", "smoke", data_dir=str(data_dir))
    cfg = dataclasses.replace(cfg, pretrain=str(tiny), device="cpu",
                              data=dataclasses.replace(cfg.data, limit=64),
                              train=dataclasses.replace(cfg.train, steps=2))
    assert (cfg.kind, cfg.init, cfg.orders) == ("descending", "pretrained:mar", "pretrained:comae")
    folder = run_stage("train-cmar", cfg)
    run = json.loads((folder / "config.json").read_text())
    assert (folder.name == f"mar-{config_hash(run_config(cfg))[:8]}"
            and run["config_hash"] == config_hash(run_config(cfg)))
    comae_hash = pretrained.run_hash("comae", tiny)
    assert run["config"]["init"] == pretrained.run_hash("mar", tiny)
    assert run["config"]["data"] == {"dataset": "fashion-mnist", "split": "train", "images": 64,
                                     "patch": 4, "orders_by_comae": comae_hash}
    # the chapters' cache of the orders
    assert (data_dir / f"orders-{comae_hash[:8]}-64-0.npz").is_file()


@pytest.mark.fashion_mnist
def test_data_start_skips_the_first_images():
    """The chapters validate on Fashion-MNIST's held-out training images (55,000 on):
    ``start`` names them for the stages, and ``limit`` counts after it."""
    from copkit.data import load_fashion_mnist
    from copkit.stages import DataConfig, load_images

    x, y, _ = load_images(DataConfig(start=55_000, limit=16))
    all_x, all_y = load_fashion_mnist("train")
    assert torch.equal(x, all_x[55_000:55_016]) and torch.equal(y, all_y[55_000:55_016])
    assert len(load_images(DataConfig(start=59_990))[0]) == 10
    assert (DataConfig(limit=100).fashion_mnist_train() == 100
            and DataConfig(start=5).fashion_mnist_train() is None)
    with pytest.raises(ValueError, match="start must be >= 0, and 0 for an image folder"):
        DataConfig(source="imagefolder", start=3)


def test_train_stage_resumes_to_the_same_weights(tmp_path, imgs, monkeypatch):
    import copkit.train as train_mod
    from copkit.checkpoint import load_tensors, read_metrics
    from copkit.cli import main

    def run(folder: str) -> Path:
        assert main(["train-comae", "--config",
                     str(write(tmp_path / f"{folder}.toml", TINY_COMAE.format(
            out=tmp_path / folder, imgs=imgs, steps=4)))]) == 0
        (run_dir,) = (tmp_path / folder / "runs").glob("comae-*")
        return run_dir

    whole = run("a")
    real = train_mod.train
    with monkeypatch.context() as m:  # the first attempt is killed after 2 of 4 steps
        m.setattr(train_mod, "train", lambda *a, **k: real(*a, **{**k, "stop_after": 2}))
        stopped = run("b")
    assert max(r["step"] for r in read_metrics(stopped / "metrics.jsonl")) < 2
    resumed = run("b")  # started again: continues from the checkpoint at step 2
    assert ([r["step"] for r in read_metrics(resumed / "metrics.jsonl")
             if not r.get("eval")] == [0, 1, 2, 3])
    a, _ = load_tensors(whole / "checkpoint.safetensors")
    b, _ = load_tensors(resumed / "checkpoint.safetensors")
    for k in a:
        if k.startswith(("model.", "ema.")):
            torch.testing.assert_close(b[k], a[k], rtol=0, atol=1e-6)


def test_the_paper_configs_load_into_their_stages():
    from copkit.stages import STAGES

    folder = Path(__file__).resolve().parents[1] / "configs" / "paper"
    files = sorted(folder.glob("*.toml"))
    assert {f.stem
            for f in files} >= {"train-comae", "rank", "train-mar", "train-cmar", "sample-cmar",
                                "train-cvit",
                                       "eval-cvit"}
    for f in files:
        cls = STAGES["train-cmar" if f.stem == "train-mar" else f.stem][0]
        cfg = load(cls, f)
        if hasattr(cfg, "model") and hasattr(cfg.model, "grid"):
            # the KL-16 grid: N = 256
            assert tuple(cfg.model.grid) == (16, 16) and cfg.model.token_dim == 16


# ----------------------------------------------------------------------- one-line errors, fast help
def _pickled_with_code(path: Path) -> Path:
    class Evil:
        def __reduce__(self):
            return (print, ("this ran",))

    torch.save({"model": Evil()}, path)
    return path


CLI_ERRORS = [
    ("an unknown profile", lambda tmp: ["train-comae", "--profile", "nosuch"],
     r"unknown profile 'nosuch'; choose one of smoke"),
    ("a bogus variant",
     lambda tmp: ["train-comae", "--profile", "smoke", "--variant", "experiment=bogus"],
     r"unknown CoMAE experiment 'bogus'; use one of main"),
    ("a bogus variant of config",
     lambda tmp: ["config", "train-comae", "--profile", "smoke", "--variant", "experiment=bogus"],
     r"unknown CoMAE experiment 'bogus'"),
    ("an unknown device", lambda tmp: ["rank", "--profile", "cpu", "--device", "nosuch"],
     r"--device nosuch: unknown device 'nosuch'; use auto, cpu"),
    ("convert-vae on a missing file",
     lambda tmp: ["convert-vae", str(tmp / "kl16.ckpt"), str(tmp / "vae.safetensors")],
     r"kl16\.ckpt does not exist"),
    ("convert-vae on a pickle with code",
     lambda tmp: ["convert-vae", str(_pickled_with_code(tmp / "evil.ckpt")),
                  str(tmp / "vae.safetensors")],
     r"evil\.ckpt cannot be read as tensors only \(it refers to GLOBAL .*print\)"),
    ("convert-vae on garbage",
     lambda tmp: ["convert-vae", str(write(tmp / "junk.ckpt", "not a checkpoint")),
                  str(tmp / "vae.safetensors")],
     r"junk\.ckpt cannot be read as tensors only"),
    ("an unknown pretrain name", lambda tmp: ["pretrain", "--only", "nope", "--config", "smoke"],
     r"nope not in"),
]
if not torch.cuda.is_available():
    CLI_ERRORS.append(("cuda without CUDA",
                       lambda tmp: ["rank", "--profile", "cpu", "--device", "cuda"],
                       r"--device cuda: device 'cuda' was asked for but torch sees no CUDA GPU"))


@pytest.mark.parametrize("what, argv, message", CLI_ERRORS, ids=[c[0] for c in CLI_ERRORS])
def test_a_command_line_error_is_one_line_with_status_2(tmp_path, capsys, monkeypatch, what, argv,
                                                        message):
    import re

    from copkit.cli import main

    monkeypatch.delenv("COPKIT_DEBUG", raising=False)
    args = argv(tmp_path)
    assert main(args) == 2
    captured = capsys.readouterr()
    assert "this ran" not in captured.out
    (line,) = captured.err.splitlines()
    assert line.startswith("error: ") and re.search(message, line), line
    assert not (tmp_path / "vae.safetensors").exists()
    # --debug (or COPKIT_DEBUG=1): the exception and its traceback
    with pytest.raises((ValueError, OSError)):
        main(["--debug", *args])
    monkeypatch.setenv("COPKIT_DEBUG", "1")
    with pytest.raises((ValueError, OSError)):
        main(args)


def test_debug_goes_after_the_command_too(capsys):
    from copkit.cli import main

    with pytest.raises(ValueError, match="unknown profile"):
        main(["train-comae", "--profile", "nosuch", "--debug"])


def test_help_is_fast_plain_and_imports_no_torch():
    """`python -m copkit --help` imports neither torch nor the models (it answered in 6-12 s), and
    its texts are plain words, not docstring markup."""
    import subprocess
    import sys

    code = ("import sys, runpy; sys.argv = ['copkit', '--help']\n"
            "try:\n    runpy.run_module('copkit', run_name='__main__')\nexcept SystemExit:\n    "
            "pass\nprint('TORCH' if 'torch' in sys.modules else 'NO TORCH')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60).stdout
    assert out.strip().endswith("NO TORCH") and "train-comae" in out and "``" not in out
    from copkit.cli import _STAGES, _parser
    from copkit.stages import STAGES

    assert list(_STAGES) == list(STAGES)  # the help's list of stages is the library's
    sub = next(a for a in _parser()._actions if a.dest == "command")
    for name, p in sub.choices.items():
        assert "``" not in p.format_help() and ":mod:" not in p.format_help(), name
