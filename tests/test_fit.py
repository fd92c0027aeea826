"""copkit.train.fit, the one training entry of every model: it resumes bitwise, returns the EMA
weights in eval mode, puts exactly the expected parameters in each AdamW group; and every chapter
trains with the configuration ``python -m copkit config <stage> --profile <p>`` prints."""

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from copkit import cmar, comae, cvit, metrics
from copkit.checkpoint import load_tensors
from copkit.cli import main
from copkit.config import build, config_hash
from copkit.profiles import get_profile
from copkit.recipe import TrainConfig, optimizers
from copkit.stages import EvalCvit, SampleCmar, TrainCmar, TrainComae, TrainCvit
from copkit.train import fit

ROOT = Path(__file__).resolve().parents[1]
PROFILES = ("smoke", "cpu", "gpu")


# ------------------------------------------------------------------------ tiny runs of every recipe
def _data(n: int = 48):
    g = torch.Generator().manual_seed(0)
    x = torch.rand(n, 1, 28, 28, generator=g) * 2 - 1
    y = torch.randint(0, 10, (n,), generator=g)
    orders = torch.stack([torch.randperm(49, generator=g) for _ in range(n)])
    return x, y, orders


def _tiny(name: str):
    """(recipe, model config, data, tag) of a tiny model of each kind."""
    x, y, orders = _data()
    if name == "comae":
        cfg = comae.CoMAEConfig(grid=(4, 4), token_dim=4, enc_width=8, enc_depth=1, enc_heads=2,
                                dec_width=8, dec_depth=1, dec_heads=2, targets_per_image=3)
        tokens = torch.randn(48, 16, 4, generator=torch.Generator().manual_seed(1))
        return comae.RECIPE, cfg, comae.CoMAEData(tokens, tokens[:6]), {"tiny": name}
    if name == "cmar":
        cfg = cmar.MARConfig(width=16, enc_depth=1, dec_depth=1, heads=2, buffer=2, head_width=16,
                             head_depth=1, diffusion_steps=50, diffusion_batch_mul=2)
        return cmar.RECIPE, cfg, cmar.MARData(x, y, "descending", orders), {"tiny": name}
    if name in ("cvit", "pruned"):
        cfg = cvit.CViTConfig(width=16, depth=2, heads=2,
                              train_drop="collapse" if name == "cvit" else "learned")
        return cvit.RECIPE, cfg, cvit.CViTData(x, y, orders), {"tiny": name}
    cfg = metrics.FeatureNetConfig(width=4, features=8)
    return metrics.RECIPE, cfg, metrics.FeatureNetData(x, y), {"tiny": name}


KINDS = ["comae", "cmar", "cvit", "pruned", "featurenet"]


def _tc(steps: int = 5) -> TrainConfig:
    return TrainConfig(steps=steps, batch_size=8, lr=2e-3, warmup_steps=2, ema_decay=0.8, seed=3,
                       log_every=1, ckpt_every=2, eval_every=3)


@pytest.mark.parametrize("name", KINDS)
def test_fit_resumes_bitwise_and_returns_the_ema_model_in_eval_mode(name, tmp_path):
    recipe, cfg, data, tag = _tiny(name)
    tc = _tc()
    full = fit(recipe, cfg, tc, data, tag, tmp_path / "full", progress=False)
    # as if killed at step 3
    cut = fit(recipe, cfg, tc, data, tag, tmp_path / "cut", progress=False, stop_after=3)
    assert load_tensors(cut.folder / "checkpoint.safetensors")[1]["step"] == 3
    resumed = fit(recipe, cfg, tc, data, tag, tmp_path / "cut", progress=False)
    assert (resumed.hash == full.hash
            and resumed.folder.name == full.folder.name == f"{recipe.name}-{full.hash[:8]}")
    full_ckpt, _ = load_tensors(full.folder / "checkpoint.safetensors")
    cut_ckpt, meta = load_tensors(resumed.folder / "checkpoint.safetensors")
    assert meta["step"] == tc.steps and full_ckpt.keys() == cut_ckpt.keys()
    for key in full_ckpt:  # raw weights, EMA weights and optimiser moments
        assert torch.equal(full_ckpt[key], cut_ckpt[key]), key
    strip = lambda h: [{k: v for k, v in r.items() if k != "seconds"} for r in h]  # noqa: E731
    assert strip(resumed.metrics) == strip(full.metrics)
    # what comes back: the EMA weights (not the raw ones), in eval mode, every parameter trainable
    model = resumed.model
    assert not any(m.training for m in model.modules())
    assert all(p.requires_grad for p in model.parameters())
    state = model.state_dict()
    ema = {k[len(f"ema.{recipe.module}."):]: v for k, v in full_ckpt.items()
           if k.startswith(f"ema.{recipe.module}.")}
    raw = {k[len(f"model.{recipe.module}."):]: v for k, v in full_ckpt.items()
           if k.startswith(f"model.{recipe.module}.")}
    assert ema.keys() == state.keys() and all(torch.equal(state[k], ema[k]) for k in state)
    assert any(not torch.equal(ema[k], raw[k]) for k in ema if ema[k].dtype.is_floating_point)


def test_fit_records_the_run_and_fine_tunes_from_an_init(tmp_path):
    import json

    recipe, cfg, data, tag = _tiny("cmar")
    base = fit(recipe, cfg, _tc(2), cmar.MARData(data.images, data.labels), tag, tmp_path,
               progress=False)
    assert base.config["orders"] == "random" and base.config["init"] is None
    recorded = json.loads((base.folder / "config.json").read_text())
    assert recorded["config_hash"] == base.hash == config_hash(base.config)
    ft = fit(recipe, cfg, _tc(2), data, tag, tmp_path, init=(base.hash, base.model.state_dict()),
             progress=False)
    assert (ft.config["init"] == base.hash and ft.config["orders"] == "descending"
            and ft.hash != base.hash)
    # a fine-tune starts from the init's weights: with the same seed, batch and draws, its first
    # loss differs from that of the same run started from fresh weights
    scratch = fit(recipe, cfg, _tc(2), data, tag, tmp_path / "scratch", progress=False)
    assert ft.metrics[0]["loss"] != scratch.metrics[0]["loss"]


@pytest.mark.parametrize("name", ["comae", "cvit"])
def test_a_shipped_run_is_loaded_instead_of_trained(name, tmp_path, monkeypatch):
    import shutil

    from copkit import train as train_module
    from copkit.checkpoint import load_shipped, ship_run, shipped_folder, used
    from copkit.io import DamagedFileError

    recipe, cfg, data, tag = _tiny(name)
    tc = _tc()
    trained = fit(recipe, cfg, tc, data, tag, tmp_path, progress=False)
    # a half-trained run is refused: shipping it would freeze it
    half = fit(recipe, cfg, _tc(8), data, tag, tmp_path, progress=False, stop_after=3)
    with pytest.raises(ValueError, match="at step 3 of 8"):
        ship_run(half.folder, tmp_path / "nowhere")
    dest = ship_run(trained.folder, shipped_folder(tmp_path, recipe.name, trained.config))
    ckpt = trained.folder / "checkpoint.safetensors"
    assert (dest / "weights.safetensors").stat().st_size < ckpt.stat().st_size / 2
    shutil.rmtree(trained.folder)  # a fresh clone: no run folder, the shipped copy only

    def no_training(*args, **kwargs):
        raise AssertionError("a shipped run must not be trained again")

    monkeypatch.setattr(train_module, "train", no_training)
    loaded = fit(recipe, cfg, tc, data, tag, tmp_path, progress=False)
    assert loaded.folder == dest and loaded.hash == trained.hash
    assert loaded.metrics == trained.metrics
    assert not any(m.training for m in loaded.model.modules())
    a, b = trained.model.state_dict(), loaded.model.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert used()["runs"][f"{recipe.name}-{trained.hash[:8]}"] == dest
    # another configuration's file in its place is named as such, not loaded
    foreign = {**trained.config, "note": "another run"}
    shutil.copytree(dest, shipped_folder(tmp_path, recipe.name, foreign))
    with pytest.raises(DamagedFileError, match="written by another configuration"):
        load_shipped(shipped_folder(tmp_path, recipe.name, foreign), foreign, recipe.module,
                     loaded.model)


# ------------------------------------------------------------------------------ the one decay rule
def _groups(recipe, model):
    """{optimiser key: (decayed names, not decayed names)} of the optimisers fit makes."""
    tc = TrainConfig(steps=1, batch_size=1, weight_decay=0.05)
    names = {id(p): n for n, p in model.named_parameters()}
    out = {}
    for key, opt in optimizers(recipe, model, tc).items():
        decay, rest = opt.param_groups  # the decayed group first: the order the checkpoints store
        assert decay["weight_decay"] == 0.05 and rest["weight_decay"] == 0.0
        out[key] = ({names[id(p)] for p in decay["params"]}, {names[id(p)] for p in rest["params"]})
    return out


def test_comae_groups_exempt_the_target_queries_and_split_f_from_g():
    torch.manual_seed(0)
    model = comae.CoMAE(comae.from_profile(get_profile("smoke").comae, 0)[0])
    groups = _groups(comae.RECIPE, model)
    assert list(groups) == ["f", "g"]
    f_names = {n for n, _ in model.f.named_parameters(prefix="f")} | {"log_tau"}
    assert groups["f"][0] | groups["f"][1] == f_names
    assert groups["g"][0] | groups["g"][1] == {n for n, _ in model.g.named_parameters(prefix="g")}
    shapes = dict(model.named_parameters())
    for decay, rest in groups.values():
        # exempt matrices: the target queries only; f.special (1, width) is a matrix and decays
        assert {n for n in rest if shapes[n].ndim >= 2} <= {"f.q", "g.q"}
        assert all(shapes[n].ndim >= 2 for n in decay)
    assert ({"f.q", "log_tau"} <= groups["f"][1] and "g.q" in groups["g"][1]
            and "f.special" in groups["f"][0])
    # the order of f's parameters: the selector's, then the temperature (named_parameters() would
    # put log_tau first); the checkpoints index the optimiser state by it and clipping sums norms in
    # it
    opt = optimizers(comae.RECIPE, model, TrainConfig(steps=1, batch_size=1))["f"]
    assert [p for g in opt.param_groups for p in g["params"]] == (
        [p for p in model.f.parameters() if p.ndim >= 2 and p is not model.f.q]
        + [p for p in model.f.parameters() if p.ndim < 2 or p is model.f.q] + [model.log_tau])
    assert "f.blocks.0.attn.qkv.weight" in groups["f"][0] and "g.head.out.weight" in groups["g"][0]


def test_mar_groups_follow_mars_add_weight_decay():
    """MAR's own rule (misc.add_weight_decay in its repository): no decay for a 1-D parameter, a
    bias or anything with 'diffloss' in its name; everything else decays, the class and position
    embeddings included."""
    torch.manual_seed(0)
    model = cmar.MAR(cmar.from_profile(get_profile("smoke").cmar, 0)[0])
    (decay, rest), = _groups(cmar.RECIPE, model).values()
    mars = {n for n, p in model.named_parameters()
            if not (p.ndim == 1 or n.endswith(".bias") or "diffloss" in n)}
    assert decay == mars and rest == {n for n, _ in model.named_parameters()} - mars
    assert ({"class_emb.weight", "enc_pos", "dec_pos", "diff_pos", "fake_latent",
             "mask_token"} <= decay)


@pytest.mark.parametrize("kind", ["vit", "pruned"])
def test_vit_groups_are_timms(kind):
    """Against timm's own implementation of the convention, on timm's VisionTransformer."""
    from timm.optim import param_groups_weight_decay

    torch.manual_seed(0)
    model = cvit.build_model(cvit.from_profile(get_profile("smoke").cvit, 0, kind=kind)[0])
    (decay, rest), = _groups(cvit.RECIPE, model).values()
    prefix = "vit." if kind == "pruned" else ""
    assert ({n for n, p in model.named_parameters() if p.ndim >= 2}
            - decay == {f"{prefix}pos_embed", f"{prefix}cls_token"})
    names = {id(p): n for n, p in model.named_parameters()}
    timm_groups = param_groups_weight_decay(model, 0.05,
                                            no_weight_decay_list=model.no_weight_decay())
    timm_decay = {names[id(p)] for g in timm_groups if g["weight_decay"] for p in g["params"]}
    assert decay == timm_decay and rest == set(names.values()) - timm_decay


def test_feature_net_decays_its_matrices_and_not_its_biases():
    model = metrics.FeatureNet()
    (decay, rest), = _groups(metrics.RECIPE, model).values()
    assert (decay == {"body.0.weight", "body.2.weight", "body.4.weight", "body.7.weight",
                      "head.weight"})
    assert rest == {"body.0.bias", "body.2.bias", "body.4.bias", "body.7.bias", "head.bias"}


# --------------------------------------------------------------- chapters train what the CLI prints
_CONSTRUCTORS = {"TrainConfig", "CoMAEConfig", "MARConfig", "CViTConfig", "FeatureNetConfig"}


def _call_name(call: ast.Call) -> str | None:
    f = call.func
    return f.id if isinstance(f, ast.Name) else f.attr if isinstance(f, ast.Attribute) else None


_SCOPES = (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda, ast.ClassDef)
_COMPREHENSIONS = (ast.ListComp, ast.SetComp, ast.DictComp, ast.GeneratorExp)


def _scope_nodes(scope: ast.AST, stop=_SCOPES):
    """The nodes of one scope (a module or a function), not those inside the ``stop`` nodes in
    it."""
    todo = list(ast.iter_child_nodes(scope))
    while todo:
        node = todo.pop()
        yield node
        if not isinstance(node, stop):
            todo.extend(ast.iter_child_nodes(node))


def _bindings(scope: ast.AST) -> tuple[set[str], set[str]]:
    """(names bound in ``scope`` by ``a, b = ...from_profile(...)``, names bound there any other
    way)."""
    ok, other = set(), set()
    if isinstance(scope, (ast.FunctionDef, ast.AsyncFunctionDef)):
        other |= {a.arg for a in scope.args.args + scope.args.kwonlyargs}
    # a comprehension's names stay inside it
    for node in _scope_nodes(scope, _SCOPES + _COMPREHENSIONS):
        if isinstance(node, ast.Assign):
            targets, value = node.targets, node.value
        elif isinstance(node, (ast.AnnAssign, ast.AugAssign, ast.For, ast.NamedExpr)):
            targets, value = [node.target], None
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            other.add(node.name)
            continue
        else:
            continue
        for t in targets:
            names = {n.id for n in ast.walk(t) if isinstance(n, ast.Name)}
            from_profile = (isinstance(t, ast.Tuple) and isinstance(value, ast.Call)
                            and _call_name(value) == "from_profile")
            (ok if from_profile else other).update(names)
    return ok, other


@pytest.mark.parametrize("chapter", sorted(p.name for p in (ROOT / "chapters").glob("*.py")))
def test_chapters_train_only_what_from_profile_makes(chapter):
    """No chapter builds a model or training configuration of its own, and every ``fit`` trains a
    (model config, TrainConfig) pair unpacked straight from a ``from_profile`` call."""
    tree = ast.parse((ROOT / "chapters" / chapter).read_text())
    calls = [n for n in ast.walk(tree) if isinstance(n, ast.Call)]
    built = sorted({_call_name(c) for c in calls} & _CONSTRUCTORS)
    assert not built, (
        f"{chapter} builds {built} itself; take the configuration from the model's from_profile")
    scopes = ([tree]
              + [n for n in ast.walk(tree)
                 if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))])
    for scope in scopes:
        ok, other = _bindings(scope)
        for call in (c for c in _scope_nodes(scope) if isinstance(c, ast.Call)
                     and _call_name(c) == "fit"):
            for arg in call.args[1:3]:
                assert isinstance(arg, ast.Name) and arg.id in ok and arg.id not in other, (
                    f"{chapter} line {call.lineno}: fit's configuration {ast.unparse(arg)!r} does "
                    "not come (only) from `cfg, tc = from_profile(...)` in the same scope")


def _chapter_variants(p) -> list[tuple[str, object, dict]]:
    """(stage, the model module, variant) of every training a chapter runs at profile ``p``."""
    # the profile's L_c weights (Chapter 2), 0.01 (Chapter 3's photo CoMAE), and the weights of
    # Chapter 2's mirrored (0.1) and planted (0, 0.01, 0.1, 1) experiments
    comae_runs = [("train-comae", comae, {"lambda_c": lam, "experiment": e})
                  for lam in sorted(set(p.comae.lambdas) | {0.0, 0.01, 0.1, 1.0})
                  for e in comae.EXPERIMENTS]
    return (comae_runs + [("train-cmar", cmar, {"phase": ph}) for ph in cmar.PHASES]
            + [("train-cvit", cvit, {"kind": k}) for k in cvit.MODEL_KINDS])


_STAGE_CLASS = {"train-comae": TrainComae, "train-cmar": TrainCmar, "train-cvit": TrainCvit}
_SIZES = {"train-comae": "comae", "train-cmar": "cmar", "train-cvit": "cvit"}


def _printed(capsys, *argv: str):
    assert main(["config", *argv]) == 0
    return yaml.safe_load(capsys.readouterr().out)


@pytest.mark.parametrize("profile", PROFILES)
def test_cli_config_is_what_the_chapters_train(profile, capsys):
    """For every training a chapter runs, ``python -m copkit config <stage> --profile <p> --variant
    ...`` prints (read back strictly) the model and training configuration of the model's
    ``from_profile``, the only source of the chapters' configurations (test above): equal, and
    equal in hash, which names the run folders."""
    p = get_profile(profile)
    for seed in (0, 2):
        for stage, module, variant in _chapter_variants(p):
            flags = [f"--variant={k}={v}" for k, v in variant.items()]
            cfg = build(_STAGE_CLASS[stage],
                        _printed(capsys, stage, "--profile", profile, "--seed", str(seed), *flags))
            model, tc = module.from_profile(getattr(p, _SIZES[stage]), seed, **variant)
            assert (cfg.model, cfg.train) == (model, tc), (stage, variant)
            assert (config_hash(cfg.model) == config_hash(model)
                    and config_hash(cfg.train) == config_hash(tc))
            assert cfg.train.seed == seed
    sample = build(SampleCmar, _printed(capsys, "sample-cmar", "--profile", profile))
    assert (sample.steps, sample.cfg_scale,
            sample.diffusion_steps) == (p.cmar.gen_steps, p.cmar.cfg_scale, p.cmar.diffusion_steps)
    evaluation = build(EvalCvit, _printed(capsys, "eval-cvit", "--profile", profile))
    assert (evaluation.ratios, evaluation.data.limit) == (p.cvit.ratios, p.cvit.test_images)


# ------------------------------------------------------------------------------ one run, one hash
def _bound(scope: ast.AST, name: str) -> ast.AST | None:
    """The value ``name`` is bound to in ``scope`` (``name = value``, or an element of ``a, name =
    value``: then the call itself), or the default of a parameter ``name``; None if neither."""
    if isinstance(scope, (ast.FunctionDef, ast.AsyncFunctionDef)):
        args = scope.args.args[len(scope.args.args) - len(scope.args.defaults):]
        for arg, default in zip(args, scope.args.defaults):
            if arg.arg == name:
                return default
    for node in _scope_nodes(scope, _SCOPES + _COMPREHENSIONS):
        if isinstance(node, ast.Assign):
            for t in node.targets:
                if (isinstance(t, ast.Name) and t.id == name) or (
                        isinstance(t, ast.Tuple)
                        and any(isinstance(e, ast.Name) and e.id == name for e in t.elts)):
                    return node.value
    return None


def _comes_from(tree: ast.Module, scope: ast.AST, expr: ast.AST, call: str) -> bool:
    """Whether ``expr`` is a call of ``call``, or a name bound (in ``scope`` or at module level)
    to one, or to a conditional expression of such calls."""
    if isinstance(expr, ast.Name):
        value = _bound(scope, expr.id) or _bound(tree, expr.id)
        return value is not None and _comes_from(tree, tree, value, call)
    if isinstance(expr, ast.Call):
        return _call_name(expr) == call
    return False


@pytest.mark.parametrize("chapter", ["02_comae.py", "04_cmar.py", "05_cvit.py"])
def test_chapters_name_their_data_and_base_model_as_the_stages_do(chapter):
    """What the test below rebuilds of each chapter is what the chapter does: its Fashion-MNIST
    trainings describe their data with the model module's ``fashion_mnist_data`` (the function the
    stages call), and its fine-tunes start from ``pretrained.base``, whose hash names the run."""
    tree = ast.parse((ROOT / "chapters" / chapter).read_text())
    scopes = ([tree]
              + [n for n in ast.walk(tree)
                 if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))])
    fits = [(scope, c) for scope in scopes for c in _scope_nodes(scope)
            if isinstance(c, ast.Call) and _call_name(c) == "fit"]
    assert fits
    for scope, call in fits:
        tag = call.args[4]
        assert _comes_from(tree, scope, tag, "fashion_mnist_data"), (
            f"{chapter} line {call.lineno}: the data description {ast.unparse(tag)!r} is not "
            "fashion_mnist_data's")
        init = next((k.value for k in call.keywords if k.arg == "init"), None)
        if init is not None:
            assert isinstance(init, ast.Tuple) and _comes_from(tree, scope, init.elts[0], "base"), (
                f"{chapter} line {call.lineno}: the run it fine-tunes is not named by "
                "pretrained.base's hash")


def _chapter_runs(p, seed: int):
    """(stage, variant, run configuration) of every Fashion-MNIST training of Chapters 2, 4 and 5
    at profile ``p``, made by the calls those chapters make (the test above checks that they make
    them): the model's from_profile, its fashion_mnist_data, the shipped CoMAE that ranked the
    orders (copkit.orders.dataset_orders) and the shipped base model of the fine-tunes."""
    from copkit import pretrained

    comae_hash = pretrained.run_hash("comae", p.pretrain)
    for lam in sorted({*p.comae.lambdas, *p.comae.sweep_lambdas, 0.01}):
        model, tc = comae.from_profile(p.comae, seed, lambda_c=lam)
        yield "train-comae", {"lambda_c": lam}, comae.RECIPE.run_config(model, tc, None,
                                                                        comae.fashion_mnist_data(p.comae))
    model, tc = cmar.from_profile(p.cmar, seed, phase="finetune")
    base = pretrained.run_hash("mar", p.pretrain)
    images = min(60000, p.cmar.train_images or 55000)  # len(load_fashion_mnist("train", limit=...))
    for kind in ("random", "descending", "ascending", *cmar.ONE_ORDER_KINDS):
        data = cmar.MARData(torch.zeros(0), torch.zeros(0), kind)
        yield "train-cmar", {"kind": kind}, cmar.RECIPE.run_config(
            model, tc, data, cmar.fashion_mnist_data(images, comae_hash), base)
    base = pretrained.run_hash("vit", p.pretrain)
    images = min(60000, p.cvit.train_images or 60000)
    for kind in cvit.MODEL_KINDS:
        model, tc = cvit.from_profile(p.cvit, seed, kind=kind)
        yield "train-cvit", {"kind": kind}, cvit.RECIPE.run_config(
            model, tc, None,
            cvit.fashion_mnist_data(images, comae_hash if kind == "cvit" else None), base)


@pytest.mark.fashion_mnist
@pytest.mark.parametrize("profile", PROFILES)
def test_every_chapter_training_is_the_run_its_stage_prints_and_trains(profile, capsys):
    """One run, one hash: for every training stage, every profile and every Fashion-MNIST training
    a chapter runs, the hash of the whole run configuration (model, training, data, the orders'
    CoMAE, the base model fine-tuned) equals the run ``python -m copkit config <stage> --profile
    <p>`` prints, and the run the printed file trains (copkit.stages.run_config). The
    configurations of the shipped base models (cpu and gpu) are pinned to their files by
    test_pretrained; at smoke they name what make smoke trains."""
    from copkit.stages import run_config

    p = get_profile(profile)
    seen = set()
    for seed in (0, 2):
        for stage, variant, chapter_run in _chapter_runs(p, seed):
            flags = [f"--variant={k}={v}" for k, v in variant.items()]
            assert main(["config", stage, "--profile", profile, "--seed", str(seed), *flags]) == 0
            out = capsys.readouterr().out
            printed = re.search(r"^# trains the chapter's run (\S+) \(run hash ([0-9a-f]{64})\)$",
                                out, re.M)
            cfg = build(_STAGE_CLASS[stage], yaml.safe_load(out))
            assert (printed
                    and printed[2] == config_hash(chapter_run)
                    == config_hash(run_config(cfg))), (stage, variant)
            assert printed[1].endswith(f"{chapter_run['model']}-{printed[2][:8]}")
            seen.add(stage)
    assert seen == set(_STAGE_CLASS)


def test_the_stages_default_to_the_chapters_fine_tunes():
    """What ``python -m copkit train-cmar --profile p`` and ``train-cvit`` train without a variant:
    Chapter 4's CMAR and Chapter 5's CViT, fine-tuned from the shipped base models on the shipped
    CoMAE's orders; MAR from scratch needs none of them."""
    from copkit.stages import chapter_config

    mar = chapter_config("train-cmar", "smoke")
    assert (mar.kind, mar.init, mar.orders,
            mar.pretrain) == ("descending", "pretrained:mar", "pretrained:comae", "smoke")
    assert mar.data.limit == get_profile("smoke").cmar.train_images
    # the held-out 5,000 are not trained on
    assert chapter_config("train-cmar", "cpu").data.limit == 55000
    control = chapter_config("train-cmar", "cpu", kind="random")
    # Chapter 4 names the orders' CoMAE
    assert (control.kind, control.orders) == ("random", "pretrained:comae")
    scratch = chapter_config("train-cmar", "cpu", phase="mar")
    assert (scratch.kind, scratch.init, scratch.orders) == ("random", None, None)
    vit = chapter_config("train-cvit", "cpu", kind="rvit")
    assert (vit.init, vit.orders, vit.pretrain) == ("pretrained:vit", None, "full")
    comae_stage = chapter_config("train-comae", "smoke")
    assert (comae_stage.data.limit, comae_stage.val_data.start) == (1000, 55000)


def test_cvit_stage_and_chapter_agree_on_logging_and_checkpoints(capsys):
    """The drift this replaced: the chapter trained CViT with log_every=25, ckpt_every=200, the
    stage with the defaults. The printed file now holds the chapter's values, as a real process
    prints it."""
    out = subprocess.run([sys.executable, "-m", "copkit", "config", "train-cvit", "--profile",
                          "cpu", "--variant", "kind=rvit"], capture_output=True, text=True,
                         cwd=ROOT, check=True).stdout
    cfg = build(TrainCvit, yaml.safe_load(out))
    assert (cfg.train.log_every, cfg.train.ckpt_every) == (25, 200)
    assert cfg.model.train_drop == "random" and cfg.orders is None


def test_unknown_variant_is_refused_with_the_known_ones(capsys):
    assert main(["config", "train-cvit", "--profile", "smoke", "--variant", "knd=vit"]) == 2
    assert "train-cvit has no variant knd; its variants: kind" in capsys.readouterr().err
    assert main(["config", "train-cmar", "--profile", "smoke", "--variant", "phase"]) == 2
    assert "write KEY=VALUE" in capsys.readouterr().err


def test_a_variant_given_where_the_seed_goes_is_refused():
    """The old CoMAE signature was from_profile(sizes, lambda_c, seed): 0.01 in the seed's place
    must not silently train with seed 0.01."""
    with pytest.raises(TypeError, match="seed must be an integer, got 0.01"):
        comae.from_profile(get_profile("smoke").comae, 0.01)
