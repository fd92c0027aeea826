"""copkit.efficiency: FLOPs against closed forms, operator counts, and which steps step_rate runs."""

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
