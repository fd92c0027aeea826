"""copkit.cvit against independent truths: timm's own forward (plain and with its attention mask),
a per-image brute force, scipy's KS test, a trapezoid by hand, kneed, and FLOPs counted by hand."""

import math

import numpy as np
import pytest
import torch
from scipy import integrate, stats
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from copkit.config import config_hash
from copkit.curves import auc, knee, sweep, sweep_ratios
from copkit.cvit import (
    RECIPE,
    CViTConfig,
    CViTData,
    PrunedViT,
    drop_ratio_cdf,
    drop_ratio_pdf,
    forward_keep,
    make_vit,
    n_keep,
    sample_drop_ratio,
    stage_counts,
)
from copkit.efficiency import vit_flops
from copkit.recipe import TrainConfig
from copkit.tokens import N_TOKENS, patchify, random_flip
from copkit.train import fit


@pytest.fixture(scope="module")
def vit():
    torch.manual_seed(0)
    m = make_vit(CViTConfig(width=32, depth=2, heads=4)).eval()
    # timm zero-initialises the head; random weights make the logits informative
    with torch.no_grad():
        m.head.weight.normal_(0, 0.5)
        m.head.bias.normal_(0, 0.5)
    return m


def images(b, seed=0):
    return torch.rand(b, 1, 28, 28, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def random_keep(b, k, seed=0):
    return torch.rand(b, N_TOKENS, generator=torch.Generator().manual_seed(seed)).argsort(1)[:, :k]


# ------------------------------------------------------------------------------- forward_keep
def test_keeping_every_token_is_timms_forward(vit):
    x = images(5)
    want = vit(x)
    assert torch.equal(forward_keep(vit, x), want)
    got = forward_keep(vit, x, torch.arange(N_TOKENS).expand(5, -1))
    assert torch.allclose(got, want, atol=1e-6)


def test_dropped_forward_equals_timms_masked_attention(vit):
    # timm's own path: the whole sequence, attention to the dropped patches masked out; the class
    # token then only ever sees the kept tokens, so its output must equal ours.
    x, keep = images(6), random_keep(6, 13)
    allowed = torch.zeros(6, 1 + N_TOKENS, dtype=torch.bool)
    allowed[:, 0] = True
    allowed.scatter_(1, keep + 1, True)
    with torch.no_grad():
        feats = vit.forward_features(x, attn_mask=allowed[:, None, None, :])
        want = vit.forward_head(feats)
        got = forward_keep(vit, x, keep)
    assert torch.allclose(got, want, atol=1e-5)


def test_logits_do_not_depend_on_the_order_of_kept_indices(vit):
    x, keep = images(4), random_keep(4, 20, seed=1)
    shuffled = keep.gather(1,
                           torch.rand(4, 20, generator=torch.Generator().manual_seed(2)).argsort(1))
    assert not torch.equal(shuffled, keep)
    with torch.no_grad():
        assert torch.allclose(forward_keep(vit, x, keep), forward_keep(vit, x, shuffled), atol=1e-5)


def test_drops_per_image_in_a_batch(vit):
    x = images(5)
    keep = random_keep(5, 9, seed=3)  # a different kept set for each image
    with torch.no_grad():
        batched = forward_keep(vit, x, keep)
        single = torch.cat([forward_keep(vit, x[i:i + 1], keep[i:i + 1]) for i in range(5)])
        same_set = forward_keep(vit, x, keep[0])  # (K,): one set for every image
    assert torch.allclose(batched, single, atol=1e-5)
    assert torch.allclose(same_set[0], batched[0], atol=1e-5)
    assert not torch.allclose(same_set[1:], batched[1:], atol=1e-3)


def test_bad_keep_is_refused(vit):
    x = images(2)
    with pytest.raises(ValueError, match=r"\[0, 49\)"):
        forward_keep(vit, x, torch.tensor([[0, 49], [1, 2]]))
    with pytest.raises(ValueError, match="B=2"):
        forward_keep(vit, x, torch.zeros(3, 4, dtype=torch.long))
    with pytest.raises(TypeError, match="integer"):
        forward_keep(vit, x, torch.zeros(2, 4))
    with pytest.raises(ValueError, match="mask ratio"):
        n_keep(1.5)


# ----------------------------------------------------------------------- the drop-ratio schedule
def test_drop_ratio_sampler_matches_its_stated_density():
    g = torch.Generator().manual_seed(0)
    r = sample_drop_ratio(20000, g, max_drop=0.99).numpy()
    assert r.min() >= 0 and r.max() <= 0.99
    assert stats.kstest(r, lambda v: drop_ratio_cdf(v, 0.99)).pvalue > 0.01
    # the same test does reject the uniform reading, and the stated density integrates to the CDF
    u = sample_drop_ratio(20000, torch.Generator().manual_seed(0), 0.99, schedule="uniform").numpy()
    assert stats.kstest(u, lambda v: drop_ratio_cdf(v, 0.99)).pvalue < 1e-6
    for q in (0.1, 0.36, 0.8, 0.99):
        area, _ = integrate.quad(lambda v: float(drop_ratio_pdf(v, 0.99)), 0, q)
        assert area == pytest.approx(float(drop_ratio_cdf(q, 0.99)), abs=1e-6)
    # low ratios favoured: mean ~0.36
    assert r.mean() == pytest.approx(0.99 * (1 - 2 / math.pi), abs=0.01)
    assert torch.equal(sample_drop_ratio(5, torch.Generator().manual_seed(4)),
                       sample_drop_ratio(5, torch.Generator().manual_seed(4)))


# ------------------------------------------------------------------------------------ AuC, knee
def test_auc_is_the_hand_trapezoid_over_the_range():
    ratios = [0.0, 0.1, 0.4, 0.99]
    top1 = [90.0, 88.0, 70.0, 10.0]
    by_hand = (0.1 * (90 + 88) / 2 + 0.3 * (88 + 70) / 2 + 0.59 * (70 + 10) / 2) / 0.99
    assert auc(ratios, top1) == pytest.approx(by_hand)
    assert auc([0, 0.5, 0.99], [50.0, 50.0, 50.0]) == pytest.approx(50.0)
    with pytest.raises(ValueError, match="increasing"):
        auc([0.0, 0.5, 0.4], [1.0, 1.0, 1.0])


def test_knee_matches_kneed_on_a_curve_with_a_known_knee():
    from kneed import KneeLocator

    x = np.linspace(0, 0.99, 34)
    # flat, then a cliff at 0.66
    y = np.where(x <= 0.66, 80 - 5 * x, 80 - 5 * 0.66 - 230 * (x - 0.66))
    r, acc = knee(x, y)
    assert (r == pytest.approx(float(KneeLocator(x, y, curve="concave",
                                                 direction="decreasing").knee)))
    assert r == pytest.approx(0.66, abs=0.031)  # the grid point at the bend
    assert acc == pytest.approx(y[np.argmin(abs(x - r))])


# ------------------------------------------------------------------------------------- FLOPs
def test_flops_at_keep_1_are_timms_and_fall_as_counted_by_hand(vit):
    x = torch.zeros(1, 1, 28, 28)
    with torch.no_grad(), sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
        vit(x)
    assert vit_flops(vit) == counter.get_total_flops() == vit_flops(vit, N_TOKENS)
    d, depth, mlp, classes = 32, 2, 4, 10

    def by_hand(k):
        t = k + 1  # with the class token
        embed = 2 * N_TOKENS * 16 * d  # every patch is embedded before the drop
        block = 2 * t * d * 3 * d + 2 * 2 * t * t * d + 2 * t * d * d + 2 * 2 * t * d * mlp * d
        return embed + depth * block + 2 * d * classes

    counts = [vit_flops(vit, k) for k in (49, 34, 25, 11, 1)]
    assert counts == [by_hand(k) for k in (49, 34, 25, 11, 1)]
    assert all(a > b for a, b in zip(counts, counts[1:]))


# ------------------------------------------------------------------------- sweep, flip, pruning
def test_sweep_matches_a_per_image_brute_force(vit):
    x, y = images(30,
                  seed=5), torch.randint(0, 10, (30,), generator=torch.Generator().manual_seed(5))
    orders = random_keep(30, N_TOKENS, seed=6)
    ratios = [0.0, 0.5, 0.78]
    out = sweep(vit, (x, y, orders), ratios, "collapse", batch_size=7)
    for r, t1, t5 in zip(ratios, out["top1"], out["top5"]):
        k = n_keep(r)
        hit1 = hit5 = 0
        for i in range(30):
            with torch.no_grad():
                logits = forward_keep(vit, x[i:i + 1], orders[i, :k])[0]
            ranked = logits.argsort(descending=True)
            hit1 += int(ranked[0] == y[i])
            hit5 += int((ranked[:5] == y[i]).any())
        assert t1 == pytest.approx(100 * hit1 / 30)
        assert t5 == pytest.approx(100 * hit5 / 30)
    assert out["kept"] == [49, 25, 11]
    with pytest.raises(ValueError, match="learned"):
        sweep(vit, (x, y, orders), ratios, "learned")


def test_flip_keeps_the_order_on_the_content():
    x = images(8, seed=7)
    orders = random_keep(8, N_TOKENS, seed=8)
    fx, fo = random_flip(x, orders, torch.Generator().manual_seed(1))
    flipped = [i for i in range(8) if not torch.equal(fx[i], x[i])]
    assert 0 < len(flipped) < 8
    tok, ftok = patchify(x, 4), patchify(fx, 4)
    for i in range(8):
        got = ftok[i, fo[i]].reshape(-1, 4, 4)
        want = tok[i, orders[i]].reshape(-1, 4, 4)
        # k-th patch: same content, mirrored
        assert torch.equal(got, want.flip(-1) if i in flipped else want)


def test_pruned_vit_keeps_the_asked_count_and_learns_its_scores():
    torch.manual_seed(0)
    model = PrunedViT(make_vit(CViTConfig(width=32, depth=4, heads=4, train_drop="learned")))
    assert model.stages == (1, 2, 3)
    x = images(3)
    model.eval()
    with torch.no_grad():
        assert torch.equal(model(x), model.vit(x))  # nothing pruned: timm's forward
        logits, kept = model(x, n_keep=11, return_kept=True)
    assert logits.shape == (3, 10) and kept.shape == (3, 11)
    assert all(len(set(row.tolist())) == 11 for row in kept)
    model.train()
    model(x, n_keep=11, generator=torch.Generator().manual_seed(0)).sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.scorers.parameters()
               if p.ndim > 1)
    assert stage_counts(49, 11, 3) == [30, 18, 11]
    full, pruned, dropped = vit_flops(model, None), vit_flops(model, 11), vit_flops(model.vit, 11)
    assert dropped < pruned < full


def test_sweep_ratios_hold_table5_columns():
    r = sweep_ratios(12)
    assert len(r) >= 12 and r[0] == 0.0 and r[-1] == 0.99
    assert {0.3, 0.5, 0.78} <= set(r.tolist())


def test_fit_trains_cvit_resumes_and_loads(tmp_path):
    x, y = images(128,
                  seed=9), torch.randint(0, 10, (128,), generator=torch.Generator().manual_seed(9))
    orders = random_keep(128, N_TOKENS, seed=10)
    cfg = CViTConfig(width=16, depth=2, heads=2, train_drop="collapse")
    tc = TrainConfig(steps=6, batch_size=32, lr=1e-3, seed=0, ckpt_every=3, log_every=1)
    tag = {"test": 1}
    run = fit(RECIPE, cfg, tc, CViTData(x, y, orders), tag, tmp_path, progress=False)
    assert (run.folder == tmp_path / "runs" / f"cvit-{run.hash[:8]}"
            and (run.folder / "checkpoint.safetensors").exists())
    assert (len([r for r in run.metrics if "loss" in r]) == 6
            and 1 <= min(r["kept"] for r in run.metrics) <= 49)
    # loaded, not retrained
    again = fit(RECIPE, cfg, tc, CViTData(x, y, orders), tag, tmp_path, progress=False)
    assert all(torch.equal(a, b)
               for a, b in zip(run.model.state_dict().values(), again.model.state_dict().values()))
    with pytest.raises(ValueError, match="collapse orders"):
        fit(RECIPE, cfg, tc, CViTData(x, y, None), tag, tmp_path, progress=False)
    with pytest.raises(ValueError, match="must have the same length"):
        CViTData(x, y[:-1], orders)
    rvit = RECIPE.run_config(CViTConfig(width=16, depth=2, heads=2, train_drop="random"), tc, None,
                             tag)
    assert config_hash(rvit) != run.hash


def test_pretrained_timm_vit_from_a_local_file(tmp_path):
    """The paper starts CViT from a pretrained timm ViT-B/16; here a real timm architecture
    (ViT-Ti/16) with random weights is saved to a file and loaded by name the same way."""
    import timm
    from safetensors.torch import save_file

    from copkit.cvit import CViTConfig, forward_keep, make_vit

    torch.manual_seed(0)
    src = timm.create_model("vit_tiny_patch16_224", pretrained=False).eval()
    path = tmp_path / "vit_tiny.safetensors"
    save_file({k: v.contiguous() for k, v in src.state_dict().items()}, path)
    same = CViTConfig(timm_model="vit_tiny_patch16_224", img_size=224, patch=16, classes=1000,
                      in_chans=3)
    vit = make_vit(same, weights=path).eval()
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        torch.testing.assert_close(vit(x), src(x))
        torch.testing.assert_close(forward_keep(vit, x, torch.arange(196).expand(2, -1)), src(x))
    # On CoMAE's grid at another resolution, with a new head: the blocks are the file's, the
    # position embeddings resized by timm, the head new.
    vit = make_vit(CViTConfig(timm_model="vit_tiny_patch16_224", img_size=64, patch=16, classes=10,
                              in_chans=3), path)
    assert vit.pos_embed.shape == (1, 1 + 16, 192) and vit.head.out_features == 10
    torch.testing.assert_close(vit.blocks[3].mlp.fc1.weight, src.blocks[3].mlp.fc1.weight)
    assert vit(torch.randn(1, 3, 64, 64)).shape == (1, 10)
    with pytest.raises(ValueError, match="16-pixel patches"):
        make_vit(CViTConfig(timm_model="vit_tiny_patch16_224", img_size=64, patch=8, classes=10,
                            in_chans=3), path)
    with pytest.raises(FileNotFoundError, match="local .safetensors"):
        make_vit(same, weights=tmp_path / "missing.safetensors")
