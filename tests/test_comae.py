"""CoMAE against hand computations, leakage, the alternation, the batched masks, and a planted
truth (mirror-symmetric images)."""

import inspect
import math
import warnings

import numpy as np
import pytest
import torch

from copkit.checkpoint import load_tensors
from copkit.comae import (
    RECIPE,
    CoMAE,
    CoMAEConfig,
    CoMAEData,
    comae_step_fn,
    contrastive_loss,
    inject_noise,
    mask_entropy,
    noise_keep,
    others_index,
)
from copkit.recipe import TrainConfig, optimizers
from copkit.tokens import hflip_index, patchify
from copkit.train import fit, train

SMALL = CoMAEConfig(grid=(4, 4), token_dim=4, enc_width=16, enc_depth=2, enc_heads=2, dec_width=16,
                    dec_depth=2, dec_heads=2, targets_per_image=4, g_warmup_steps=0)


def small_model(seed=0, cfg=SMALL):
    torch.manual_seed(seed)
    return CoMAE(cfg)


def test_others_index():
    o = others_index(4)
    assert o.tolist() == [[1, 2, 3], [0, 2, 3], [0, 1, 3], [0, 1, 2]]


def test_eq4_and_eq3_by_hand():
    w = torch.tensor([0.0, 0.25, 1.0])
    sigma = 0.3
    a = noise_keep(w, sigma)
    want = [math.exp(-((1 - v) ** 2) / (2 * sigma**2)) for v in (0.0, 0.25, 1.0)]
    assert a.tolist() == pytest.approx(want, rel=1e-6)
    e = torch.tensor([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]])
    eps = torch.tensor([[-1.0, 0.0], [0.5, 0.5], [9.0, 9.0]])
    out = inject_noise(e, a, eps)
    for i in range(3):
        for j in range(2):
            assert (out[i,
                        j].item() == pytest.approx(want[i] * e[i, j].item() + (1 - want[i])
                                                   * eps[i, j].item(), rel=1e-6))
    assert torch.equal(out[2], e[2])  # w = 1 keeps the token exactly


def test_eq6_by_hand():
    g = torch.Generator().manual_seed(0)
    w = torch.rand(2, 3, 5, generator=g)
    targets = torch.tensor([[0, 2, 4], [1, 3, 0]])
    tau = torch.tensor(0.2)
    total = 0.0
    for b in range(2):
        m = w[b].numpy().copy()
        for i, t in enumerate(targets[b].tolist()):
            m[i, t] = 0.0  # a mask's own entry is not compared
        for i in range(3):
            sims = [float(m[i] @ m[j] / (np.linalg.norm(m[i]) * np.linalg.norm(m[j])))
                    for j in range(3)]
            total += -math.log(math.exp(sims[i] / 0.2) / sum(math.exp(s / 0.2) for s in sims))
    assert contrastive_loss(w, targets, tau).item() == pytest.approx(total / 6, rel=1e-5)


def test_eq7_by_hand():
    w = torch.tensor([[0.0, 0.5, 1.0, 0.25], [0.1, 0.9, 0.3, 0.0]])
    direct = -sum(v * math.log(v) for row in w.tolist() for v in row if v > 0) / 2
    assert mask_entropy(w).item() == pytest.approx(direct, rel=1e-6)
    # the own entry excluded
    direct_own = -sum(v * math.log(v) for row, t in zip(w.tolist(), (1, 2))
                      for j, v in enumerate(row) if v > 0 and j != t) / 2
    assert mask_entropy(w, torch.tensor([1, 2])).item() == pytest.approx(direct_own, rel=1e-6)


@pytest.mark.parametrize("grid, width, "
                         "heads",
                         [((7, 7), 32, 2), ((4, 4), 32, 2), ((7, 7), 64, 4), ((4, 4), 16, 2)])
def test_rope_similarity_falls_with_grid_distance(grid, width, heads):
    """The rotary table f and g use: a constant query and key rotated to positions 0 and p score
    strictly less as p moves away from 0 along the first row and along the first column (no band
    wraps past pi within the grid, so no far patch looks near)."""
    from timm.layers import apply_rot_embed_cat

    cfg = CoMAEConfig(grid=grid, enc_width=width, enc_heads=heads, dec_width=width, dec_heads=heads)
    m = CoMAE(cfg)
    for net in (m.f, m.g):
        rope = net.rope  # (N, 2 * head_dim)
        hd = rope.shape[1] // 2
        rotated = apply_rot_embed_cat(torch.ones(1, 1, rope.shape[0], hd), rope)[0, 0]  # (N, hd)
        score = rotated @ rotated[0]  # the attention score of position 0 with every position
        h, w = grid
        row, col = score[:w], score[::w][:h]
        assert torch.all(row[1:] < row[:-1]), row.tolist()
        assert torch.all(col[1:] < col[:-1]), col.tolist()


def test_no_leakage_of_the_target():
    m = small_model()
    tokens = torch.randn(5, 16, 4, requires_grad=True)
    target = torch.tensor([0, 3, 7, 15, 9])
    w = m.select(tokens, target)
    noise = torch.randn(5, 16, 4)
    pred = m.reconstruct(tokens, target, w, noise)
    rows = torch.arange(5)
    (g_w,) = torch.autograd.grad(w.sum(), tokens, retain_graph=True)
    (g_pred,) = torch.autograd.grad(pred.sum(), tokens)
    assert torch.all(g_w[rows, target] == 0) and torch.all(g_pred[rows, target] == 0)
    # ... while every other token does reach them
    other = torch.ones(5, 16, dtype=torch.bool)
    other[rows, target] = False
    assert (g_pred.abs().sum(-1)[other] > 0).all() and (g_w.abs().sum(-1)[other] > 0).all()


@pytest.mark.parametrize("start", [0.05, 0.1, 0.3])
def test_mask_init_sets_where_the_masks_start(start):
    """An untrained selector's masks all sit near ``mask_init`` (its output bias is atanh(2 m - 1),
    its weights small); the config refuses a start outside [0, 1) and keeps the default hash."""
    from dataclasses import replace

    from copkit.train import config_hash

    m = small_model(cfg=replace(SMALL, mask_init=start, readout="token", pos_embed=True))
    w = m.masks(torch.randn(8, 16, 4))
    off = w[:, ~torch.eye(16, dtype=torch.bool)]
    assert off.mean().item() == pytest.approx(start, abs=0.01) and off.std().item() < 0.05
    assert config_hash(replace(SMALL, mask_init=0.0)) == config_hash(SMALL)
    with pytest.raises(ValueError, match="mask_init"):
        replace(SMALL, mask_init=1.0)


def test_masks_equal_a_loop_over_targets():
    m = small_model(1)
    tokens = torch.randn(3, 16, 4)
    batched = m.masks(tokens, chunk=2)
    m.eval()
    with torch.no_grad():
        for n in range(16):
            w = m.select(tokens, torch.full((3,), n))
            w[:, n] = 0.0
            assert torch.allclose(batched[:, n], w, atol=1e-6)
    assert torch.all(batched.diagonal(dim1=1, dim2=2) == 0)
    logits = m.masks(tokens, logits=True)
    assert torch.all(torch.isneginf(logits.diagonal(dim1=1, dim2=2)))
    assert torch.allclose((torch.tanh(logits) + 1) / 2 * ~torch.eye(16, dtype=torch.bool), batched,
                          atol=1e-6)


def test_masks_rank_in_float32_unless_bfloat16_is_asked():
    # the default is float32 on every device (before, None: bfloat16 autocast on CUDA)
    assert inspect.signature(CoMAE.masks).parameters["autocast"].default is False
    m = small_model(2).eval()
    tokens = torch.randn(3, 16, 4)
    eye = torch.eye(16, dtype=torch.bool)
    with torch.no_grad():  # a plain float32 forward of f over every (image, target)
        plain = m.f(tokens.repeat_interleave(16, dim=0),
                    torch.arange(16).repeat(3)).reshape(3, 16, 16)
    plain = plain.masked_fill(eye, 0.0)
    assert torch.equal(m.masks(tokens), plain)
    # a caller's autocast does not reach the ranking
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert torch.equal(m.masks(tokens), plain)
    asked = m.masks(tokens, autocast=True)  # bfloat16 only when asked
    assert not torch.equal(asked, plain) and torch.allclose(asked, plain, atol=0.05)


def _train(cfg, tokens, steps, run_dir, stop_after=None, lr=3e-3, batch=16, seed=0):
    m = small_model(seed, cfg)
    tc = TrainConfig(steps=steps, batch_size=batch, lr=lr, warmup_steps=10, ckpt_every=3,
                     log_every=1, seed=seed)
    opts = optimizers(RECIPE, m, tc)
    hist = train({"comae": m}, opts, comae_step_fn(m, tokens, batch, seed), tc, run_dir,
                 {"c": cfg, "t": tc}, stop_after=stop_after, progress=False)
    return m, hist


def test_alternation_updates_one_network_per_step(tmp_path):
    tokens = torch.randn(64, 16, 4)
    snap = []
    for k in (1, 2, 3):
        m, hist = _train(SMALL, tokens, 3, tmp_path, stop_after=k)
        snap.append({n: p.detach().clone() for n, p in m.named_parameters()})
    assert [r["opt"] for r in hist if not r.get("eval")] == ["f", "g", "f"]
    f_names = [n for n in snap[0] if n.startswith("f.") or n == "log_tau"]
    g_names = [n for n in snap[0] if n.startswith("g.")]
    # step 1 (index 1) is a g step: f unchanged, g changed; step 2 an f step: the reverse
    assert all(torch.equal(snap[0][n], snap[1][n]) for n in f_names)
    assert any(not torch.equal(snap[0][n], snap[1][n]) for n in g_names)
    assert all(torch.equal(snap[1][n], snap[2][n]) for n in g_names)
    assert any(not torch.equal(snap[1][n], snap[2][n]) for n in f_names)


def test_g_learns_alone_for_the_warm_up_steps_then_the_alternation_starts(tmp_path):
    from dataclasses import replace

    tokens = torch.randn(64, 16, 4)
    m, hist = _train(replace(SMALL, g_warmup_steps=3), tokens, 6, tmp_path)
    assert [r["opt"] for r in hist if not r.get("eval")] == ["g", "g", "g", "g", "f", "g"]


def test_comae_resume_equals_uninterrupted(tmp_path):
    tokens = torch.randn(64, 16, 4)
    full, _ = _train(SMALL, tokens, 8, tmp_path / "full")
    _train(SMALL, tokens, 8, tmp_path / "cut", stop_after=5)
    resumed, _ = _train(SMALL, tokens, 8, tmp_path / "cut")
    for k, v in full.state_dict().items():
        assert torch.equal(v, resumed.state_dict()[k]), k
    tensors, meta = load_tensors(tmp_path / "cut" / "checkpoint.safetensors")
    assert meta["step"] == 8 and "model.comae.f.q" in tensors and "opt.g.0.exp_avg" in tensors


def _vflip_index(n_tokens, grid_w):
    """Where each token lands when the image is flipped top-bottom (row r -> rows - 1 - r)."""
    idx = torch.arange(n_tokens)
    rows = n_tokens // grid_w
    return (rows - 1 - idx // grid_w) * grid_w + idx % grid_w


#: the planted-truth training: every knob the test does not set is CoMAEConfig's default (sigma too)
PLANTED = dict(grid=(4, 4), token_dim=4, enc_width=32, enc_depth=2, enc_heads=2, dec_width=32,
               dec_depth=2, dec_heads=2, targets_per_image=16, lambda_c=1.0)
PLANTED_STEPS, PLANTED_BATCH = 400, 16
#: What the median of three seeds must beat (chance is 1/15). Measured with this training (sigma
#: 0.7, 100 steps of g alone first): 87% left-right (79-87%), 61% top-bottom (54-82%); with sigma
#: 0.7 but no warm-up 58% and 80% (worst seed 37%); before both fixes 18% and 32% (worst 0%).
PLANTED_MEDIAN = 0.45


def _planted_hit_rate(direction, seed, tmp_path):
    """Train on white-noise 8 x 8 images whose one half mirrors the other (2 x 2 patches, a 4 x 4
    grid of 4-dim tokens) and return the share of held-out targets whose largest mask logit is on
    the mirror patch (chance: 1/15)."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2600, 1, 8, 8, generator=g)
    if direction == "left-right":
        x[..., 4:] = torch.flip(x[..., :4], dims=[-1])
        mirror = hflip_index(16, 4)
    else:
        x[..., 4:, :] = torch.flip(x[..., :4, :], dims=[-2])
        mirror = _vflip_index(16, 4)
    tokens = patchify(x, 2)
    tc = TrainConfig(steps=PLANTED_STEPS, batch_size=PLANTED_BATCH, lr=3e-3, warmup_steps=10,
                     ema_decay=0.99, seed=seed, ckpt_every=10**6)
    model = fit(RECIPE, CoMAEConfig(**PLANTED), tc, CoMAEData(tokens[:2500], tokens[2500:2532]),
                {"planted": direction}, tmp_path, progress=False).model
    logits = model.masks(tokens[2500:], logits=True)
    return (logits.argmax(-1) == mirror).float().mean().item()


@pytest.mark.parametrize(("direction", "seeds"), [("left-right", (0,)),
                                                  ("top-bottom", (0, 1, 2))],
                         ids=["left-right", "top-bottom"])
def test_mirror_patch_is_found(direction, seeds, tmp_path):
    """Planted truth: a target patch is independent of every patch but its mirror, which holds it
    exactly (flipped), so the right mask keeps the mirror patch above the rest. The median over the
    seeds must put the largest weight on the mirror for most targets (see the threshold).
    Top-bottom trains three seeds; left-right one, as a guard, since Chapter 2 trains this
    left-right truth over five seeds and shows every seed's rate beside chance."""
    torch.set_num_threads(1)
    hits = [_planted_hit_rate(direction, seed, tmp_path / str(seed)) for seed in seeds]
    assert float(np.median(hits)) > PLANTED_MEDIAN, (
        f"{direction}: mirror found for {[f'{h:.0%}' for h in hits]} of targets")


def test_logit_variance_split_is_zero_image_share_for_an_image_blind_selector():
    """A selector whose logits ignore the image (zeroed token embedding) has no image-specific
    share."""
    from copkit.comae import CoMAE, CoMAEConfig, logit_variance_split

    torch.manual_seed(0)
    cfg = CoMAEConfig(grid=(4, 4), token_dim=4, enc_width=16, enc_depth=1, enc_heads=2,
                      dec_width=16, dec_depth=1, dec_heads=2, targets_per_image=4)
    model = CoMAE(cfg)
    tokens = torch.randn(6, 16, 4)
    shares = logit_variance_split(model, tokens)
    assert (sum(v for k, v in shares.items()
                if k != "image_specific") == pytest.approx(1.0, abs=1e-9))
    assert shares["image_specific"] > 0.01  # a random selector sees its input
    with torch.no_grad():
        for p in model.f.parameters():
            # the token embedding's weight: the only way in for the image
            if p.dim() >= 2 and p.shape[-1] == 4:
                p.zero_()
    blind = logit_variance_split(model, tokens)
    assert blind["image_specific"] == pytest.approx(0.0, abs=1e-9)


def test_the_contrastive_loss_never_rewards_a_larger_temperature():
    """Eq. 6's positive pair is a mask with itself (cosine 1, the largest): dL_c/dtau >= 0 for any
    masks, so gradient descent can only shrink the learned temperature; 0 when all masks agree."""
    from copkit.comae import contrastive_loss

    g = torch.Generator().manual_seed(0)
    for _ in range(200):
        w = torch.rand(3, 5, 12, generator=g) ** 3
        targets = torch.rand(3, 12, generator=g).argsort(1)[:, :5]
        tau = torch.tensor(float(torch.empty(()).uniform_(0.01, 1.0, generator=g)),
                           requires_grad=True)
        (grad,) = torch.autograd.grad(contrastive_loss(w, targets, tau), tau)
        assert grad >= -1e-6
    same = torch.ones(2, 4, 9, dtype=torch.float64)
    # every mask leaves out every target's entry: identical once their own is zeroed
    same[..., 4:8] = 0.0
    tau = torch.tensor(0.1, dtype=torch.float64, requires_grad=True)
    (grad,
     ) = torch.autograd.grad(contrastive_loss(same, torch.tensor([[4, 5, 6, 7]] * 2), tau), tau)
    assert abs(float(grad)) < 1e-9  # identical masks: nothing to gain


def test_the_mask_budget_adds_lambda_w_times_the_mean_off_target_mask():
    """With the same weights and draws, lambda_w adds exactly lambda_w times the mean of the masks
    over the patches other than each target (recomputed here from the masks f gives for the drawn
    targets) to the loss, and nothing to L_r or L_c; 0 keeps the paper's loss and the old hash."""
    from dataclasses import replace

    from copkit.train import config_hash

    tokens = torch.randn(3, 16, 4, generator=torch.Generator().manual_seed(0))
    paper, budget = small_model(1), small_model(1, replace(SMALL, lambda_w=0.7))
    a = paper.losses(tokens, torch.Generator().manual_seed(5))
    b = budget.losses(tokens, torch.Generator().manual_seed(5))
    targets = torch.rand(3, 16, generator=torch.Generator().manual_seed(5)).argsort(1)[:, :4]
    w = paper.masks(tokens)  # (3, N, N), row n = w_n, own entry 0
    chosen = w[torch.arange(3)[:, None], targets]  # (3, K, N)
    mean_off = chosen.sum(-1) / 15
    assert torch.equal(a["L_r"], b["L_r"]) and torch.equal(a["L_c"], b["L_c"])
    assert (b["loss"] - a["loss"]).item() == pytest.approx(0.7 * mean_off.mean().item(), rel=1e-4)
    assert config_hash(replace(SMALL, lambda_w=0.0)) == config_hash(SMALL)


def test_the_mask_budget_ramps_up_after_the_g_warm_up_and_the_step_charges_it():
    """lambda_w_ramp = R: the budget's weight is 0 up to the end of the g warm-up, rises by
    lambda_w / R per step, and stays at lambda_w from R steps after it (the closed form); f's
    step of comae_step_fn charges exactly that weight (its loss is losses() with that weight)."""
    from dataclasses import replace

    from copkit.comae import comae_step_fn
    from copkit.recipe import batch_indices
    from copkit.train import config_hash

    cfg = replace(SMALL, lambda_w=0.6, lambda_w_ramp=40, g_warmup_steps=10)
    model = small_model(1, cfg)
    for step, want in [(0, 0.0), (10, 0.0), (20, 0.15), (30, 0.3), (50, 0.6), (500, 0.6)]:
        assert model.budget_weight(step) == pytest.approx(want)
    # no ramp: the full weight at once
    assert small_model(1, replace(SMALL, lambda_w=0.6)).budget_weight(0) == 0.6
    assert config_hash(replace(cfg, lambda_w_ramp=0)) != config_hash(cfg)
    assert config_hash(replace(SMALL, lambda_w_ramp=0)) == config_hash(SMALL)
    tokens = torch.randn(8, 16, 4, generator=torch.Generator().manual_seed(0))
    step_fn = comae_step_fn(model, tokens, batch_size=3, seed=0)
    loss, which, _ = step_fn(20, torch.Generator().manual_seed(7))  # an f step, halfway up the ramp
    assert which == "f"
    x = tokens[batch_indices(len(tokens), 3, 20, 0)]
    for weight, same in [(0.15, True), (0.6, False)]:
        want = model.losses(x, torch.Generator().manual_seed(7), lambda_w=weight)["loss"]
        assert (abs((loss - want).item()) < 1e-6) is same


@pytest.mark.parametrize("options", [{}, {"qkv_bias": False}, {"qkv_bias_separate": True},
                                     {"init_values": 0.1}, {"swiglu_mlp": True}])
def test_first_token_block_equals_timms_block_at_the_first_token(options):
    """The last block run for [cls] alone gives timm's EvaBlock output there, values and gradients,
    for the options the fast path takes and for those it hands back to the full block."""
    from timm.models.eva import EvaBlock

    from copkit.comae import first_token_block, grid_rope
    torch.manual_seed(0)
    blk = EvaBlock(32, 2, num_prefix_tokens=1, **options).eval()
    for p in blk.parameters():
        torch.nn.init.normal_(p, std=0.3)  # biases and scales away from their 0/1 starts
    rope = grid_rope(16, (5, 5))[torch.randperm(25)[:24]].expand(3, 1, 24, 32)
    x = torch.randn(3, 25, 32, requires_grad=True)
    want = blk(x, rope=rope)[:, 0]
    (gw,) = torch.autograd.grad(want.square().sum(), x)
    got = first_token_block(blk, x, rope)
    (gg,) = torch.autograd.grad(got.square().sum(), x)
    assert torch.allclose(got, want, atol=1e-5) and torch.allclose(gg, gw, atol=1e-4)


def test_body_equals_the_full_forward_at_the_special_token():
    torch.manual_seed(1)
    model = CoMAE(SMALL).eval()
    for p in model.parameters():
        torch.nn.init.normal_(p, std=0.2)
    tokens, target = torch.randn(6, 16, 4), torch.randint(0, 16, (6,))
    for net in (model.f, model.g):
        kept = tokens[torch.arange(6)[:, None], net.others[target]]
        full = net.norm(net.encode(kept, target)[:, 0])
        assert torch.allclose(net.body(kept, target), full, atol=1e-6)


def test_compiled_masks_equal_the_eager_ones_and_leave_the_model_as_it_was(monkeypatch):
    """``masks(compiled=True)`` compiles the selector once per model and kind of output, keeps it
    outside the module tree, and returns the eager masks and logits.

    Dynamo traces the selector and AOTAutograd lowers it, as on every backend; the graphs then run
    on the ``aot_eager`` backend. Inductor's C++ kernels would cost some 35 s of gcc here on a cold
    cache: ``make bench`` compiles them at the book's sizes and refuses masks that differ from the
    eager ones."""
    compiled, real_compile = [], torch.compile

    def compile_aot_eager(fn, **kwargs):
        compiled.append(fn)
        return real_compile(fn, backend="aot_eager", **kwargs)

    monkeypatch.setattr(torch, "compile", compile_aot_eager)
    torch.manual_seed(2)
    model = CoMAE(SMALL).eval()
    keys = list(model.state_dict())
    tokens = torch.randn(8, 16, 4)  # two chunks of one shape: one compilation
    with warnings.catch_warnings():  # compiled, not the eager fallback that warns
        warnings.simplefilter("error", RuntimeWarning)
        for logits in (False, True):
            eager = model.masks(tokens, chunk=4, logits=logits)
            fast = model.masks(tokens, chunk=4, logits=logits, compiled=True)
            torch.testing.assert_close(fast, eager, rtol=1e-5, atol=1e-5)
            assert torch.equal(model.masks(tokens, chunk=4, logits=logits, compiled=True), fast)
    assert len(compiled) == 2  # one selector each for masks and logits, kept for the next call
    assert list(model.state_dict()) == keys


def test_compiled_masks_fall_back_to_the_eager_ones_with_one_warning(monkeypatch):
    """Where torch.compile cannot run (no C++ compiler, say), the first call warns with the
    compiler's error and every call returns the eager masks without trying again."""
    tried = []

    def broken_compile(fn, **kwargs):
        def run(*args):
            tried.append(1)
            raise RuntimeError("no C++ compiler found")
        return run

    monkeypatch.setattr(torch, "compile", broken_compile)
    torch.manual_seed(3)
    model = CoMAE(SMALL).eval()
    tokens = torch.randn(4, 16, 4)
    eager = model.masks(tokens)
    with pytest.warns(RuntimeWarning, match=r"torch.compile failed \(RuntimeError: no C\+\+"):
        assert torch.equal(model.masks(tokens, compiled=True), eager)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        assert torch.equal(model.masks(tokens, compiled=True), eager)
    assert len(tried) == 1


def test_an_extended_run_equals_the_longer_run_from_the_start(tmp_path):
    """checkpoint.extend: a run with a held learning rate goes on to more steps exactly as if it had
    been configured that long; another difference, or a decaying rate, is refused by name."""
    from copkit.checkpoint import extend

    tokens = torch.randn(64, 16, 4)
    data, tag = CoMAEData(tokens[:48], tokens[48:]), {"t": "extend"}

    def train_cfg(steps, **kw):
        return TrainConfig(**{**dict(steps=steps, batch_size=8, lr=3e-3, final_lr=3e-3,
                                     warmup_steps=2, ckpt_every=2, eval_every=4, seed=0), **kw})

    short = fit(RECIPE, SMALL, train_cfg(5), data, tag, tmp_path / "a", progress=False)
    full = fit(RECIPE, SMALL, train_cfg(9), data, tag, tmp_path / "b", progress=False)
    assert extend(short.folder, tmp_path / "a" / "runs" / full.folder.name, full.config) == 5
    extended = fit(RECIPE, SMALL, train_cfg(9), data, tag, tmp_path / "a", progress=False)
    assert extended.folder.name == full.folder.name
    for k, v in full.model.state_dict().items():
        assert torch.equal(v, extended.model.state_dict()[k]), k
    other_seed = RECIPE.run_config(SMALL, train_cfg(9, seed=1), data, tag)
    with pytest.raises(ValueError, match=r"train\.seed"):
        extend(short.folder, tmp_path / "c", other_seed)
    decaying = fit(RECIPE, SMALL, train_cfg(5, final_lr=0.0), data, tag, tmp_path / "d",
                   progress=False)
    with pytest.raises(ValueError, match="final_lr"):
        extend(decaying.folder, tmp_path / "e",
               RECIPE.run_config(SMALL, train_cfg(9, final_lr=0.0), data, tag))
    # held, then decayed from the step it reached: the same as that schedule from the start
    decayed = train_cfg(9, final_lr=0.0, decay_from=5)
    whole = fit(RECIPE, SMALL, decayed, data, tag, tmp_path / "f", progress=False)
    extend(short.folder, tmp_path / "g" / "runs" / whole.folder.name, whole.config)
    went_on = fit(RECIPE, SMALL, decayed, data, tag, tmp_path / "g", progress=False)
    assert went_on.folder.name == whole.folder.name != full.folder.name
    for k, v in whole.model.state_dict().items():
        assert torch.equal(v, went_on.model.state_dict()[k]), k
    with pytest.raises(ValueError, match="step 4 at learning rate"):  # the decay starts too early
        extend(short.folder, tmp_path / "h",
               RECIPE.run_config(SMALL, train_cfg(9, final_lr=0.0, decay_from=3), data, tag))
