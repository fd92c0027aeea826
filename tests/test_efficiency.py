"""copkit.efficiency: FLOPs against closed forms, operator counts, and which steps step_rate
runs."""

import pytest
import torch

from copkit.efficiency import OpCount, best_time, count_flops, step_rate


def test_count_flops_of_a_linear_layer_forward_and_backward():
    torch.manual_seed(0)
    b, i, o = 8, 16, 4
    lin = torch.nn.Linear(i, o)
    x = torch.randn(b, i)
    forward = 2 * b * i * o  # a multiply-add is 2 FLOPs
    assert count_flops(lin, x) == forward

    def step():
        lin(x).sum().backward()

    # backward: the weight's gradient (x^T dy) and nothing for x, which needs no gradient
    assert count_flops(step) == forward + 2 * b * i * o
    x.requires_grad_(True)
    assert count_flops(step) == forward + 2 * (2 * b * i * o)  # and dx = dy W


def test_count_flops_counts_attention_through_the_math_kernel():
    q = torch.randn(1, 2, 5, 8)  # (batch, heads, tokens, head dim)
    flops = count_flops(torch.nn.functional.scaled_dot_product_attention, q, q, q)
    assert flops == 2 * (2 * 2 * 5 * 5 * 8)  # q k^T and attn v, per head


def test_op_count_counts_aten_operators():
    a, b = torch.ones(3), torch.ones(3)
    with OpCount() as c:
        torch.add(a, b)
        torch.mul(a, b)
    assert c.ops == 2


def test_step_rate_runs_the_warmup_then_the_timed_steps_in_order():
    seen = []
    rate = step_rate(seen.append, steps=3, first=10, warmup=2)
    assert seen == [10, 11, 12, 13, 14] and rate > 0
    with pytest.raises(ValueError, match="steps must be >= 1"):
        step_rate(seen.append, steps=0)


def test_best_time_calls_once_to_warm_up_then_repeat_times():
    calls = []
    assert best_time(lambda: calls.append(1), repeat=4) >= 0
    assert len(calls) == 5


def _by_hand(n_patches: int, patch_dim: int, d: int, depth: int, mlp: int, classes: int,
             keep: int) -> int:
    """A timm ViT's forward FLOPs from its shapes: every patch embedded, then ``keep`` patch tokens
    and the class token through each block (qkv, q k^T, attn v, proj, MLP), then the head."""
    t = keep + 1
    block = 2 * t * d * 3 * d + 2 * 2 * t * t * d + 2 * t * d * d + 2 * 2 * t * d * mlp * d
    return 2 * n_patches * patch_dim * d + depth * block + 2 * d * classes


def test_keep_costs_against_flops_counted_by_hand():
    from copkit.cvit import CViTConfig, make_vit
    from copkit.efficiency import keep_costs

    torch.manual_seed(0)
    vit = make_vit(CViTConfig(width=32, depth=2, heads=2, mlp_ratio=4.0))
    costs = keep_costs(vit, [0.0, 0.5, 0.78])
    assert [c["kept"] for c in costs.values()] == [49, 25, 11]
    for c in costs.values():
        k = c["kept"]
        assert c["flops"] == _by_hand(49, 16, 32, 2, 4, 10, k)
        assert c["ratio_to_full"] == pytest.approx(c["flops"] / _by_hand(49, 16, 32, 2, 4, 10, 49))
        assert (c["attention_share"] == pytest.approx(2 * 4 * (k + 1) ** 2 * 32
                                                      / _by_hand(49, 16, 32, 2, 4, 10, k)))
        assert c["paper_attention_saving"] == pytest.approx(1 - (k / 49) ** 2)


def test_paper_scale_costs_match_vit_b_by_hand():
    from copkit.efficiency import paper_scale_costs

    out = paper_scale_costs(widths=(64,), keep=56)
    assert out["vit_b_gflop_full"] * 1e9 == pytest.approx(_by_hand(256, 768, 768, 12, 4, 1000, 256))
    assert (out["vit_b_gflop_keep56"]
            * 1e9 == pytest.approx(_by_hand(256, 768, 768, 12, 4, 1000, 56)))
    order = 256 * _by_hand(256, 768, 64, 12, 4, 1000, 256)  # one selector pass per target
    assert out["order_gflop_width64"] * 1e9 == pytest.approx(order)
    assert out["end_to_end_ratio_width64"] == pytest.approx((order
                                                             + _by_hand(256, 768, 768, 12, 4, 1000,
                                                                        56))
                                                            / _by_hand(256, 768, 768, 12, 4, 1000,
                                                                       256))


def test_train_steps_are_the_steps_copkit_train_takes(tmp_path):
    """The steps the bench times are train's: after the same steps, with clipping, the warm-up and
    cosine schedule and the EMA, the weights and their EMA equal those of train's checkpoint."""
    import dataclasses

    from copkit.checkpoint import load_tensors
    from copkit.cvit import RECIPE, CViTData, from_profile
    from copkit.efficiency import train_rate, train_steps
    from copkit.profiles import get_profile
    from copkit.step import StepRunner, cosine_lr
    from copkit.train import train

    g = torch.Generator().manual_seed(0)
    data = CViTData(torch.rand(32, 1, 28, 28, generator=g) * 2 - 1,
                    torch.randint(0, 10, (32,), generator=g))
    cfg, tc = from_profile(get_profile("smoke").cvit, 0, kind="vit")
    tc = dataclasses.replace(tc, steps=3, batch_size=8, warmup_steps=2, grad_clip=0.05,
                             ckpt_every=100)
    ours = StepRunner.of(RECIPE.setup(cfg, tc, data), tc)
    train_steps(ours, 0, 3)
    theirs = RECIPE.setup(cfg, tc, data)
    train({RECIPE.module: theirs.model}, theirs.optimizers, theirs.step_fn, tc, tmp_path, {"t": 1},
          progress=False)
    saved, _ = load_tensors(tmp_path / "checkpoint.safetensors")
    model = ours.modules[RECIPE.module]
    for k, v in model.state_dict().items():
        assert torch.equal(v, saved[f"model.model.{k}"]), k
        assert torch.equal(ours.emas["model"].shadow[k], saved[f"ema.model.{k}"]), k
    # the schedule's rate at the last step
    assert ours.lr == pytest.approx(cosine_lr(2, 3, tc.lr, 2))
    # the clipping is in the timed step: without it the same steps end elsewhere
    unclipped = dataclasses.replace(tc, grad_clip=None)
    other = StepRunner.of(RECIPE.setup(cfg, unclipped, data), unclipped)
    train_steps(other, 0, 3)
    assert (not all(torch.equal(a, b)
                    for a, b in zip(other.modules["model"].parameters(), model.parameters())))
    assert train_rate(RECIPE, cfg, tc, data, steps=2) > 0
