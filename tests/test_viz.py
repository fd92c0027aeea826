"""The figure helpers draw what they say: checked on the arrays matplotlib was handed."""

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from copkit import viz  # noqa: E402


def test_kept_patches_shades_exactly_the_tokens_not_kept():
    fig, ax = plt.subplots()
    image = torch.zeros(1, 28, 28)
    keep = torch.tensor([0, 10, 48])
    viz.kept_patches(image, keep, (7, 7), ax=ax)
    overlay = ax.images[-1].get_array()  # the shading laid over the image, one cell per token
    assert overlay.shape == (7, 7)
    shaded = ~np.ma.getmaskarray(overlay)
    expected = np.ones(49, bool)
    expected[[0, 10, 48]] = False
    assert np.array_equal(shaded.reshape(-1), expected)
    assert not ax.patches  # no frames drawn around the kept patches
    plt.close(fig)


def test_keep_frequency_counts_against_a_loop():
    rng = np.random.default_rng(0)
    keeps = np.stack([rng.permutation(49)[:11] for _ in range(30)])
    freq = viz.keep_frequency(torch.from_numpy(keeps), 49)
    loop = np.array([sum(t in row for row in keeps) for t in range(49)]) / 30
    assert np.allclose(freq, loop)
    assert freq.sum() == pytest.approx(11)  # each image keeps 11
    with pytest.raises(ValueError, match="keeps must be"):
        viz.keep_frequency(np.arange(5), 49)


def test_knee_marker_at_mean_knee_on_the_curve_and_skips_missing():
    fig, ax = plt.subplots()
    x = np.linspace(0, 1, 11)
    y = 100 - 50 * x
    viz.knee_marker(x, y, [0.2, np.nan, 0.4], ax=ax)
    (line,) = [ln for ln in ax.lines if ln.get_marker() == "o"]
    assert line.get_xdata()[0] == pytest.approx(0.3) and line.get_ydata()[0] == pytest.approx(85.0)
    fig2, ax2 = plt.subplots()
    viz.knee_marker(x, y, [np.nan, np.nan], ax=ax2)
    assert not ax2.lines
    plt.close(fig)
    plt.close(fig2)


def test_training_curve_is_a_moving_average_of_the_training_rows():
    rng = np.random.default_rng(1)
    loss = rng.normal(size=60)
    rows = [{"step": 10 * i, "loss": float(v)} for i, v in enumerate(loss)]
    rows.insert(30, {"step": 295, "eval": 1, "loss": 100.0})  # an evaluation row: not part of the curve
    rows.insert(5, {"step": 45, "lr": 0.1})  # a row without the key
    steps, smooth = viz.training_curve(rows, window=7)
    loop = [loss[i - 6:i + 1].mean() for i in range(6, 60)]
    assert np.allclose(smooth, loop)
    assert list(steps) == [10 * i for i in range(6, 60)]
    few = [{"step": i, "loss": float(i)} for i in range(6)]  # 6 rows: the window shrinks to 6 // 4 = 1
    assert np.array_equal(viz.training_curve(few, window=10)[1], np.arange(6.0))
