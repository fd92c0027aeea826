"""Every public entry refuses bad input with a ValueError that names the parameter and what is
allowed, instead of a raw torch error frames deep or, worse, a silently wrong result. One table per
entry: (what is wrong, the call's arguments, a pattern the message must match)."""

from __future__ import annotations

import math

import pytest
import torch

from copkit.entropy import GaussianTokens
from copkit.rank import pagerank, pagerank_solve

# ------------------------------------------------------------------------------------ pagerank
_A = torch.rand(5, 5, generator=torch.Generator().manual_seed(0)).fill_diagonal_(0)


def _with(value: float) -> torch.Tensor:
    a = _A.clone()
    a[1, 2] = value
    return a


PAGERANK_BAD = [
    ("NaN weight", dict(a=_with(math.nan)), r"A must be finite"),
    ("infinite weight", dict(a=_with(math.inf)), r"A must be finite"),
    ("negative weight", dict(a=_with(-0.5)), r"A must be non-negative.*>= 0"),
    ("not square", dict(a=torch.rand(3, 4)), r"A must be \(N, N\)"),
    ("damping 1.5", dict(a=_A, damping=1.5), r"damping must be a number in \(0, 1\)"),
    ("damping 1", dict(a=_A, damping=1.0), r"damping must be a number in \(0, 1\)"),
    ("damping 0", dict(a=_A, damping=0.0), r"damping must be a number in \(0, 1\)"),
    ("damping NaN", dict(a=_A, damping=math.nan), r"damping must be a number in \(0, 1\)"),
    ("NaN teleport", dict(a=_A, teleport=torch.tensor([1.0, math.nan, 1.0, 1.0, 1.0])),
     r"teleport must be finite"),
]


@pytest.mark.parametrize("solver", [pagerank, pagerank_solve])
@pytest.mark.parametrize("what, kwargs, message", PAGERANK_BAD, ids=[c[0] for c in PAGERANK_BAD])
def test_pagerank_refuses(solver, what, kwargs, message):
    with pytest.raises(ValueError, match=message):
        solver(**kwargs)


def test_pagerank_still_takes_good_input():
    assert (pagerank(_A, damping=0.5).converged
            and torch.allclose(pagerank_solve(_A).sum(), torch.tensor(1.0).double()))


# ------------------------------------------------------------------------------------ entropy
_N = 6
_MODEL = GaussianTokens(torch.zeros(_N, 1), torch.eye(_N, dtype=torch.float64) + 0.5)

ENTROPY_BAD = [
    ("a 0/1 integer mask", torch.tensor([0, 1, 0, 0, 1, 0]), r"observed: an integer tensor of N=6 "
                                                             r"zeros and ones is "
                                                            r"ambiguous"),
    ("a 0/1 integer list", [1, 0, 0, 0, 0, 1], r"ambiguous.*bool"),
    ("an index out of range", torch.tensor([2, 6]), r"observed: token indices must be distinct and "
                                                    r"in 0\.\.5"),
    ("a negative index", torch.tensor([-1]), r"distinct and in 0\.\.5"),
    ("a repeated index", torch.tensor([3, 3]), r"distinct"),
    ("a float mask", torch.tensor([0.0, 1.0, 0.0, 0.0, 1.0, 0.0]), r"observed: give a bool mask"),
    ("2-d indices", torch.tensor([[0, 2], [1, 3]]), r"observed: give a bool mask"),
    ("a mask of the wrong length", torch.tensor([True, False]), r"observed: a bool mask must be .* "
                                                                r"N=6"),
]


@pytest.mark.parametrize("what, observed, message", ENTROPY_BAD, ids=[c[0] for c in ENTROPY_BAD])
@pytest.mark.parametrize("entry",
                         ["conditional_entropy", "collapse_entropy", "conditional",
                          "sample_conditional"])
def test_entropy_functions_refuse(entry, what, observed, message):
    call = {"conditional_entropy": lambda: _MODEL.conditional_entropy(observed),
            "collapse_entropy": lambda: _MODEL.collapse_entropy(observed),
            "conditional": lambda: _MODEL.conditional(torch.zeros(_N, 1), observed),
            "sample_conditional": lambda: _MODEL.sample_conditional(torch.zeros(_N, 1), observed,
                                                                    2)}[entry]
    with pytest.raises(ValueError, match=message):
        call()


def test_entropy_masks_and_indices_are_told_apart():
    mask = torch.tensor([False, True, False, False, True, False])
    by_mask = _MODEL.conditional_entropy(mask)
    assert torch.equal(by_mask, _MODEL.conditional_entropy(torch.tensor([1, 4])))
    assert torch.equal(by_mask, _MODEL.conditional_entropy([4, 1]))  # a list of indices, any order
    # a list of bools is a mask
    assert torch.equal(by_mask, _MODEL.conditional_entropy(mask.tolist()))
    assert torch.isfinite(_MODEL.conditional_entropy([])).all()  # nothing observed
    assert _MODEL.conditional_entropy(mask.repeat(3, 1)).shape == (3, _N)  # a batch of masks
    with pytest.raises(ValueError, match="one image's mask"):
        _MODEL.conditional(torch.zeros(_N, 1), mask.repeat(3, 1))


# ------------------------------------------------------------------------------------ orders files
def _orders(orders, split=None):
    import numpy as np

    orders = np.asarray(orders, dtype=np.uint8)
    return orders, np.array(split or ["train"] * len(orders))


ORDERS_BAD = [
    ("index 200", _orders([[0, 1, 2, 200], [3, 2, 1, 0]]), r"row 0 of its orders is not a "
                                                           r"permutation of 0\.\.3"),
    ("a duplicate patch", _orders([[0, 1, 2, 3], [3, 3, 1, 0]]), r"row 1 of its orders is not a "
                                                                 r"permutation"),
    ("a misspelt split", _orders([[0, 1, 2, 3], [3, 2, 1, 0]], ["train", "tset"]),
     r"split names \['tset'\] are not among the known splits"),
]


@pytest.mark.parametrize("what, arrays, message", ORDERS_BAD, ids=[c[0] for c in ORDERS_BAD])
def test_orders_files_are_checked(tmp_path, what, arrays, message):
    import numpy as np

    from copkit.io import DamagedFileError
    from copkit.orders import _npz_bytes, load_orders

    path = tmp_path / "orders-hhhhhhhh.npz"
    path.write_bytes(_npz_bytes(orders=arrays[0], split=arrays[1], comae_hash=np.array("h" * 64)))
    with pytest.raises(DamagedFileError, match=message) as err:
        load_orders(path)
    assert str(path) in str(err.value)


def test_an_image_folders_own_split_names_are_read_when_asked(tmp_path):
    import numpy as np

    from copkit.orders import _npz_bytes, load_orders

    path = tmp_path / "orders.npz"
    path.write_bytes(_npz_bytes(orders=np.array([[1, 0]], np.uint8), split=np.array(["validation"]),
                                comae_hash=np.array("h")))
    assert load_orders(path, splits=None)[1].tolist() == ["validation"]


# ----------------------------------------------------------------------------------- profile fields
def _edited_yaml(tmp_path, source, edit):
    import yaml

    data = yaml.safe_load(source.read_text())
    edit(data)
    path = tmp_path / "mine.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def _set(section, key, value):
    def edit(data):
        target = data
        for part in section.split("."):
            target = target[part]
        target[key] = value
    return edit


PROFILE_BAD = [
    ("fit_images -5", _set("entropy", "fit_images", -5), r"entropy\.fit_images: must be an int >= "
                                                         r"1 or null, got -5"),
    ("steps 0", _set("comae", "steps", 0), r"comae\.steps: must be an int >= 1, got 0"),
    ("lr NaN", _set("comae", "lr", math.nan), r"comae\.lr: must be a finite number > 0, got nan"),
    ("lr 0", _set("cmar", "finetune_lr", 0.0), r"cmar\.finetune_lr: must be a finite number > 0"),
    ("an empty seed list", _set("cvit", "seeds", []), r"cvit\.seeds: must list at least one value"),
    ("a negative seed", _set("cmar", "seeds", [0, -1]), r"cmar\.seeds: must be an int >= 0, got "
                                                        r"\(0, -1\)"),
    ("a negative batch size", _set("cmar", "batch_size", -16), r"cmar\.batch_size: must be an int "
                                                               r">= 1, got -16"),
    ("ema_decay 1", _set("cvit", "ema_decay", 1.0), r"cvit\.ema_decay: must be a number in \[0, "
                                                    r"1\)"),
    ("mask_ratio_min 2", _set("cmar", "mask_ratio_min", 2.0), r"cmar\.mask_ratio_min: must be a "
                                                              r"number in \[0, 1\]"),
    ("a negative cfg scale", _set("cmar", "cfg_scales", [2.0, -1.0]), r"cmar\.cfg_scales: must be "
                                                                      r"a finite number >= 0"),
    ("an ill-typed size", _set("rank", "images", "many"), r"rank\.images: expected int, got str"),
    ("an unknown key", _set("cvit", "widht", 3), r"cvit\.widht: unknown key"),
]


@pytest.mark.parametrize("what, edit, message", PROFILE_BAD, ids=[c[0] for c in PROFILE_BAD])
def test_profile_fields_are_checked_with_key_and_file(tmp_path, what, edit, message):
    from copkit.config import ConfigError
    from copkit.profiles import _FILES, get_profile

    path = _edited_yaml(tmp_path, _FILES / "smoke.yaml", edit)
    with pytest.raises(ConfigError, match=message) as err:
        get_profile(str(path))
    assert str(err.value).startswith(f"{path}: ")


# ---------------------------------------------------------------------------------- pretrain config
PRETRAIN_BAD = [
    ("epochs 0", _set("vit.train", "epochs", 0), r"vit\.train\.epochs: must be a number > 0.*got "
                                                 r"0"),
    ("epochs -3", _set("mar.train", "epochs", -3), r"mar\.train\.epochs: must be a number > 0"),
    ("epochs a string", _set("mar.train", "epochs", "two"), r"mar\.train\.epochs: must be a number "
                                                            r"> 0"),
    ("batch size 0", _set("classifier.train", "batch_size", 0), r"classifier\.train: steps must be "
                                                                r">= 0 and batch_size >= 1"),
    ("lr NaN", _set("vit.train", "lr", math.nan), r"vit\.train\.lr: must be a finite number > 0"),
    ("lr -1", _set("vit.train", "lr", -1.0), r"vit\.train\.lr: must be a finite number > 0"),
    ("an ill-typed train key", _set("vit.train", "warmup_steps", "2"),
     r"vit\.train\.warmup_steps: expected int"),
    ("an unknown model key", _set("vit.model", "widht", 32), r"vit\.model\.widht: unknown key"),
    ("an ill-typed model key", _set("mar.model", "width", 32.5), r"mar\.model\.width: expected "
                                                                 r"int, got float"),
    ("a fixed model key", _set("vit.model", "train_drop", "random"), r"vit\.model\.train_drop: set "
                                                                     r"by pretraining"),
    ("train_images -5", _set("data", "train_images", -5), r"data\.train_images: must be an int >= "
                                                          r"1 or null"),
    ("val_images null", _set("data", "val_images", None), r"data\.val_images: must be an int >= 1, "
                                                          r"got None"),
    ("an unknown data key", _set("data", "test_imgs", 3), r"data\.test_imgs: unknown key"),
    ("no samples", _set("mar.sampling", "samples", 0), r"mar\.sampling\.samples: must be an int >= "
                                                       r"1"),
    ("cfg_scale NaN", _set("mar.sampling", "cfg_scale", math.nan), r"mar\.sampling\.cfg_scale: "
                                                                   r"must be a finite"),
]


@pytest.mark.parametrize("what, edit, message", PRETRAIN_BAD, ids=[c[0] for c in PRETRAIN_BAD])
def test_pretrain_config_fields_are_checked_with_key_and_file(tmp_path, what, edit, message):
    from copkit import pretrained

    path = _edited_yaml(tmp_path, pretrained.SMOKE_CONFIG, edit)
    with pytest.raises(ValueError, match=message) as err:
        pretrained.read_config(path)
    assert str(err.value).startswith(f"{path}: ")


def test_a_garbage_pretrain_config_names_its_file(tmp_path):
    from copkit import pretrained

    path = tmp_path / "bad.yaml"
    path.write_text("data: {train_images: [1,\n")
    with pytest.raises(ValueError, match=f"{path}: not valid YAML"):
        pretrained.read_config(path)


# ------------------------------------------------------------------------------------ generate
GENERATE_BAD = [
    ("label 10", dict(labels=[0, 10]), r"labels: must be ints 0-9, got \[10\]"),
    ("label -1", dict(labels=torch.tensor([-1, 3])), r"labels: must be ints 0-9, got \[-1\]"),
    ("float labels", dict(labels=torch.tensor([1.0, 2.0])), r"labels: must be ints 0-9, got "
                                                            r"torch\.float32"),
    ("a float list", dict(labels=[1.5]), r"labels: must be ints 0-9"),
    ("bool labels", dict(labels=torch.tensor([True])), r"labels: must be ints 0-9"),
    ("2-d labels", dict(labels=torch.zeros(2, 3, dtype=torch.long)), r"labels: must be a non-empty "
                                                                     r"1-d list.*\(2, 3\)"),
    ("an empty batch", dict(labels=[]), r"labels: must be .*ints 0-9"),
    ("an empty tensor", dict(labels=torch.zeros(0, dtype=torch.long)),
     r"labels: must be a non-empty 1-d list"),
    ("not labels", dict(labels="cat"), r"labels: must be class indices"),
    ("cfg_scale NaN", dict(cfg_scale=math.nan), r"cfg_scale: must be a finite number >= 0"),
    ("cfg_scale inf", dict(cfg_scale=math.inf), r"cfg_scale: must be a finite number >= 0"),
    ("cfg_scale -1", dict(cfg_scale=-1.0), r"cfg_scale: must be a finite number >= 0"),
    ("cfg_scale a string", dict(cfg_scale="3"), r"cfg_scale: must be a finite number >= 0"),
    ("a float seed", dict(seed=1.5), r"seed: must be an int"),
]


@pytest.mark.parametrize("what, change, message", GENERATE_BAD, ids=[c[0] for c in GENERATE_BAD])
def test_generate_refuses(what, change, message):
    """Refused before any weight is loaded (the shipped MAR is not read)."""
    from copkit import pretrained

    kwargs = {"labels": [0, 3], "cfg_scale": 3.0, "seed": 0, **change}
    with pytest.raises(ValueError, match=message):
        pretrained.generate("mar", kwargs["labels"], kwargs["cfg_scale"], kwargs["seed"],
                            folder="/nonexistent")
