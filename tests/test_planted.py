"""The planted truths (copkit.planted) against their construction, and the hit rate against
selectors whose answers are known: one that points at every partner, one that points at a fixed
other patch, one that points at random."""

import pytest
import torch

from copkit.planted import KINDS, Planted, chance, partner_hits, planted


class _FixedMasks(torch.nn.Module):
    """A stand-in with CoMAE's masks(): returns the values it was given, as logits (diagonal
    -inf) or as masks (diagonal 0)."""

    def __init__(self, logits: torch.Tensor) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(1))
        self.x = logits

    def masks(self, tokens, logits=False):
        eye = torch.eye(self.x.shape[-1], dtype=torch.bool)
        return self.x.masked_fill(eye, -float("inf") if logits else 0.0)


@pytest.mark.parametrize("kind", KINDS)
def test_partner_holds_the_target_exactly_and_nothing_else_does(kind):
    p = planted(kind, 50, grid=(6, 6), token_dim=4, seed=3)
    assert p.tokens.shape == (50, 36, 4) and p.partners.shape == (50, 36)
    assert bool((p.tokens == p.tokens[..., :1]).all()), "tokens are flat"
    rows, cols = torch.nonzero(p.partners >= 0, as_tuple=True)
    partner = p.partners[rows, cols]
    assert bool((partner != cols).all())
    sign = -1 if kind == "dipole" else 1
    assert torch.equal(p.tokens[rows, cols], sign * p.tokens[rows, partner])
    assert torch.equal(p.partners[rows, partner], cols), "the partner relation is symmetric"
    if kind in ("pair", "pairs", "dipole"):
        assert bool(((p.partners >= 0).sum(1) == {"pair": 2, "pairs": 6, "dipole": 2}[kind]).all())
        assert bool((p.tokens[p.partners < 0] == 0).all())
        least = {"pair": 1, "pairs": 0.5, "dipole": 1}[kind]
        assert bool((p.tokens[p.partners >= 0].abs() >= least).all()), (
            "the pair stands out of the empty image")
        # the positions vary per image: 50 images of a 36-patch grid hold many distinct pairs
        assert len({tuple(sorted(r.nonzero().flatten().tolist())) for r in (p.partners >= 0)}) > 40
    elif kind == "matching":
        assert bool((p.partners >= 0).all())
        assert bool((p.tokens[:, :,
                              0].sort(1).values[:,
                                                ::2] == p.tokens[:, :,
                                                                 0].sort(1).values[:, 1::2]).all())
        assert len(set(p.tokens[0, :, 0].tolist())) == 18, "a distinct level per pair"
    elif kind == "flip":
        tb, lr = planted("mirror",
                         1).partners[0], torch.arange(36).reshape(6, 6).flip(1).reshape(-1)
        is_tb = (p.partners == tb).all(1)
        assert bool((is_tb | (p.partners == lr).all(1)).all()) and 0 < int(is_tb.sum()) < 50
        assert torch.equal(p.tokens[:, 0, 0] > 0, is_tb), "the sign tells which mirror"
    else:
        assert bool((p.partners == p.partners[0]).all()), "the mirror is the same for every image"


def test_hit_rate_of_known_selectors():
    p = planted("pair", 200, seed=0)
    n = 36
    oracle = torch.zeros(200, n, n)
    has = p.partners >= 0
    rows, cols = has.nonzero(as_tuple=True)
    oracle[rows, cols, p.partners[rows, cols]] = 1.0
    assert partner_hits(_FixedMasks(oracle), p) == 1.0
    # always the patch after the target: hits only where the partner happens to be there
    nxt = torch.zeros(200, n, n)
    nxt[:, torch.arange(n), (torch.arange(n) + 1) % n] = 1.0
    expected = float(((p.partners == (torch.arange(n) + 1) % n) & has).sum() / has.sum())
    assert partner_hits(_FixedMasks(nxt), p) == pytest.approx(expected)
    # random logits: chance, 1 / (N - 1), within a binomial interval over 400 targets
    rnd = torch.rand(200, n, n, generator=torch.Generator().manual_seed(1))
    assert abs(partner_hits(_FixedMasks(rnd), p) - chance(n)) < 4 * (chance(n) / 400) ** 0.5
    per = partner_hits(_FixedMasks(oracle), p, per_image=True)
    assert per.shape == (200,) and bool((per == 1).all())


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="unknown planted truth 'mirrors'"):
        planted("mirrors", 3)
    with pytest.raises(ValueError, match="even number of grid rows"):
        planted("mirror", 3, grid=(5, 6))
    with pytest.raises(ValueError, match="n_images"):
        planted("pair", 0)
    assert isinstance(planted("pair", 4)[1:3], Planted) and len(planted("pair", 4)[1:3]) == 2


def test_shipped_sweep_reads_and_summarises():
    """data/pretrained/planted-sweep.json (tools/planted_sweep.py's runs) has every field summarize
    needs, one row per (setting, seed), and rates that are shares."""
    import json
    from pathlib import Path

    from copkit.planted import VARIANTS, summarize

    rows = json.loads((Path(__file__).resolve().parents[1]
                       / "data/pretrained/planted-sweep.json").read_text())["rows"]
    keys = [(r["variant"], r["kind"], r["lambda_c"], json.dumps(r["set"], sort_keys=True),
             json.dumps(r.get("train"), sort_keys=True), r["steps"], r["seed"])
            for r in rows]
    assert len(keys) == len(set(keys))
    for line in summarize(rows):
        assert line["variant"] in VARIANTS and line["kind"] in KINDS
        assert 0 <= line["min"] <= line["median"] <= line["max"] <= 1
        assert line["chance"] == pytest.approx(chance(36))


def test_partner_ranks_count_larger_logits_than_the_partner():
    """A stub model with planted logits: the rank is the number of other patches scoring above
    the partner."""
    import torch

    from copkit.planted import Planted, partner_hits, partner_ranks

    class Stub(torch.nn.Module):
        def __init__(self, x):
            super().__init__()
            self.x = x
            self.p = torch.nn.Parameter(torch.zeros(1))

        def masks(self, tokens, logits=False):
            return self.x

    n = 4
    x = torch.tensor([[[-9., 3., 2., 1.],    # target 0, partner 2: one above (3)
                       [5., -9., 1., 0.],    # target 1, partner 0: none above
                       [0., 1., -9., 2.],    # target 2, no partner
                       [3., 2., 1., -9.]]])  # target 3, partner 2: two above
    partners = torch.tensor([[2, 0, -1, 2]])
    data = Planted(torch.zeros(1, n, 1), partners)
    assert partner_ranks(Stub(x), data).tolist() == [1, 0, 2]
    assert partner_hits(Stub(x), data) == pytest.approx(1 / 3)


def test_the_bar_needs_three_seeds_within_the_steps_at_median_and_worst():
    from copkit.planted import BAR, meets_bar

    line = {"seeds": [0, 1, 2], "steps": BAR["steps"], "median": BAR["median"], "min": BAR["worst"]}
    assert meets_bar(line)
    assert not meets_bar({**line, "seeds": [0, 1]})
    assert not meets_bar({**line, "steps": BAR["steps"] + 1})
    assert not meets_bar({**line, "median": BAR["median"] - 1e-9})
    assert not meets_bar({**line, "min": BAR["worst"] - 1e-9})


def test_setting_text_names_every_knob_beside_the_defaults():
    from copkit.planted import setting_text

    line = {"lambda_c": 1.0, "set": {"g_warmup_steps": 1000, "targets_per_image": 36,
                                     "tau_min": 0.1, "enc_width": 64,
                                     "train": {"batch_size": 4, "lr": 0.001}}}
    assert setting_text(line) == ("lambda_c 1, selector width 64, 1000 steps of g alone first, "
                                  "K = 36 targets per image, temperature floor 0.1, "
                                  "4 images per step, lr 0.001")
    assert setting_text({"lambda_c": 0.01, "set": {}}) == "lambda_c 0.01"


def test_shipped_sweep_the_mirror_is_found_and_the_flip_only_read_with_the_mask_budget():
    """What Chapter 2 reports, read from the shipped runs: with K = N, a temperature floor,
    lambda_c 1 and g's warm-up, both selectors clear the bar on the positional mirror, and the
    paper's literal settings miss it. Without the mask budget no flip run reads the image (with 16
    images per step the selector keeps both mirrors open); with it, the mirror is still found and
    some seed reads the image, and with a budget of 2 and masks starting at 0.9 the paper's
    selector clears the bar on both truths, the only setting that does on the flip. If a new run
    changes any of this, this test and the chapter's text must change together."""
    from copkit.planted import flip_reading, load_sweep, meets_bar, runs_of, summarize

    rows = load_sweep()
    lines = summarize(rows)
    fix = {"g_warmup_steps": 1000, "targets_per_image": 36, "tau_min": 0.1,
           "train": {"batch_size": 4}}
    budget = {"g_warmup_steps": 1000, "targets_per_image": 36, "tau_min": 0.1, "lambda_w": 1.0,
              "train": {"batch_size": 16, "final_lr": 0.003}}
    both_open = {**fix, "train": {"batch_size": 16, "final_lr": 0.003}}

    def line(variant, kind, lam, setting):
        (hit,) = [x for x in lines if (x["variant"], x["kind"], x["lambda_c"], x["set"])
                  == (variant, kind, lam, setting)]
        return hit

    assert meets_bar(line("literal", "mirror", 1.0, fix))
    assert meets_bar(line("pos+token", "mirror", 1.0, fix))
    assert not meets_bar(line("literal", "mirror", 0.01, {}))
    found = {**budget, "lambda_w": 2.0, "mask_init": 0.9}
    assert [x["set"] for x in lines if x["kind"] == "flip" and meets_bar(x)] == [found]
    assert meets_bar(line("literal", "mirror", 1.0, found))
    assert len(runs_of(rows, "literal", "flip", 1.0, found)) >= 3
    opened = line("literal", "flip", 1.0, both_open)
    assert opened["mask_top_bottom"] > 0.9 and opened["mask_left_right"] > 0.9
    read = [r for r in rows if r["kind"] == "flip" and "hit_top_bottom" in r
            and flip_reading(r) == "reads the image"]
    assert read and all(r.get("set", {}).get("lambda_w") for r in read)
    assert meets_bar(line("literal", "mirror", 1.0, budget))
    assert len(runs_of(rows, "literal", "flip", 1.0, budget)) >= 3


def test_a_missing_sweep_file_says_how_to_get_it(tmp_path):
    from copkit.planted import load_sweep

    with pytest.raises(FileNotFoundError, match="planted_sweep.py"):
        load_sweep(tmp_path / "planted-sweep.json")
    (tmp_path / "empty.json").write_text('{"rows": []}')
    with pytest.raises(ValueError, match="no runs"):
        load_sweep(tmp_path / "empty.json")


def test_flip_split_tells_a_selector_that_reads_the_image_from_one_fixed_mirror():
    """Planted answers: an oracle (each image's own mirror) hits on both kinds of image; a selector
    that always points at the top-bottom mirror hits every top-bottom image, no left-right one, and
    points top-bottom on every target."""
    from copkit.planted import FLIP_SPLIT, flip_split, flip_top_bottom

    p = planted("flip", 120, seed=4)
    n = 36
    top = flip_top_bottom(p)
    tb = planted("mirror", 1).partners[0]
    assert 0 < int(top.sum()) < 120 and torch.equal(top, (p.partners == tb).all(1))
    oracle = torch.zeros(120, n, n)
    oracle.scatter_(2, p.partners.unsqueeze(-1), 1.0)
    split = flip_split(_FixedMasks(oracle), p, 6)
    assert tuple(split) == FLIP_SPLIT
    assert {k: v for k, v in split.items() if not k.startswith("mask")} == pytest.approx(
        {"hit_top_bottom": 1.0, "hit_left_right": 1.0,
         "points_top_bottom": float(top.float().mean()),
         "points_left_right": float((~top).float().mean())})
    fixed = torch.zeros(120, n, n)
    fixed[:, torch.arange(n), tb] = 1.0
    split = flip_split(_FixedMasks(fixed), p, 6)
    assert {k: v for k, v in split.items() if not k.startswith("mask")} == pytest.approx(
        {"hit_top_bottom": 1.0, "hit_left_right": 0.0,
         "points_top_bottom": 1.0, "points_left_right": 0.0})
    # masks: the stand-in's logits are its masks here; one open mirror per image in the oracle
    both = torch.zeros(120, n, n)
    both[:, torch.arange(n), tb] = 1.0
    both[:, torch.arange(n), planted("flip", 120, seed=4).partners[~top][0]] = 1.0
    split = flip_split(_FixedMasks(both), p, 6)
    assert split["mask_top_bottom"] == 1.0 and split["mask_left_right"] == 1.0
    assert split["mask_mean"] == pytest.approx(2 / 35)


def test_runs_of_picks_one_setting_by_seed_and_flip_reading_names_what_a_run_does():
    from copkit.planted import flip_reading, runs_of

    rows = [{"variant": "literal", "kind": "flip", "lambda_c": 1.0, "seed": s, "set": {"a": 1},
             "train": {"batch_size": 16}} for s in (2, 0, 1)]
    rows += [{"variant": "literal", "kind": "flip", "lambda_c": 1.0, "seed": 0, "set": {"a": 2}}]
    got = runs_of(rows, "literal", "flip", 1.0, {"a": 1, "train": {"batch_size": 16}})
    assert [r["seed"] for r in got] == [0, 1, 2]
    assert runs_of(rows, "literal", "flip", 1.0, {"a": 2}) == [rows[-1]]
    assert runs_of(rows, "literal", "mirror", 1.0, {"a": 2}) == []
    assert flip_reading({"hit_top_bottom": 0.9, "hit_left_right": 0.5}) == "reads the image"
    assert flip_reading({"hit_top_bottom": 0.14, "hit_left_right": 0.86}) == "left-right"
    assert flip_reading({"hit_top_bottom": 0.81, "hit_left_right": 0.11}) == "top-bottom"
    # a coin toss between two open mirrors: the masks, not the hit rates, tell it from settling
    assert flip_reading({"hit_top_bottom": 0.40, "hit_left_right": 0.36, "mask_top_bottom": 0.90,
                         "mask_left_right": 0.93}) == "both open"
    assert flip_reading({"hit_top_bottom": 0.81, "hit_left_right": 0.11, "mask_top_bottom": 0.48,
                         "mask_left_right": 0.08}) == "top-bottom"
    assert flip_reading({"hit_top_bottom": 0.19, "hit_left_right": 0.08, "mask_top_bottom": 0.16,
                         "mask_left_right": 0.06}) == "both closed"


def test_g_alone_reads_the_last_evaluation_before_f_starts(tmp_path):
    """tools/planted_sweep.py's g_alone: the held-out L_r of the last evaluation at or before the
    end of g's steps alone, from a planted metrics.jsonl; nothing when no evaluation falls there
    or the run is missing."""
    import importlib.util
    import json
    from pathlib import Path

    file = Path(__file__).resolve().parents[1] / "tools" / "planted_sweep.py"
    spec = importlib.util.spec_from_file_location("planted_sweep", file)
    sweep = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(sweep)
    lines = [{"step": 0, "eval": True, "val_L_r": 3.8}, {"step": 500, "eval": True, "val_L_r": 1.0},
             {"step": 900, "opt": "g", "L_r": 0.2}, {"step": 1000, "eval": True, "val_L_r": 0.9},
             {"step": 1500, "eval": True, "val_L_r": 0.1}]
    (tmp_path / "metrics.jsonl").write_text("\n".join(map(json.dumps, lines)) + "\n")
    assert sweep.g_alone(tmp_path, 1000) == {"g_alone_L_r": 0.9, "g_alone_step": 1000}
    assert sweep.g_alone(tmp_path, 999) == {"g_alone_L_r": 1.0, "g_alone_step": 500}
    assert sweep.g_alone(tmp_path, 100) == {}
    assert sweep.g_alone(tmp_path / "missing", 1000) == {}
