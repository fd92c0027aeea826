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
    ("NaN teleport", dict(a=_A, teleport=torch.tensor([1.0, math.nan, 1.0, 1.0, 1.0])), r"teleport must be finite"),
]


@pytest.mark.parametrize("solver", [pagerank, pagerank_solve])
@pytest.mark.parametrize("what, kwargs, message", PAGERANK_BAD, ids=[c[0] for c in PAGERANK_BAD])
def test_pagerank_refuses(solver, what, kwargs, message):
    with pytest.raises(ValueError, match=message):
        solver(**kwargs)


def test_pagerank_still_takes_good_input():
    assert pagerank(_A, damping=0.5).converged and torch.allclose(pagerank_solve(_A).sum(), torch.tensor(1.0).double())


# ------------------------------------------------------------------------------------ entropy
_N = 6
_MODEL = GaussianTokens(torch.zeros(_N, 1), torch.eye(_N, dtype=torch.float64) + 0.5)

ENTROPY_BAD = [
    ("a 0/1 integer mask", torch.tensor([0, 1, 0, 0, 1, 0]), r"observed: an integer tensor of N=6 zeros and ones is "
                                                            r"ambiguous"),
    ("a 0/1 integer list", [1, 0, 0, 0, 0, 1], r"ambiguous.*bool"),
    ("an index out of range", torch.tensor([2, 6]), r"observed: token indices must be distinct and in 0\.\.5"),
    ("a negative index", torch.tensor([-1]), r"distinct and in 0\.\.5"),
    ("a repeated index", torch.tensor([3, 3]), r"distinct"),
    ("a float mask", torch.tensor([0.0, 1.0, 0.0, 0.0, 1.0, 0.0]), r"observed: give a bool mask"),
    ("2-d indices", torch.tensor([[0, 2], [1, 3]]), r"observed: give a bool mask"),
    ("a mask of the wrong length", torch.tensor([True, False]), r"observed: a bool mask must be .* N=6"),
]


@pytest.mark.parametrize("what, observed, message", ENTROPY_BAD, ids=[c[0] for c in ENTROPY_BAD])
@pytest.mark.parametrize("entry", ["conditional_entropy", "collapse_entropy", "conditional", "sample_conditional"])
def test_entropy_functions_refuse(entry, what, observed, message):
    call = {"conditional_entropy": lambda: _MODEL.conditional_entropy(observed),
            "collapse_entropy": lambda: _MODEL.collapse_entropy(observed),
            "conditional": lambda: _MODEL.conditional(torch.zeros(_N, 1), observed),
            "sample_conditional": lambda: _MODEL.sample_conditional(torch.zeros(_N, 1), observed, 2)}[entry]
    with pytest.raises(ValueError, match=message):
        call()


def test_entropy_masks_and_indices_are_told_apart():
    mask = torch.tensor([False, True, False, False, True, False])
    by_mask = _MODEL.conditional_entropy(mask)
    assert torch.equal(by_mask, _MODEL.conditional_entropy(torch.tensor([1, 4])))
    assert torch.equal(by_mask, _MODEL.conditional_entropy([4, 1]))  # a list of indices, any order
    assert torch.equal(by_mask, _MODEL.conditional_entropy(mask.tolist()))  # a list of bools is a mask
    assert torch.isfinite(_MODEL.conditional_entropy([])).all()  # nothing observed
    assert _MODEL.conditional_entropy(mask.repeat(3, 1)).shape == (3, _N)  # a batch of masks
    with pytest.raises(ValueError, match="one image's mask"):
        _MODEL.conditional(torch.zeros(_N, 1), mask.repeat(3, 1))
