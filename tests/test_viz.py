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
    # an evaluation row: not part of the curve
    rows.insert(30, {"step": 295, "eval": 1, "loss": 100.0})
    rows.insert(5, {"step": 45, "lr": 0.1})  # a row without the key
    steps, smooth = viz.training_curve(rows, window=7)
    loop = [loss[i - 6:i + 1].mean() for i in range(6, 60)]
    assert np.allclose(smooth, loop)
    assert list(steps) == [10 * i for i in range(6, 60)]
    # 6 rows: the window shrinks to 6 // 4 = 1
    few = [{"step": i, "loss": float(i)} for i in range(6)]
    assert np.array_equal(viz.training_curve(few, window=10)[1], np.arange(6.0))


def test_mask_ratio_curves_draw_one_band_per_model_and_the_knees():
    r = np.linspace(0, 0.99, 12)
    top1 = {"A": np.stack([80 - 50 * r, 82 - 50 * r]), "B": np.stack([70 - 60 * r] * 2)}
    top5 = {k: v + 10 for k, v in top1.items()}
    fig = viz.mask_ratio_curves(r, top1, top5,
                                {"A": np.array([0.5, 0.7]), "B": np.array([np.nan, np.nan])},
                                {"A": "tab:red", "B": "tab:blue"}, mark=0.78, n_patches=49)
    left, right = fig.axes
    means = [line.get_ydata() for line in left.get_lines()
             if line.get_label().startswith(("A", "B"))]
    assert np.allclose(means[0], top1["A"].mean(0)) and np.allclose(means[1], top1["B"].mean(0))
    knee = [c for c in left.containers]  # one errorbar for A (B found no knee)
    assert len(knee) == 1 and np.allclose(knee[0].lines[0].get_xdata(), [0.6])
    assert np.allclose(knee[0].lines[0].get_ydata(), [np.interp(0.6, r, top1["A"].mean(0))])
    assert ("49 "
            "patches" in right.get_xlabel()
            and any(np.allclose(line.get_xdata(), 0.78) for line in right.get_lines()))
    plt.close(fig)


def test_density_check_histogram_is_a_density_beside_the_pdf():
    draws = np.random.default_rng(0).uniform(0, 1, 5000)
    ax = viz.density_check(draws, lambda x: np.ones_like(x), (0.0, 1.0))
    heights = np.array([p.get_height() for p in ax.patches])
    widths = np.array([p.get_width() for p in ax.patches])
    assert np.sum(heights * widths) == pytest.approx(1.0)
    assert np.allclose(ax.get_lines()[0].get_ydata(), 1.0)
    plt.close(ax.figure)


def test_kept_by_class_shows_each_classes_first_image_and_its_keep_frequency():
    images = torch.zeros(6, 1, 28, 28)
    labels = torch.tensor([1, 0, 1, 0, 2, 2])
    keep = torch.tensor([[0, 1], [0, 2], [3, 4], [0, 5], [6, 7], [6, 8]])
    pred = torch.tensor([1, 1, 1, 0, 2, 0])
    fig = viz.kept_by_class(images, labels, {"M": (keep, pred)}, ["a", "b", "c"], (7, 7))
    axes = np.array(fig.axes).reshape(2, 3)
    assert axes[0, 0].get_title() == "a\nM: b ✗" and axes[0, 1].get_title() == "b\nM: b ✓"
    freq = axes[1, 0].images[-1].get_array()  # class 0: images 1 and 3 keep {0, 2} and {0, 5}
    expect = viz.keep_frequency(keep[labels == 0], 49).reshape(7, 7)
    assert np.allclose(np.asarray(freq), expect) and expect[0, 0] == 1.0 and expect[0, 2] == 0.5
    plt.close(fig)


def test_knee_marker_takes_equal_knees_whose_mean_rounds_past_them():
    """Three equal knees of 0.1: their float mean is 0.10000000000000002, past the minimum."""
    k = np.array([0.1, 0.1, 0.1])
    assert k.mean() > k.min()
    fig, ax = plt.subplots()
    viz.knee_marker(np.linspace(0, 1, 11), np.linspace(100, 0, 11), k, ax)
    assert len(ax.lines) >= 1
    plt.close(fig)


def test_eval_panels_draw_the_seed_mean_per_setting_and_metric():
    rows = lambda offset: [{"step": s, "a": s + offset, "b": -s - offset} for s in (0, 10, 20)]  # noqa: E731
    fig, axes = plt.subplots(1, 2)
    viz.eval_panels({"two seeds": [rows(0), rows(2)], "one run": [rows(5)]}, ("a", "b"), axes,
                    ("A", "B"))
    for ax, sign in zip(axes, (1, -1)):
        lines = {ln.get_label(): ln.get_ydata() for ln in ax.get_lines()}
        # a single run is not called "1 seeds"
        assert set(lines) == {"two seeds (2 seeds)", "one run"}
        # mean of offsets 0, 2
        assert np.allclose(lines["two seeds (2 seeds)"], sign * (np.array([0, 10, 20]) + 1))
        assert np.allclose(lines["one run"], sign * (np.array([0, 10, 20]) + 5))
        assert len(ax.collections) == 1  # the band of the two seeds only
    assert [ax.get_ylabel() for ax in axes] == ["A", "B"]
    plt.close(fig)
