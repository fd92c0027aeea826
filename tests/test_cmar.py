"""copkit.cmar: MAR's order semantics step by step on 4 tokens, the schedules, the diffusion
against its closed form, training and sampling behaviour, the flip and the adaptive order."""

import math

import numpy as np
import pytest
import torch
from scipy import stats

from copkit.cmar import (
    MAR,
    MARConfig,
    adaptive_collapse,
    cfg_schedule,
    draw_given,
    generation_orders,
    mar_order,
    mar_step_fn,
    masked_count,
    masked_count_after,
    mix_orders,
    reveal_schedule,
    sample_mask_ratio,
    training_orders,
)
from copkit.diffloss import DiffLoss
from copkit.diffusion import Diffusion, cosine_alpha_bar, spaced_steps
from copkit.tokens import flip_batch, patchify, random_orders


def tiny(grid=(2, 2), **kw) -> MAR:
    torch.manual_seed(0)
    cfg = MARConfig(grid=grid, width=16, enc_depth=1, dec_depth=1, heads=2, buffer=2, head_width=16,
                    head_depth=1, diffusion_steps=100, diffusion_batch_mul=2, **kw)
    return MAR(cfg)


def test_every_layer_norm_has_mars_eps():
    # MAR's mar_base / mar_large / mar_huge give the blocks norm_layer=partial(nn.LayerNorm,
    # eps=1e-6); z_proj_ln and the diffusion head's norms are nn.LayerNorm(..., eps=1e-6) in MAR too
    model = MAR(MARConfig(grid=(2, 2), width=16, enc_depth=2, dec_depth=2, heads=2, buffer=2,
                          head_width=16, head_depth=1))
    norms = {n: m for n, m in model.named_modules() if isinstance(m, torch.nn.LayerNorm)}
    blocks = [n for n in norms if n.startswith(("encoder.", "decoder."))]
    assert len(blocks) == 2 * 4  # norm1 and norm2 of each of the 2 + 2 blocks
    for name, m in norms.items():
        assert m.eps == 1e-6, name
    for name in blocks:
        # torch's, as MAR's partial(nn.LayerNorm)
        assert type(norms[name]) is torch.nn.LayerNorm, name


def test_training_masks_the_head_of_the_order_and_sees_the_tail():
    model = tiny()
    tokens = torch.arange(4.0)[None, :, None].expand(1, 4, 16).clone()  # token i holds the value i
    order = torch.tensor([[2, 0, 3, 1]])
    seen = {}
    forward_z = model.forward_z

    def spy_z(tokens, cond, visible):
        seen["visible"] = visible.clone()
        return forward_z(tokens, cond, visible)

    def spy_loss(target, z, generator=None, t=None, noise=None):
        seen["targets"] = target[:, 0].clone()
        return target.sum(dim=1) * 0

    model.forward_z, model.diffloss.forward = spy_z, spy_loss
    model.loss(tokens, torch.tensor([1]), order, mask_ratio=0.5)
    assert seen["visible"].tolist() == [[3, 1]]  # the tail is what the model sees
    # the head is the loss's targets, diffusion_batch_mul = 2
    assert seen["targets"].tolist() == [2.0, 0.0] * 2
    model.loss(tokens, torch.tensor([1]), order, mask_ratio=0.7)  # ceil(4 * 0.7) = 3 masked
    assert seen["visible"].tolist() == [[1]]


def test_masked_count_at_the_papers_ratio_leaves_10_of_49_patches_visible():
    """Chapter 4 wrote "the 11 visible patches" at mask ratio 0.78 while its figure showed 10 of
    49: ceil(49 * 0.78) = ceil(38.22) = 39 are hidden. The chapter now counts them from here."""
    assert masked_count(49, 0.78) == 39 and 49 - masked_count(49, 0.78) == 10
    for n in (1, 4, 49, 256):
        for r in np.linspace(0, 1, 23):
            assert masked_count(n, r) == min(n, max(1, math.ceil(n * r)))
    with pytest.raises(ValueError, match="mask ratio"):
        masked_count(49, 1.5)
    model = tiny(grid=(7, 7))  # the loss hides exactly that many: the model sees the other 10
    seen = {}
    forward_z = model.forward_z

    def spy_z(tokens, cond, visible):
        seen["visible"] = visible.shape[1]
        return forward_z(tokens, cond, visible)

    model.forward_z = spy_z
    model.loss(torch.randn(1, 49, 16), torch.tensor([1]), torch.randperm(49)[None], mask_ratio=0.78)
    assert seen["visible"] == 49 - masked_count(49, 0.78) == 10


def test_generation_reveals_the_tail_of_the_order_step_by_step():
    model = tiny().eval()
    orders = torch.tensor([[2, 0, 3, 1], [1, 3, 0, 2]])
    log = []

    def callback(step, tokens, o, masked):
        revealed = sorted((tokens.abs().sum(-1) > 0)[0].nonzero().flatten().tolist())
        revealed1 = sorted((tokens.abs().sum(-1) > 0)[1].nonzero().flatten().tolist())
        log.append((masked, revealed, revealed1))

    model.sample(torch.tensor([0, 1]), orders, steps=4, diffusion_steps=5,
                 generator=torch.Generator().manual_seed(0), callback=callback)
    # N = 4, S = 4: masked after each step floor(4 cos(pi/2 (s+1)/4)) = 3, 2, 1, then 0
    assert [m for m, _, _ in log] == [3, 2, 1, 0]
    for masked, r0, r1 in log:
        assert r0 == sorted(orders[0, masked:].tolist())  # exactly the last N - masked entries
        assert r1 == sorted(orders[1, masked:].tolist())
    # the very first token generated is the order's last entry
    assert log[0][1] == [1] and log[0][2] == [2]


@pytest.mark.parametrize("n", [1, 4, 16, 49, 64])
def test_reveal_schedule_sums_to_n_and_never_reveals_zero(n):
    for steps in range(1, n + 1):
        sched = reveal_schedule(n, steps)
        assert sum(sched) == n and len(sched) == steps and min(sched) >= 1
    with pytest.raises(ValueError):
        reveal_schedule(n, n + 1)


def test_masked_count_follows_the_cosine_formula():
    n, steps = 256, 64  # MAR's ImageNet setting: the clamps never bind in the middle
    masked = n
    for s in range(steps - 1):
        nxt = masked_count_after(s, steps, n, masked)
        assert (nxt == max(1,
                           min(masked - 1,
                               math.floor(n * math.cos(math.pi / 2 * (s + 1) / steps)))))
        masked = nxt


def test_cfg_schedule_linear_and_constant():
    assert cfg_schedule(3.0, 49, 49) == 1.0 and cfg_schedule(3.0, 0, 49) == 3.0
    assert cfg_schedule(3.0, 20, 40) == pytest.approx(2.0)
    assert cfg_schedule(3.0, 20, 40, "constant") == 3.0
    with pytest.raises(ValueError):
        cfg_schedule(3.0, 1, 4, "cosine")


def mar_cfg_iters(n: int, steps: int, cfg: float) -> list[float]:
    """The guidance scale of each step of MAR's ``sample_tokens`` (models/mar.py, cfg_schedule
    "linear"), re-implemented: ``mask_len`` is floor(N cos(pi/2 (step+1)/S)) clamped to
    [1, masked - 1] in float32 tensors, on every step including the last, and the scale is
    1 + (cfg - 1)(N - mask_len)/N."""
    masked, out = torch.tensor([float(n)]), []
    for step in range(steps):
        mask_len = torch.tensor([float(np.floor(n * np.cos(math.pi / 2.0 * (step + 1) / steps)))])
        mask_len = torch.maximum(torch.tensor([1.0]), torch.minimum(masked - 1, mask_len))
        out.append(float(1 + (cfg - 1) * (n - mask_len[0]) / n))
        masked = mask_len
    return out


@pytest.mark.parametrize("grid,steps",
                         [((2, 2), 4), ((2, 2), 1), ((7, 7), 8), ((4, 4), 16), ((16, 16), 64)])
def test_sampling_guides_every_step_as_mar_including_the_last(grid, steps):
    model = tiny(grid).eval()
    n = grid[0] * grid[1]
    seen = []

    def record(z, steps_, temperature, cfg_scale, z_uncond=None, generator=None, clip=None):
        seen.append(cfg_scale)
        return torch.zeros(len(z), 16)

    model.diffloss.sample = record
    orders = random_orders(2, n, generator=torch.Generator().manual_seed(0))
    model.sample(torch.tensor([0, 1]), orders, steps=steps, cfg_scale=2.9, diffusion_steps=2)
    want = mar_cfg_iters(n, steps, 2.9)
    np.testing.assert_allclose(seen, want, rtol=1e-6)
    # not the full scale: MAR's mask_len is 1 there
    assert seen[-1] == pytest.approx(1 + 1.9 * (n - 1) / n)


def test_cfg_scale_one_equals_the_conditional_model():
    torch.manual_seed(0)
    head = DiffLoss(16, 8, 16, 2, train_steps=100)
    for p in head.parameters():  # leave the zero-initialised state, or the prediction is 0 anyway
        torch.nn.init.normal_(p, std=0.3)
    z, zu = torch.randn(5, 8), torch.randn(5, 8)
    cond = head.sample(z, steps=10, generator=torch.Generator().manual_seed(3))
    guided_at_one = head.sample(z, steps=10, cfg_scale=1.0 + 1e-9, z_uncond=zu,
                                generator=torch.Generator().manual_seed(3))
    guided = head.sample(z, steps=10, cfg_scale=3.0, z_uncond=zu,
                         generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(guided_at_one, cond, atol=1e-5, rtol=1e-5)
    assert (guided - cond).abs().max() > 1e-3  # guidance does something at other scales


def test_fake_class_is_used_at_the_stated_rate():
    model = tiny(label_drop=0.1)
    drops = []
    condition = model.condition

    def spy(labels, drop=None):
        drops.append(drop.clone())
        return condition(labels, drop)

    model.condition = spy
    g = torch.Generator().manual_seed(0)
    tokens, labels = torch.randn(64, 4, 16), torch.zeros(64, dtype=torch.long)
    with torch.no_grad():
        for _ in range(100):
            model.loss(tokens, labels, random_orders(64, 4, generator=g), g)
    rate = torch.cat(drops).float().mean().item()
    assert abs(rate - 0.1) < 3 * math.sqrt(0.1 * 0.9 / 6400)
    c = model.condition(torch.tensor([1, 2]), torch.tensor([True, False]))
    torch.testing.assert_close(c[0], model.fake_latent[0])
    torch.testing.assert_close(c[1], model.class_emb.weight[2])


def test_cosine_schedule_and_forward_noising_match_the_closed_form():
    d = Diffusion.cosine(1000)
    # alpha_bar from the betas is the closed form cos^2 ratio (until the 0.999 clip near t = T)
    closed = cosine_alpha_bar(torch.arange(1, 1001, dtype=torch.float64), 1000)
    torch.testing.assert_close(d.alpha_bar[:990], closed[:990], rtol=1e-10, atol=1e-12)
    # the closed-form jump q(x_t | x0) equals t one-step noisings sqrt(1 - b) x + sqrt(b) eps (in
    # distribution)
    g = torch.Generator().manual_seed(0)
    x0 = torch.tensor([0.8, -0.5, 0.1]).double()
    for t in (0, 10, 300, 700):
        x = x0.expand(50_000, 3).clone()
        for s in range(t + 1):
            b = float(d.betas[s])
            x = (math.sqrt(1 - b) * x + math.sqrt(b)
                 * torch.randn(x.shape, generator=g, dtype=torch.float64))
        ab = float(d.alpha_bar[t])
        jump = d.q_sample(x0.expand(50_000, 3), torch.full((50_000,), t),
                          torch.randn(50_000, 3, generator=g, dtype=torch.float64))
        for sample in (x, jump):
            torch.testing.assert_close(sample.mean(0), math.sqrt(ab) * x0, atol=0.01, rtol=0)
            torch.testing.assert_close(sample.var(0), torch.full((3,), 1 - ab, dtype=torch.float64),
                                       atol=0.01, rtol=0.02)
    # respacing keeps alpha_bar at the kept steps; all steps is the same diffusion
    r = d.respaced(100)
    torch.testing.assert_close(r.alpha_bar, d.alpha_bar[r.timesteps])
    torch.testing.assert_close(d.respaced(1000).betas, d.betas)


def space_timesteps(num_timesteps: int, section_counts: str) -> set[int]:
    """improved DDPM's respacing as MAR's diffusion/respace.py has it, re-implemented for the test
    (comma-separated section counts; each section of the steps strided by (size - 1)/(count - 1),
    the running index rounded with Python's round)."""
    counts = [int(c) for c in section_counts.split(",")]
    size_per, extra = divmod(num_timesteps, len(counts))
    start, steps = 0, []
    for i, count in enumerate(counts):
        size = size_per + (1 if i < extra else 0)
        assert size >= count
        stride = 1 if count <= 1 else (size - 1) / (count - 1)
        cur = 0.0
        for _ in range(count):
            steps.append(start + round(cur))
            cur += stride
        start += size
    return set(steps)


def test_respacing_keeps_the_steps_mar_keeps():
    d = Diffusion.cosine(1000)
    differ = []
    for k in range(1, 1001):
        want = sorted(space_timesteps(1000, str(k)))
        assert spaced_steps(1000, k) == want, k
        if torch.linspace(0, 999, k).round().long().unique().tolist() != want:
            differ.append(k)
    # the rule copkit used before differs for many k (not 25, 50, 100)
    assert 21 in differ and len(differ) > 100
    assert not {25, 50, 100, 250} & set(differ)
    r = d.respaced(21)
    assert (r.timesteps.tolist() == sorted(space_timesteps(1000, "21"))
            and int(r.timesteps[10]) == 499)
    # SpacedDiffusion's betas: 1 - alpha_bar / the previous kept alpha_bar (1 before the first)
    ab = d.alpha_bar[r.timesteps]
    torch.testing.assert_close(r.betas,
                               1 - ab / torch.cat([torch.ones(1, dtype=ab.dtype), ab[:-1]]), rtol=0,
                               atol=0)
    assert spaced_steps(100, 1) == [0] and spaced_steps(100, 100) == list(range(100))
    with pytest.raises(ValueError):
        d.respaced(1001)


def test_a_few_steps_lower_the_loss_on_a_fixed_batch():
    model = tiny()
    g = torch.Generator().manual_seed(0)
    tokens, labels = torch.rand(16, 4, 16) * 2 - 1, torch.randint(0, 10, (16,), generator=g)
    orders = random_orders(16, 4, generator=g)

    def fixed_loss():
        with torch.no_grad():
            return model.loss(tokens, labels, orders, torch.Generator().manual_seed(123),
                              mask_ratio=0.75).item()

    before = fixed_loss()
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for step in range(40):
        loss = model.loss(tokens, labels, orders, torch.Generator().manual_seed(step),
                          mask_ratio=0.75)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert fixed_loss() < 0.8 * before


def test_sampling_with_a_fixed_seed_is_reproducible():
    model = tiny().eval()
    orders, labels = random_orders(3, 4,
                                   generator=torch.Generator().manual_seed(0)), torch.tensor([0, 1,
                                                                                              2])
    a = model.sample(labels, orders, steps=3, cfg_scale=2.0, diffusion_steps=5,
                     generator=torch.Generator().manual_seed(7))
    b = model.sample(labels, orders, steps=3, cfg_scale=2.0, diffusion_steps=5,
                     generator=torch.Generator().manual_seed(7))
    c = model.sample(labels, orders, steps=3, cfg_scale=2.0, diffusion_steps=5,
                     generator=torch.Generator().manual_seed(8))
    torch.testing.assert_close(a, b)
    assert not torch.allclose(a, c)


def test_mask_ratio_is_mars_truncated_normal():
    g = torch.Generator().manual_seed(0)
    draws = np.array([sample_mask_ratio(g, minimum=0.7) for _ in range(3000)])
    assert draws.min() >= 0.7 and draws.max() <= 1.0
    ref = stats.truncnorm((0.7 - 1.0) / 0.25, 0.0, loc=1.0, scale=0.25)
    assert stats.kstest(draws, ref.cdf).pvalue > 0.01


def test_orders_reverse_mix_and_flip():
    collapse = torch.tensor([[5, 0, 3, 1, 2, 4]])
    # best patch (5) at the tail: generated first
    assert mar_order(collapse).tolist() == [[4, 2, 1, 3, 0, 5]]
    assert mar_order(collapse, descending=False).tolist() == collapse.tolist()
    g = torch.Generator().manual_seed(0)
    many = collapse.expand(4000, 6)
    mixed = mix_orders(many, 0.1, g)
    assert abs((mixed != many).any(1).float().mean().item() - 0.1 * (1 - 1 / 720)) < 0.015
    assert (mixed.sort(1).values == torch.arange(6)).all()
    with pytest.raises(ValueError):
        training_orders("sideways", collapse, 1, 6, 0.1)
    # the flipped image's order points at the mirrored patches: same content, mirrored
    images = torch.rand(2, 1, 8, 8, generator=g)
    orders = random_orders(2, 4, generator=g)
    fx, fo = flip_batch(images, orders, torch.tensor([True, False]), p=4)
    t, ft = patchify(images, 4), patchify(fx, 4)
    for j in range(4):
        a = ft[0, fo[0, j]].reshape(4, 4)
        b = t[0, orders[0, j]].reshape(4, 4).flip(-1)
        torch.testing.assert_close(a, b)
    torch.testing.assert_close(fx[1], images[1])
    assert fo[1].tolist() == orders[1].tolist()


def test_fixed_generation_order_is_the_mean_rank_order_for_every_class():
    # three training orders of 4 patches; mean ranks: patch 2 -> 0.33, 0 -> 1.0, 1 -> 2.0,
    # 3 -> 2.67, so the fixed collapse order is [2, 0, 1, 3] and MAR generates it reversed
    collapse = torch.tensor([[2, 0, 1, 3], [2, 1, 0, 3], [0, 2, 3, 1]])
    labels = torch.tensor([0, 1, 1, 0, 2])
    got = generation_orders("fixed", labels, torch.Generator().manual_seed(0), 4, collapse,
                            torch.tensor([0, 1, 2]))
    assert got.tolist() == [[3, 1, 0, 2]] * 5
    with pytest.raises(ValueError, match="needs the training images' collapse orders"):
        generation_orders("fixed", labels, torch.Generator(), 4)
    # centre-out needs no data: the 3x3 grid's centre (4) first, generated last-in-order
    centre = generation_orders("centre-out", labels, torch.Generator(), 9)
    assert centre.tolist() == [[8, 6, 2, 0, 7, 5, 3, 1, 4]] * 5


@pytest.mark.parametrize("kind", ["fixed", "centre-out"])
def test_one_order_trainings_give_every_image_the_same_order(kind):
    model = tiny(grid=(3, 3))
    seen = []
    model.loss = lambda tokens, labels, orders, gen, shard=None: (seen.append(orders),
                                                                  tokens.sum())[1]
    g = torch.Generator().manual_seed(0)
    collapse = torch.stack([torch.randperm(9, generator=g) for _ in range(20)])
    images = torch.rand(20, 1, 12, 12, generator=g)
    step = mar_step_fn(model, images, torch.zeros(20, dtype=torch.long), 8, 0, kind, collapse,
                       random_fraction=0.0, flip=False)
    step(0, torch.Generator().manual_seed(1))
    # the truth, computed independently: mean ranks over all 20 images, or distance from centre
    mean_rank = torch.zeros(9)
    for row in collapse:
        mean_rank[row] += torch.arange(9, dtype=torch.float) / 20
    best_first = (mean_rank.argsort(stable=True) if kind == "fixed"
                  else torch.tensor([4, 1, 3, 5, 7, 0, 2, 6, 8]))
    assert seen[0].tolist() == [best_first.flip(0).tolist()] * 8


def test_draw_given_keeps_the_real_tokens_and_never_reads_the_hidden_ones():
    model = tiny(grid=(3, 3)).eval()
    g = torch.Generator().manual_seed(0)
    x = torch.randn(4, 9, 16, generator=g)
    orders = random_orders(4, 9, generator=g)
    y = torch.tensor([0, 1, 2, 3])
    out = draw_given(model, x, y, orders, 4, torch.Generator().manual_seed(1), 10)
    for b in range(4):
        shown, hidden = orders[b, 5:], orders[b, :5]
        torch.testing.assert_close(out[b, shown], x[b, shown])  # the real context, unchanged
        assert (out[b, hidden] != x[b, hidden]).all()
    # the hidden tokens' true values cannot leak into their draws: replace them, same draws
    x2 = x.clone()
    for b in range(4):
        x2[b, orders[b, :5]] = torch.randn(5, 16, generator=g)
    out2 = draw_given(model, x2, y, orders, 4, torch.Generator().manual_seed(1), 10)
    for b in range(4):
        torch.testing.assert_close(out2[b, orders[b, :5]], out[b, orders[b, :5]])
    # every token visible: the image itself; a bad count is refused with what was wrong
    torch.testing.assert_close(draw_given(model, x, y, orders, 9, g, 10), x)
    with pytest.raises(ValueError, match="visible: between 0 and 9"):
        draw_given(model, x, y, orders, 10, g, 10)


class OneHub(torch.nn.Module):
    """A stand-in CoMAE: every patch relies only on patch ``hub``, so the hub ranks first."""

    def __init__(self, hub: int) -> None:
        super().__init__()
        self.hub = hub

    def masks(self, tokens):
        b, n, _ = tokens.shape
        m = torch.full((b, n, n), 0.01)
        m[:, :, self.hub] = 1.0
        m[:, torch.arange(n), torch.arange(n)] = 0.0
        return m


def test_adaptive_order_reveals_the_best_hidden_patch_next_and_keeps_the_tail():
    adapt = adaptive_collapse(OneHub(hub=2))
    orders = torch.tensor([[2, 0, 3, 1], [0, 3, 1, 2]])
    new = adapt(torch.randn(2, 4, 16), orders, masked=3)
    assert new[:, 3:].tolist() == orders[:, 3:].tolist()  # the revealed tail is untouched
    # the hub, still hidden, goes to the end of the head: revealed next
    assert new[0, 2].item() == 2
    assert sorted(new[1, :3].tolist()) == [0, 1, 3]
    # and in a run: with the hub hidden, it is generated first
    model = tiny().eval()
    first = []
    model.sample(torch.tensor([0]), torch.tensor([[2, 0, 3, 1]]), steps=4, diffusion_steps=3,
                 adapt=adapt, draft_steps=2,
                 callback=lambda s, t, o, m: first.append(o[0, m:].tolist()) if s == 0 else None)
    assert first == [[2]]


# ------------------------------------------------- MAR's own head: learned variance (improved DDPM)
def test_gaussian_kl_and_discretized_likelihood_match_exact_forms():
    from torch.distributions import Normal, kl_divergence

    from copkit.diffusion import discretized_gaussian_log_likelihood, gaussian_kl

    g = torch.Generator().manual_seed(0)
    m1, m2, lv1, lv2 = (torch.randn(200, generator=g, dtype=torch.float64) for _ in range(4))
    exact = kl_divergence(Normal(m1, (0.5 * lv1).exp()), Normal(m2, (0.5 * lv2).exp()))
    torch.testing.assert_close(gaussian_kl(m1, lv1, m2, lv2), exact)
    # bin masses against the exact normal CDF (the tanh approximation is good to ~2e-4 in the CDF)
    levels = torch.linspace(-1, 1, 256, dtype=torch.float64)
    x = levels[torch.randint(0, 256, (500,), generator=g)]
    x[:3], x[3:6] = -1.0, 1.0  # the open outermost bins
    mean = torch.rand(500, generator=g, dtype=torch.float64) * 2 - 1
    scale = 0.02 + 0.5 * torch.rand(500, generator=g, dtype=torch.float64)
    n = Normal(mean, scale)
    up = torch.where(x > 0.999, torch.ones_like(x), n.cdf(x + 1 / 255))
    lo = torch.where(x < -0.999, torch.zeros_like(x), n.cdf(x - 1 / 255))
    got = discretized_gaussian_log_likelihood(x, mean, scale.log()).exp()
    torch.testing.assert_close(got, up - lo, atol=5e-4, rtol=0)


def test_learned_variance_spans_posterior_to_beta_and_the_bound_vanishes_at_the_truth():
    d = Diffusion.cosine(1000)
    t = torch.tensor([0, 1, 10, 500, 999])
    ones = torch.ones(5, 3, dtype=torch.float64)
    post = torch.log(d.posterior_var[t.clamp(min=1)])  # clipped: step 0 takes step 1's
    torch.testing.assert_close(d.learned_log_var(t, -ones), post[:, None].expand(5, 3))
    torch.testing.assert_close(d.learned_log_var(t, ones),
                               torch.log(d.betas[t])[:, None].expand(5, 3))
    torch.testing.assert_close(d.learned_log_var(t, 0 * ones),
                               ((post + torch.log(d.betas[t])) / 2)[:, None].expand(5, 3))
    # the exact noise and v = -1 give the true posterior: the KL term is 0 for t > 0
    g = torch.Generator().manual_seed(1)
    x0, eps = torch.rand(5, 3, generator=g) * 2 - 1, torch.randn(5, 3, generator=g)
    xt = d.q_sample(x0, t, eps)
    vb = d.vb_bits(x0, xt, t, eps, -torch.ones(5, 3))
    torch.testing.assert_close(vb[1:], torch.zeros(4), atol=1e-4, rtol=0)
    # v = +1 (variance beta, exact mean): KL of two Gaussians with one mean, in bits
    pv, beta = d.posterior_var[t[1:]].float(), d.betas[t[1:]].float()
    closed = 0.5 * (torch.log(beta / pv) + pv / beta - 1) / math.log(2)
    torch.testing.assert_close(d.vb_bits(x0, xt, t, eps, torch.ones(5, 3))[1:], closed, rtol=1e-4,
                               atol=1e-6)
    assert vb[0] > 0  # t = 0: the decoder's negative log-likelihood of a quantised x0


def test_learned_variance_head_trains_and_samples():
    model = tiny(time_freq=32, learn_sigma=True)
    net = model.diffloss.net
    assert net.time[0].in_features == 32 and net.out.out_features == 2 * 16
    g = torch.Generator().manual_seed(0)
    tokens, labels = torch.rand(16, 4, 16) * 2 - 1, torch.randint(0, 10, (16,), generator=g)
    orders = random_orders(16, 4, generator=g)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for step in range(30):
        loss = model.loss(tokens, labels, orders, torch.Generator().manual_seed(step),
                          mask_ratio=0.75)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert (all(math.isfinite(v) for v in losses) and np.mean(losses[-5:]) < 0.8
            * np.mean(losses[:5]))
    assert net.out.weight.grad[16:].abs().sum() > 0  # the variance rows learn (from the bound)
    out = model.eval().sample(labels[:2], orders[:2], steps=2, cfg_scale=2.0, diffusion_steps=4,
                              generator=torch.Generator().manual_seed(0))
    assert out.shape == (2, 4, 16) and torch.isfinite(out).all()


def test_v_of_minus_one_samples_like_the_fixed_variance():
    d = Diffusion.cosine(100).respaced(10)
    g = torch.Generator().manual_seed(0)
    x, eps, noise = (torch.randn(6, 4, generator=g) for _ in range(3))
    for i in (9, 5, 1):  # step 0 has no noise either way
        torch.testing.assert_close(d.p_step(x, i, eps, noise, 0.7, None, v=-torch.ones(6, 4)),
                                   d.p_step(x, i, eps, noise, 0.7, None), rtol=1e-5, atol=1e-6)


def test_clip_x0_bounds_samples_and_mars_head_does_not():
    labels, orders = torch.tensor([0, 1, 2,
                                   3]), random_orders(4, 4,
                                                      generator=torch.Generator().manual_seed(0))
    for clip in (True, False):
        # zero-initialised head: eps = 0, x0 = x_t / sqrt(alpha_bar)
        model = tiny(clip_x0=clip).eval()
        out = model.sample(labels, orders, steps=2, diffusion_steps=5,
                           generator=torch.Generator().manual_seed(0))
        assert (out.abs().max() <= 1.0) == clip
