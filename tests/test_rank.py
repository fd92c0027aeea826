"""copkit.rank against networkx, the exact solve, and planted graphs."""

import shutil
from pathlib import Path

import networkx as nx
import numpy as np
import pytest
import torch

from copkit.rank import (
    class_mean_order,
    collapse_order,
    flip_order,
    keep_top,
    pagerank,
    pagerank_solve,
    ranks,
)
from copkit.tokens import hflip_index


def nx_pagerank(a: np.ndarray, damping=0.85, teleport=None) -> np.ndarray:
    g = nx.DiGraph()
    n = a.shape[0]
    g.add_nodes_from(range(n))
    for i in range(n):
        for j in range(n):
            if a[i, j] > 0:
                g.add_edge(i, j, weight=float(a[i, j]))  # i links to what it relies on
    pers = None if teleport is None else {i: float(teleport[i]) for i in range(n)}
    pr = nx.pagerank(g, alpha=damping, personalization=pers, weight="weight", tol=1e-13,
                     max_iter=10000)
    return np.array([pr[i] for i in range(n)])


def test_matches_networkx_on_50_random_weighted_graphs():
    rng = np.random.default_rng(0)
    graphs = []
    for k in range(50):
        n = int(rng.integers(3, 30))
        a = rng.random((n, n)) * (rng.random((n, n)) < 0.4)
        np.fill_diagonal(a, 0)
        if k % 5 == 0:
            a[rng.integers(n)] = 0  # a dangling patch
        graphs.append(a)
        teleport = rng.random(n) if k % 3 == 0 else None
        ours = pagerank(torch.from_numpy(a),
                        teleport=None if teleport is None else torch.from_numpy(teleport),
                        tol=1e-13)
        want = nx_pagerank(a, teleport=teleport)
        assert np.allclose(ours.scores.numpy(), want, atol=1e-6)
        exact = pagerank_solve(torch.from_numpy(a),
                               teleport=None if teleport is None else torch.from_numpy(teleport))
        assert np.allclose(exact.numpy(), want, atol=1e-6)
        assert bool(ours.converged)


def test_star_graph_ranks_the_centre_first():
    for n, k in ((7, 3), (49, 20), (256, 255)):
        a = torch.zeros(n, n)
        a[:, k] = 1.0
        a[k, k] = 0.0
        assert collapse_order(a)[0].item() == k


def test_dangling_rows_and_batched_equals_looped():
    g = torch.Generator().manual_seed(1)
    a = torch.rand(6, 12, 12, generator=g)
    a[2, 5] = 0.0  # dangling row in graph 2
    a[4] = 0.0  # a graph with no edges at all: the teleport distribution itself
    batched = pagerank(a).scores
    for b in range(6):
        assert torch.allclose(batched[b], pagerank(a[b]).scores, atol=1e-12)
    assert torch.allclose(batched, pagerank_solve(a), atol=1e-9)
    assert torch.allclose(batched[4], torch.full((12,), 1 / 12, dtype=torch.float64))
    assert torch.allclose(batched.sum(-1), torch.ones(6, dtype=torch.float64))


def test_works_at_n_256():
    a = torch.rand(3, 256, 256, generator=torch.Generator().manual_seed(2))
    res = pagerank(a)
    assert res.converged.all()
    assert torch.allclose(res.scores, pagerank_solve(a), atol=1e-9)


def test_order_utilities():
    g = torch.Generator().manual_seed(3)
    masks = torch.rand(5, 16, 16, generator=g)
    order = collapse_order(masks)
    assert torch.equal(order.sort(-1).values, torch.arange(16).expand(5, 16))
    r = ranks(order)
    assert torch.equal(torch.gather(r, 1, order), torch.arange(16).expand(5, 16))
    assert keep_top(order, 4).shape == (5, 4) and keep_top(order, 0.22).shape == (5, 4)
    with pytest.raises(ValueError):
        keep_top(order, 0)
    # ties: a graph whose scores are all equal gives the raster order
    assert torch.equal(collapse_order(torch.ones(4, 4) - torch.eye(4)), torch.arange(4))
    # class-mean order from orders where class 0 always starts with 3 and class 1 with 0
    orders = torch.stack([torch.tensor([3, 0, 1, 2]), torch.tensor([3, 1, 0, 2]),
                          torch.tensor([0, 1, 2, 3])])
    cm = class_mean_order(orders, torch.tensor([0, 0, 1]), 3)
    assert (cm[0, 0] == 3 and torch.equal(cm[1], torch.tensor([0, 1, 2, 3]))
            and torch.equal(cm[2], torch.arange(4)))


def test_flipping_commutes_with_ranking_for_a_flip_equivariant_score():
    # masks of a flipped image = masks with rows and columns permuted by the flip; PageRank is
    # permutation-equivariant, so the order of the flipped masks is the flipped order.
    g = torch.Generator().manual_seed(4)
    masks = torch.rand(3, 49, 49, generator=g)
    perm = hflip_index(49, 7)
    flipped_masks = masks[:, perm][:, :, perm]
    assert torch.equal(collapse_order(flipped_masks), flip_order(collapse_order(masks), 7))


def test_shards_resume_to_the_same_file(tmp_path):
    from copkit.comae import CoMAE, CoMAEConfig
    from copkit.orders import compute_orders, load_orders, merge_shards

    torch.manual_seed(0)
    model = CoMAE(CoMAEConfig(grid=(4, 4), token_dim=4, enc_width=16, enc_depth=1, enc_heads=2,
                              dec_width=16, dec_depth=1, dec_heads=2))
    tokens = torch.randn(50, 16, 4)
    split = np.array(["train"] * 40 + ["test"] * 10)
    full = compute_orders(model, tokens, tmp_path / "full.npz", "h" * 64, split, shard_size=8,
                          progress=False)
    assert compute_orders(model, tokens, tmp_path / "cut.npz", "h" * 64, split, shard_size=8,
                          stop_after_shards=3, progress=False) is None
    assert len(list((tmp_path / "cut.npz.parts").glob("*.npz"))) == 3
    resumed = compute_orders(model, tokens, tmp_path / "cut.npz", "h" * 64, split, shard_size=8,
                             progress=False)
    a, sa, ha = load_orders(full, "h" * 64)
    b, sb, hb = load_orders(resumed)
    assert np.array_equal(a, b) and np.array_equal(sa, sb) and ha == hb and a.dtype == np.uint8
    assert np.array_equal(a, collapse_order(model.masks(tokens)).numpy())
    # a shard of another CoMAE is refused at merge time
    other = compute_orders(model, tokens[:8], tmp_path / "other.npz", "x" * 64, split[:8],
                           shard_size=8, progress=False)
    import shutil
    shutil.copy(tmp_path / "other.npz.parts" / "shard-00000.npz",
                tmp_path / "cut.npz.parts" / "shard-00000.npz")
    with pytest.raises(ValueError, match="made by CoMAE xxxxxxxx, not hhhhhhhh"):
        merge_shards(tmp_path / "cut.npz.parts", tmp_path / "m.npz", "h" * 64, 50, split)
    with pytest.raises(ValueError, match="expected"):
        load_orders(other, "h" * 64)


@pytest.fixture(scope="module")
def smoke_comae(tmp_path_factory) -> Path:
    """A folder with the smoke profile's CoMAE pretrained in it (``pretrained/``), made once for
    the tests below, each of which works on its own copy."""
    from copkit import pretrained

    root = tmp_path_factory.mktemp("smoke-comae")
    pretrained.pretrain(["comae"], "smoke", data_dir=root, folder=root / "pretrained",
                        progress=False)
    return root / "pretrained"


@pytest.mark.fashion_mnist
def test_dataset_orders_rank_the_requested_images_with_the_profiles_comae(tmp_path, smoke_comae):
    from copkit import pretrained
    from copkit.data import load_fashion_mnist
    from copkit.orders import dataset_orders
    from copkit.profiles import get_profile
    from copkit.tokens import patchify

    profile = get_profile("smoke")
    with pytest.raises(FileNotFoundError, match="make pretrain"):
        dataset_orders(profile, tmp_path, n_train=3, n_test=2)
    shutil.copytree(smoke_comae, tmp_path / "pretrained")
    model = pretrained.load("comae", config="smoke", folder=tmp_path / "pretrained")
    train, test, digest = dataset_orders(profile, tmp_path, n_train=6, n_test=4, progress=False)
    x_train, _ = load_fashion_mnist("train", limit=6)
    x_test, _ = load_fashion_mnist("test", limit=4)
    assert torch.equal(train, collapse_order(model.masks(patchify(x_train, 4))))
    assert torch.equal(test, collapse_order(model.masks(patchify(x_test, 4))))
    assert digest == pretrained.info("comae", "smoke", tmp_path / "pretrained")["config_hash"]
    # a small request ranks only what it asks for
    assert (tmp_path / f"orders-{digest[:8]}-6-4.npz").exists()
    assert not (tmp_path / f"orders-{digest[:8]}.npz").exists()


@pytest.mark.fashion_mnist
def test_dataset_orders_read_the_shipped_file_beside_the_comae(tmp_path, smoke_comae):
    """A full orders file in <data_dir>/pretrained/ (shipped) is read, not recomputed: planted
    orders (each image's order is its index's rotation) come back for the requested images."""
    from copkit import pretrained
    from copkit.orders import _npz_bytes, dataset_orders
    from copkit.profiles import get_profile

    profile = get_profile("smoke")
    shutil.copytree(smoke_comae, tmp_path / "pretrained")
    digest = pretrained.info("comae", "smoke", tmp_path / "pretrained")["config_hash"]
    n_train, n_test = 60_000, 10_000
    planted = ((np.arange(49)[None] + np.arange(n_train + n_test)[:, None]) % 49).astype(np.uint8)
    split = np.array(["train"] * n_train + ["test"] * n_test)
    (tmp_path / "pretrained" / f"orders-{digest[:8]}.npz").write_bytes(
        _npz_bytes(orders=planted, split=split, comae_hash=np.array(digest)))
    train, test, got = dataset_orders(profile, tmp_path, n_train=5, n_test=3, progress=False)
    assert got == digest
    assert torch.equal(train, torch.from_numpy(planted[:5].astype(np.int64)))
    assert torch.equal(test, torch.from_numpy(planted[n_train:n_train + 3].astype(np.int64)))
    assert not list(tmp_path.glob("orders-*"))  # nothing ranked


# ------------------------------------------------------------------ order diversity
def test_footrule_is_one_on_average_over_all_pairs_of_orders():
    """Brute force over every pair of the 4! orders of 4 patches: the mean is exactly 1."""
    import itertools

    from copkit.rank import footrule

    perms = torch.tensor(list(itertools.permutations(range(4))))
    a, b = perms.repeat_interleave(len(perms), 0), perms.repeat(len(perms), 1)
    assert float(footrule(a, b).mean()) == pytest.approx(1.0)
    assert float(footrule(perms, perms).max()) == 0.0


def test_fixed_order_recovers_a_planted_order_under_noise():
    from copkit.rank import fixed_order, ranks

    g = torch.Generator().manual_seed(0)
    base = torch.randperm(25, generator=g)
    # each image: the base order, jittered
    noisy = ranks(base).double() + torch.randn(400, 25, generator=g) * 2.0
    orders = torch.sort(noisy, dim=-1).indices
    assert torch.equal(fixed_order(orders), base)


def test_top_overlap_against_a_brute_force_count():
    from copkit.rank import top_overlap

    g = torch.Generator().manual_seed(1)
    orders = torch.stack([torch.randperm(10, generator=g) for _ in range(30)])
    ref = torch.randperm(10, generator=g)
    got = top_overlap(orders, ref, 4)
    want = [len(set(o[:4].tolist()) & set(ref[:4].tolist())) / 4 for o in orders]
    assert got.tolist() == pytest.approx(want)


def test_order_diversity_tells_one_order_from_unrelated_orders():
    from copkit.rank import order_diversity

    g = torch.Generator().manual_seed(2)
    one = torch.randperm(49, generator=g).repeat(200, 1)
    same = order_diversity(one, torch.arange(200) % 10)
    assert same["distinct_first"] == 1 and same["distinct_top"] == 1
    assert same["fixed_overlap"] == 1.0
    assert same["footrule"] == 0.0 and same["footrule_within"] == 0.0
    unrelated = torch.stack([torch.randperm(49, generator=g) for _ in range(200)])
    rand = order_diversity(unrelated, torch.arange(200) % 10)
    assert rand["footrule"] == pytest.approx(1.0, abs=0.03)
    assert rand["footrule_within"] == pytest.approx(1.0, abs=0.06)
    assert rand["fixed_overlap"] < 0.5 and rand["distinct_top"] == 200
    # class-specific orders: within a class one order, across classes unrelated ones
    per_class = torch.stack([torch.randperm(49, generator=g) for _ in range(10)])
    labels = torch.arange(200) % 10
    cls = order_diversity(per_class[labels], labels)
    assert cls["footrule_within"] == 0.0 and cls["footrule_across"] == pytest.approx(1.0, abs=0.1)
    with pytest.raises(ValueError, match="at least 2"):
        order_diversity(one[:1])


def test_same_order_counts_the_graphs_whose_order_changes_ties_aside():
    """A planted batch: 3 graphs keep their order (scaled, tie swapped, rounding noise), 2 change
    it (two clearly different patches swapped, reversed). The share unchanged is 3/5, where a
    stable sort, which breaks the tie by rounding, says 2/5."""
    from copkit.rank import same_order

    g = torch.Generator().manual_seed(3)
    a = torch.rand(5, 12, generator=g, dtype=torch.float64) + 0.1
    a[1, 7] = a[1, 4] + 1e-15 * a[1].max()  # a tie, broken by rounding one way in a ...
    b = 10 * a
    b[1, 7] = b[1, 4] - 1e-15 * b[1].max()  # ... and the other way in b
    b[2] += 1e-16 * torch.rand(12, generator=g, dtype=torch.float64)
    hi, lo = int(a[3].argmax()), int(a[3].argmin())
    b[3, [hi, lo]] = b[3, [lo, hi]]
    b[4] = -b[4]
    got = same_order(a, b)
    assert got.tolist() == [True, True, True, False, False]
    assert float(got.double().mean()) == pytest.approx(3 / 5)
    stable = (torch.sort(-a, stable=True).indices == torch.sort(-b, stable=True).indices).all(-1)
    assert stable.tolist() == [True, False, True, False, False]
    # one graph alone, and no tie tolerance: the tie broken both ways then counts as a change
    assert bool(same_order(a[1], b[1])) and not bool(same_order(a[1], b[1], rtol=0.0))
    with pytest.raises(ValueError, match="same shape"):
        same_order(a, b[:, :5])
    with pytest.raises(ValueError, match="rtol"):
        same_order(a, b, rtol=-1.0)


def test_same_order_is_whether_one_order_sorts_both_score_sets():
    """Brute force over the 5! orders of 5 patches, on scores with exact ties (small integers):
    same_order holds exactly when some order puts both score sets from high to low."""
    import itertools

    from copkit.rank import same_order

    g = torch.Generator().manual_seed(4)
    perms = [list(p) for p in itertools.permutations(range(5))]
    a = torch.randint(0, 3, (300, 5), generator=g).double()
    b = torch.randint(0, 3, (300, 5), generator=g).double()

    def sorts(s: torch.Tensor, p: list) -> bool:
        return bool((s[p][:-1] >= s[p][1:]).all())

    want = [any(sorts(x, p) and sorts(y, p) for p in perms) for x, y in zip(a, b)]
    assert same_order(a, b).tolist() == want
    assert 0 < sum(want) < len(want)
