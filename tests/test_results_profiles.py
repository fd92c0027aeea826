import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from copkit import stats
from copkit.io import atomic_write_json, atomic_write_text
from copkit.profiles import PROFILES, get_profile, pick_device
from copkit.results import (
    alias,
    claim,
    decide,
    in_words,
    read_results,
    summary,
    tested,
    verdict_counts,
    write_results,
)


def test_summary_matches_numpy_definitions():
    s = summary([1.0, 2.0, 4.0])
    assert s["n"] == 3 and s["mean"] == pytest.approx(7 / 3)
    assert (s["std"] == pytest.approx(((1 - 7 / 3) ** 2 + (2 - 7 / 3) ** 2
                                       + (4 - 7 / 3) ** 2) ** 0.5 / 2 ** 0.5))
    assert summary(5.0) == {"mean": 5.0, "std": 0.0, "n": 1}
    with pytest.raises(ValueError):
        summary([])


def test_claim_refuses_unknown_verdict_and_empty_reason():
    with pytest.raises(ValueError, match="verdict must be one of"):
        claim(1.0, 2.0, "sort of", "because")
    with pytest.raises(ValueError, match="one-sentence reason"):
        claim(1.0, 2.0, "not testable", "  ")


def test_write_results_shape(tmp_path):
    c = {"table1.contrastive.mask_entropy": claim(4.267, [4.1, 4.3, 4.2], "not testable",
                                                  "N differs, 3 seeds.")}
    path = write_results(tmp_path, "02_x", profile="smoke", device="cpu", seeds=[0, 1, 2], claims=c,
                         metrics={"loss": torch.tensor([1.0, 2.0]), "area_nats": torch.tensor(3.5)})
    got = json.loads(path.read_text())
    assert got["chapter"] == "02_x" and got["profile"] == "smoke" and got["seeds"] == [0, 1, 2]
    assert got["claims"]["table1.contrastive.mask_entropy"]["ours"]["n"] == 3
    assert got["metrics"] == {"loss": [1.0, 2.0], "area_nats": 3.5}
    assert got["commit"]
    with pytest.raises(ValueError, match="must be made with copkit.results.claim"):
        write_results(tmp_path, "bad", profile="smoke", device="cpu", seeds=[0],
                      claims={"x": {"paper": 1}}, metrics={})


def test_claim_section_is_optional_stored_and_written(tmp_path):
    plain = claim(1.0, 2.0, "not testable", "because.")
    assert "section" not in plain
    linked = claim(1.0, 2.0, "not testable", "because.", section="ch3-dag")
    assert linked["section"] == "ch3-dag"
    for bad in ("", "Ch3 DAG", "#ch3-dag", 3):
        with pytest.raises(ValueError, match="section must be a label"):
            claim(1.0, 2.0, "not testable", "because.", section=bad)
    path = write_results(tmp_path, "03_x", profile="smoke", device="cpu", seeds=[0],
                         claims={"dag.acyclic": linked, "eq1": plain}, metrics={})
    got = json.loads(path.read_text())["claims"]
    assert got["dag.acyclic"]["section"] == "ch3-dag" and "section" not in got["eq1"]
    with pytest.raises(ValueError, match="must be made with copkit.results.claim"):
        write_results(tmp_path, "bad", profile="smoke", device="cpu", seeds=[0],
                      claims={"x": {**plain, "link": "somewhere"}}, metrics={})


def test_atomic_write_leaves_old_file_when_serialisation_fails(tmp_path):
    target = tmp_path / "r.json"
    atomic_write_json(target, {"a": 1})
    with pytest.raises(ValueError):
        atomic_write_json(target, {"a": float("nan")})  # NaN refused before anything is written
    assert json.loads(target.read_text()) == {"a": 1}
    atomic_write_text(target, "new")
    assert target.read_text() == "new"
    assert [p.name for p in tmp_path.iterdir()] == ["r.json"]  # no temporary files left


def test_profiles_and_devices():
    assert set(PROFILES) == {"smoke", "cpu", "gpu"}
    assert get_profile("smoke").entropy.random_orders >= 20
    assert get_profile("cpu").entropy.random_orders >= 20
    with pytest.raises(ValueError, match="unknown profile 'huge'; choose one of smoke, cpu, gpu"):
        get_profile("huge")
    assert pick_device("cpu") == torch.device("cpu")
    auto = pick_device("auto")
    assert (auto.type == ("cuda" if torch.cuda.is_available() else "mps"
                          if torch.backends.mps.is_available() else "cpu"))
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="sees no CUDA GPU"):
            pick_device("cuda")
    with pytest.raises(ValueError, match="unknown device"):
        pick_device("tpu7")


def test_cli_data_reports_missing_data(tmp_path, monkeypatch, capsys):
    from copkit import data
    from copkit.cli import main

    monkeypatch.setenv("COPKIT_DATA", str(tmp_path))
    monkeypatch.setattr(data, "_SYSTEM_DIR", tmp_path / "none")
    monkeypatch.setattr(data, "project_root", lambda: tmp_path)
    assert main(["data", "--no-download"]) == 2
    assert "apt-get install dataset-fashion-mnist" in capsys.readouterr().err


def test_git_commit_ignores_book_outputs(tmp_path):
    import subprocess

    from copkit.results import git_commit

    run = lambda *a: subprocess.run(a, cwd=tmp_path, check=True, capture_output=True)  # noqa: E731
    run("git", "init", "-q")
    (tmp_path / "book").mkdir()
    (tmp_path / "book" / "r.json").write_text("1")
    (tmp_path / "code.py").write_text("x = 1")
    run("git", "add", "-A")
    run("git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "c")
    clean = git_commit(tmp_path)
    assert len(clean) == 40
    (tmp_path / "book" / "r.json").write_text("2")
    assert git_commit(tmp_path) == clean
    (tmp_path / "code.py").write_text("x = 2")
    assert git_commit(tmp_path) == clean + "-dirty"


@pytest.mark.parametrize("name", ["smoke", "cpu", "gpu"])
def test_every_profile_builds_its_models(name):
    """Each profile's sizes make valid models (head sizes, RoPE) and training configurations."""
    from copkit import cmar, comae, cvit
    from copkit.profiles import get_profile

    p = get_profile(name)
    for experiment in comae.EXPERIMENTS:
        cfg, tc = comae.from_profile(p.comae, 0, experiment=experiment)
        assert tc.precision == p.comae.precision
        comae.CoMAE(cfg)
    for phase in cmar.PHASES:
        mcfg, mtc = cmar.from_profile(p.cmar, 0, phase=phase)
        assert mtc.precision == p.cmar.precision
    cmar.MAR(mcfg)
    for kind in cvit.MODEL_KINDS:
        vcfg, vtc = cvit.from_profile(p.cvit, 0, kind=kind)
        assert vtc.precision == p.cvit.precision
        cvit.build_model(vcfg)


def test_bf16_training_step_on_the_cpu(tmp_path):
    """precision = "bf16": the forward runs under autocast, the weights and optimiser stay
    float32."""
    from copkit.comae import RECIPE, CoMAEConfig, CoMAEData
    from copkit.recipe import TrainConfig
    from copkit.train import fit

    cfg = CoMAEConfig(grid=(3, 3), token_dim=4, enc_width=8, enc_depth=1, enc_heads=2, dec_width=8,
                      dec_depth=1, dec_heads=2, targets_per_image=3)
    tokens = torch.randn(16, 9, 4, generator=torch.Generator().manual_seed(0))
    tc = TrainConfig(steps=4, batch_size=4, lr=1e-2, precision="bf16")
    run = fit(RECIPE, cfg, tc, CoMAEData(tokens, tokens[:4]), {"t": 1}, tmp_path, progress=False)
    assert all(torch.isfinite(torch.tensor(r["loss"])) for r in run.metrics if "loss" in r)
    assert all(p.dtype == torch.float32 for p in run.model.parameters())
    with pytest.raises(ValueError, match="precision must be"):
        TrainConfig(steps=1, batch_size=1, precision="fp16")


def _step_under_bf16(step_fn, model) -> None:
    """Two steps of ``step_fn`` with the forward under bfloat16 autocast, as copkit.train runs
    precision = "bf16": the loss is a finite float32 and every gradient is finite."""
    from copkit.recipe import step_generator

    for t in range(2):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss, _, _ = step_fn(t, step_generator(0, t))
        model.zero_grad(set_to_none=True)
        loss.backward()
        assert loss.dtype == torch.float32 and torch.isfinite(loss)
        grads = [p.grad for p in model.parameters() if p.grad is not None]
        assert grads and all(torch.isfinite(g).all() for g in grads)


@pytest.mark.parametrize("kind", ["random", "descending"])
def test_every_mar_step_runs_under_bf16_autocast(kind):
    """The gpu profile trains MAR in bf16: the decoder scatters half-precision activations into a
    float32 mask token, which scatter refuses unless one is cast (it crashed before)."""
    from copkit.cmar import MAR, MARConfig, mar_step_fn

    torch.manual_seed(0)
    model = MAR(MARConfig(grid=(7, 7), width=16, enc_depth=1, dec_depth=1, heads=2, buffer=2,
                          head_width=16, head_depth=1, diffusion_steps=50, diffusion_batch_mul=2))
    g = torch.Generator().manual_seed(0)
    images, labels = (torch.rand(8, 1, 28, 28, generator=g) * 2 - 1,
                      torch.randint(0, 10, (8,), generator=g))
    collapse = torch.stack([torch.randperm(49, generator=g) for _ in range(8)])
    _step_under_bf16(mar_step_fn(model, images, labels, 4, 0, kind, collapse=collapse), model)


@pytest.mark.parametrize("kind", ["vit", "rvit", "cvit", "pruned"])
def test_every_cvit_step_runs_under_bf16_autocast(kind):
    from copkit import cvit
    from copkit.profiles import get_profile

    cfg = cvit.from_profile(get_profile("smoke").cvit, 0, kind=kind)[0]
    torch.manual_seed(0)
    model = cvit.build_model(cfg)
    g = torch.Generator().manual_seed(0)
    images, labels = (torch.rand(8, 1, 28, 28, generator=g) * 2 - 1,
                      torch.randint(0, 10, (8,), generator=g))
    orders = torch.stack([torch.randperm(49, generator=g) for _ in range(8)])
    _step_under_bf16(cvit.cvit_step_fn(model, cfg, images, labels, orders, 4, 0), model)


def test_the_feature_classifier_step_runs_under_bf16_autocast():
    from copkit.metrics import FeatureNet, classifier_step_fn

    torch.manual_seed(0)
    net = FeatureNet()
    g = torch.Generator().manual_seed(0)
    images, labels = (torch.rand(8, 1, 28, 28, generator=g) * 2 - 1,
                      torch.randint(0, 10, (8,), generator=g))
    _step_under_bf16(classifier_step_fn(net, images, labels, 4, 0), net)


def test_mean_sd_is_the_sample_sd_of_the_values():
    from copkit.results import mean_sd

    # mean 2, sample variance ((1)^2 + 0 + 1^2) / 2 = 1
    assert mean_sd([1.0, 2.0, 3.0], 2) == "2.00 ± 1.00"
    assert mean_sd(summary([1.0, 2.0, 3.0]), 1, show_n=True) == "2.0 ± 1.0 (n=3)"
    assert mean_sd([7.0]) == "7.0 ± 0.0"
    # significant figures never drop integer digits, and never print scientific notation for them
    assert (mean_sd({"mean": 12345.678, "std": 0.01234, "n": 2}, 3, significant=True)
            == "12,346 ± 0.012")
    assert mean_sd({"mean": -0.001, "std": 0.02, "n": 2}, 1) == "0.0 ± 0.0"


def test_markdown_table_shape_escaping_and_ragged_rows():
    from copkit.results import markdown_table

    text = markdown_table(["a", "b"], [[1, "x|y"], [2.5, ""]])
    lines = text.splitlines()
    assert lines == ["| a | b |", "|---|---|", "| 1 | x\\|y |", "| 2.5 |  |"]
    # every line has the same number of unescaped separators: the table is rectangular
    assert {line.replace("\\|", "").count("|") for line in lines} == {3}
    with pytest.raises(ValueError, match="row 1 has 1 cells, the header 2"):
        markdown_table(["a", "b"], [[1, 2], [3]])


def test_in_words_groups_claims_by_verdict_in_order_and_says_each_once():
    from copkit.results import VERDICT_WORDS, in_words

    claims = {"x": claim(1, 1.0, "not reproduced", "X fails.", exact=True),
              "y": claim(1, 1.0, "reproduced", "Y holds.", section="ch9-y", exact=True),
              "z": claim(1, 1.0, "reproduced", "Z holds.", exact=True)}
    lines = in_words(claims).splitlines()
    assert lines == [VERDICT_WORDS["reproduced"], "", "- Y holds. (see {ref}`ch9-y`)", "- Z holds.",
                     "", VERDICT_WORDS["not reproduced"], "", "- X fails."]
    text = in_words(claims, links=False)
    for c in claims.values():
        assert text.count(c["why"]) == 1
    assert "{ref}" not in text
    assert in_words({}) == ""


def test_headline_flag_is_stored_only_when_true_and_counted(tmp_path):
    from copkit.results import headlines, read_results, verdict_counts

    plain, head = claim(1, 2.0, "partly", "p.",
                        exact=True), claim(1, 2.0, "reproduced", "h.", headline=True, exact=True)
    assert "headline" not in plain and head["headline"] is True
    write_results(tmp_path, "02_x", profile="smoke", device="cpu", seeds=[0],
                  claims={"a": plain, "b": head}, metrics={})
    write_results(tmp_path, "01_y", profile="smoke", device="cpu", seeds=[0],
                  claims={"c": claim(1, 2.0, "partly", "q.", exact=True)}, metrics={})
    (tmp_path / "runtimes-smoke.json").write_text("{}")  # not a chapter's results file
    results = read_results(tmp_path)
    assert list(results) == ["01_y", "02_x"]
    counts = verdict_counts(results)
    assert (dict(counts["02_x"]) == {"reproduced": 1, "partly": 1, "negligible": 0,
                                     "not reproduced": 0, "inconclusive": 0, "not testable": 0})
    assert (dict(counts["01_y"]) == {"reproduced": 0, "partly": 1, "negligible": 0,
                                     "not reproduced": 0, "inconclusive": 0, "not testable": 0})
    assert [(ch, cid) for ch, cid, _ in headlines(results)] == [("02_x", "b")]


def test_section_labels_reads_markdown_targets_only(tmp_path):
    from copkit.results import section_labels

    nb = {"cells": [{"cell_type": "markdown",
                     "source": ["(ch5-table5)=\n", "## Table 5\n", "see (not-a-label)= here\n"]},
                    {"cell_type": "code", "source": ["(ch5-code)=\n"]},
                    {"cell_type": "markdown", "source": "(ch5-knees)=\n### Knees"}]}
    path = tmp_path / "05_x.ipynb"
    path.write_text(json.dumps(nb))
    assert section_labels(path) == {"ch5-table5", "ch5-knees"}
    assert section_labels(tmp_path / "missing.ipynb") == set()


def test_a_verdict_other_than_not_testable_needs_a_test_or_an_exact_computation():
    with pytest.raises(ValueError, match="needs a test"):
        claim(1.0, [1.0, 1.2], "reproduced", "the sign is right.")
    with pytest.raises(ValueError, match="comes from a test"):
        claim(1.0, 2.0, "inconclusive", "unclear.", exact=True)
    assert claim(0.0, 1e-12, "reproduced", "identity to rounding.", exact=True)["exact"] is True


def test_decide_applies_holm_over_every_chapter_and_counts_an_alias_once(tmp_path):
    """Planted p-values: the Holm threshold of a claim depends on the other chapters' claims."""
    rng = np.random.default_rng(0)
    # p ~ 1e-20: reproduced whatever the family
    big = stats.welch(rng.normal(0, 1, 40), rng.normal(3, 1, 40))
    near = stats.one_sample([0.30, 0.32, 0.35, 0.33, 0.31, 0.36], 0.3)  # p ~ 0.02: only alone
    assert 0.0125 < near.p < 0.05  # significant alone, not once multiplied by 4
    other = {"z.big": tested("lower", 1.0, big, "lower", "B is lower.", smallest=0.5)}
    mine = {"a.near": tested(0.3, 1.0, near, "higher", "A is higher.", smallest=0.01),
            "a.same": alias("a.near", 0.3, 1.0, "The same comparison read the other way."),
            "a.none": claim("open", 1.0, "not testable", "Not here.")}
    decided = decide(mine, "02_a", tmp_path)  # no other results yet: a family of one
    assert decided["a.near"]["verdict"] == "reproduced" and decided["a.near"]["test"]["family"] == 1
    assert (decided["a.same"]["verdict"] == "reproduced"
            and decided["a.same"]["test"]["alias_of"] == "a.near")
    assert decided["a.none"]["verdict"] == "not testable" and "test" not in decided["a.none"]
    # three more tested claims elsewhere in the book: Holm multiplies the smaller p's
    for k in range(3):
        other[f"z.null{k}"] = tested("higher", 1.0, stats.welch([1.0, 2.0, 3.0], [1.1, 2.2, 2.9]),
                                     "higher", "Null.", smallest=0.5)
    write_results(tmp_path, "01_z", profile="smoke", device="cpu", seeds=[0],
                  claims=decide(other, "01_z", tmp_path), metrics={})
    decided = decide(mine, "02_a", tmp_path)
    t = decided["a.near"]["test"]
    # second smallest of five
    assert t["family"] == 5 and t["p_holm"] == pytest.approx(min(1.0, 4 * near.p))
    assert decided["a.near"]["verdict"] == decided["a.same"]["verdict"] == "inconclusive"
    assert read_results(tmp_path)["01_z"]["claims"]["z.big"]["verdict"] == "reproduced"
    text = in_words(decided, links=False)
    assert "Inconclusive" in text and "Holm p = " in text and "the same test as `a.near`" in text
    with pytest.raises(ValueError, match="no verdict yet"):
        write_results(tmp_path, "02_a", profile="smoke", device="cpu", seeds=[0], claims=mine,
                      metrics={})


def test_a_directional_claim_states_the_smallest_effect_that_matters(tmp_path):
    """Stated before measuring: without it a directional claim is refused; with it a significant
    but small effect is "negligible", said in words, and the tally counts it on its own."""
    rng = np.random.default_rng(1)
    base = rng.normal(0.7, 0.1, 2000)
    tiny = stats.paired(base + rng.normal(0.004, 0.02, 2000), base, unit="test images")
    with pytest.raises(ValueError, match="smallest"):
        tested("higher", 1.0, tiny, "higher", "A is higher.")
    decided = decide({"t.tiny": tested("higher", 1.0, tiny, "higher", "A is barely higher.",
                                       smallest=0.05)}, "01_n", tmp_path)
    assert decided["t.tiny"]["verdict"] == "negligible"
    text = in_words(decided, links=False)
    assert (text.startswith("**Negligible**")
            and "the smallest effect that matters was set at 0.05" in text)
    write_results(tmp_path, "01_n", profile="smoke", device="cpu", seeds=[0], claims=decided,
                  metrics={})
    assert verdict_counts(read_results(tmp_path))["01_n"]["negligible"] == 1


def test_a_claim_cannot_say_a_number_it_did_not_measure(tmp_path):
    said = claim(0.78, {"mean": 0.9012, "std": 0.0, "n": 3}, "not testable",
                 "The knee is at 0.90, 12 points past.")
    with pytest.raises(ValueError, match="says 12, which no number"):
        write_results(tmp_path, "05_x", profile="smoke", device="cpu", seeds=[0],
                      claims={"k": said}, metrics={})
    said = claim(0.78, {"mean": 0.9012, "std": 0.0, "n": 3}, "not testable",
                 "The knee is at 0.90, 12 points past.")
    write_results(tmp_path, "05_x", profile="smoke", device="cpu", seeds=[0], claims={"k": said},
                  # a measured number anywhere in the file supports it
                  metrics={"gap_points": 12.1})
    assert not list(tmp_path.glob("*.tmp*"))


def test_a_tests_text_follows_the_books_number_rule(tmp_path):
    """p below 1e-6 as "< 1e-6" (and the results file accepts that bound), a detectable effect of
    hundreds without scientific notation, no "-0.00"."""
    from copkit.results import test_text

    rng = np.random.default_rng(0)
    big = tested("higher", 1.0,
                 stats.one_sample(100 + rng.normal(0, 1, 100), 0.0, unit="random orders"), "higher",
                 "Far above.", paper_effect=-0.041, smallest=1.0)
    wide = tested("lower", 1.0, stats.welch([100.0, 600.0, 350.0], [400.0, 90.0, 700.0]), "lower",
                  "Noisy.", paper_effect=-0.077, smallest=10.0)
    decided = decide({"big": big, "wide": wide}, "01_t", tmp_path)
    text = test_text(decided["big"]["test"])
    assert ", p < 1e-6, Holm p < 1e-6 over" in text and "= <" not in text
    assert not re.search(r"\de[-+]?\d", text.replace("< 1e-6", ""))  # no other scientific notation
    wide_text = test_text(decided["wide"]["test"])
    assert ("e+" not in wide_text and re.search(r"could detect with 80% power is [\d,]{3,}, the "
                                                r"paper's is -0.077", wide_text))
    write_results(tmp_path, "01_t", profile="smoke", device="cpu", seeds=[0], claims=decided,
                  metrics={"power": 0.8})


def test_a_chapter_at_another_profile_writes_beside_the_book_not_into_it(tmp_path, monkeypatch,
                                                                         capsys):
    from copkit.results import book_profile, results_folder

    # a project (copkit.data.project_root finds it)
    (tmp_path / "_toc.yml").write_text("root: intro\n")
    (tmp_path / "copkit").mkdir()
    (tmp_path / "chapters").mkdir()
    book = tmp_path / "book" / "results"
    book.mkdir(parents=True)
    for name in ("01_a", "02_b"):
        (book / f"{name}.json").write_text(json.dumps({"chapter": name, "profile": "cpu"}))
    monkeypatch.chdir(tmp_path / "chapters")  # as JupyterLab runs a chapter
    monkeypatch.delenv("COPKIT_WRITE_BOOK", raising=False)
    assert book_profile() == "cpu"
    scratch = tmp_path / ".scratch" / "book" / "smoke" / "results"
    assert results_folder("../book/results", "smoke") == scratch
    assert results_folder("../book/results", "cpu") == Path("../book/results")
    assert results_folder(tmp_path / "elsewhere", "smoke") == tmp_path / "elsewhere"
    c = {"x": claim(1.0, [1.0], "not testable", "N differs.")}
    path = write_results("../book/results", "01_a", profile="smoke", device="cpu", seeds=[0],
                         claims=c, metrics={})
    assert path == scratch / "01_a.json" and json.loads(path.read_text())["profile"] == "smoke"
    # the book's file is untouched
    assert json.loads((book / "01_a.json").read_text())["profile"] == "cpu"
    assert "results go to" in capsys.readouterr().out
    monkeypatch.setenv("COPKIT_WRITE_BOOK", "1")  # tools/run_chapters.py --out book
    assert results_folder("../book/results", "smoke") == Path("../book/results")


# --- the helpers Chapter 5 used to define for itself


def test_at_ratio_reads_each_seeds_value_at_a_ratio_of_the_grid():
    from copkit.results import at_ratio

    curves = {"CViT": np.array([[80.0, 70.0, 60.0], [81.0, 72.0, 58.0]])}
    assert at_ratio(curves, [0.0, 0.5, 0.78], "CViT", 0.78).tolist() == [60.0, 58.0]
    assert at_ratio(curves, np.array([0.0, 0.5, 0.78]), "CViT", 0.5).tolist() == [70.0, 72.0]
    with pytest.raises(ValueError, match="not on the grid"):
        at_ratio(curves, [0.0, 0.5, 0.78], "CViT", 0.3)
    with pytest.raises(ValueError, match="must be"):
        at_ratio(curves, [0.0, 0.5], "CViT", 0.5)
    with pytest.raises(KeyError):
        at_ratio(curves, [0.0, 0.5, 0.78], "RViT", 0.5)


def test_paired_claim_is_the_paired_test_of_a_against_b():
    from copkit.results import paired_claim

    a, b = [70.0, 71.0, 72.5], [67.0, 67.5, 68.0]
    said = []
    c = paired_claim(70.57, a, b, "higher", "rvit", lambda d: said.append(d) or f"by {d:.2f}",
                     paper_effect=3.3, smallest=1.0, section="ch5-table5")
    assert said == [pytest.approx(np.mean(a) - np.mean(b))]
    want = stats.claim_row(stats.paired(a, b), expect="higher", paper_effect=3.3, smallest=1.0)
    assert c["test"] == want
    assert c["ours"] == {**summary(a), "rvit": summary(b)} and c["section"] == "ch5-table5"
    assert c["paper"] == 70.57 and c["verdict"] is None


def test_exact_verdict_reads_the_stated_criteria_on_the_numbers():
    from copkit.results import exact_verdict

    near = stats.Partial.ci_within(94.16, 96.16, "within 1 point of 95.16")
    faster = stats.Partial.ci_beyond(2.0, "higher", "more than twice as fast")
    assert exact_verdict((near, 95.5)) == "reproduced"
    assert exact_verdict((near, 78.0), (near, 94.96)) == "partly"
    assert exact_verdict((near, 78.0), (near, 90.0)) == "not reproduced"
    assert exact_verdict((near, 78.0)) == "not reproduced"
    assert exact_verdict((faster, 3.2)) == "reproduced"
    assert exact_verdict((stats.Partial.ci_beyond(20.66, "higher"), 5.2), (faster, 5.2)) == "partly"
    with pytest.raises(ValueError, match="not finite"):
        exact_verdict((near, float("nan")))
    with pytest.raises(TypeError):
        exact_verdict((lambda r: True, 1.0))
    # the verdict goes into an exact claim
    assert claim(95.16, {"n": 1}, exact_verdict((near, 78.0), (near, 94.96)), "A reason.",
                 exact=True)["verdict"] == "partly"


def test_with_paper_and_finite_mean_sd():
    from copkit.results import finite_mean_sd, mean_sd, with_paper

    assert with_paper("71.2 ± 1.3", 70.57) == "71.2 ± 1.3 (70.6)"
    assert with_paper("19.6 ± 0.4", 72.19, 2) == "19.6 ± 0.4 (72.19)"
    assert with_paper("x", None) == "x"
    assert finite_mean_sd([0.78, float("nan"), 0.82], 2) == mean_sd([0.78, 0.82], 2)
    assert finite_mean_sd(np.array([np.nan, np.nan])) == "none"
    assert finite_mean_sd([], none="–") == "–"


def test_the_papers_table5_is_one_table_with_its_own_arithmetic():
    from copkit.cvit import (
        PAPER_ATTENTION_SAVING,
        PAPER_KNEE,
        PAPER_RATIOS,
        PAPER_TABLE5,
        paper_value,
    )

    # the saving the paper states is 1 - keep^2 at the keep share its knee gives
    assert PAPER_ATTENTION_SAVING == pytest.approx(100 * (1 - (1 - PAPER_KNEE["mask_ratio"]) ** 2))
    # the paper's AuC ranking (Table 5): CViT first, DynamicViT last
    ranked = sorted(PAPER_TABLE5, key=lambda m: -PAPER_TABLE5[m]["auc"])
    assert ranked == ["CViT", "RViT", "ViT+C", "ViT", "DynamicViT-style"]
    for model, row in PAPER_TABLE5.items():
        assert set(row) == {f"top{k}@{round(100 * r)}" for r in PAPER_RATIOS for k in (1, 5)} | {
            "auc"}
        for r in PAPER_RATIOS:  # top-5 is never below top-1, and accuracy falls with the ratio
            assert row[f"top5@{round(100 * r)}"] >= row[f"top1@{round(100 * r)}"]
        tops = [row[f"top1@{round(100 * r)}"] for r in PAPER_RATIOS]
        assert tops == sorted(tops, reverse=True), model
        assert paper_value(model, "auc") == row["auc"]
    assert paper_value("CViT", "top1", 0.78) == 70.57
    with pytest.raises(ValueError, match="mask ratios"):
        paper_value("CViT", "top1", 0.6)
    with pytest.raises(KeyError):
        paper_value("DynamicViT", "auc")


def test_chapter_setup_gives_what_every_chapter_starts_with(tmp_path):
    import matplotlib.pyplot as plt

    from copkit.profiles import chapter_setup

    plt.rcParams["figure.dpi"] = 72
    book = chapter_setup("smoke", "cpu", seed=3, data_dir=tmp_path, results_dir=tmp_path / "r")
    assert book.profile is PROFILES["smoke"] and book.device == torch.device("cpu")
    assert book.seeds(PROFILES["smoke"].cvit.seeds) == [3 + s for s in PROFILES["smoke"].cvit.seeds]
    assert book.data_dir == tmp_path and book.results_dir == tmp_path / "r"
    assert plt.rcParams["figure.dpi"] == 110 and book.seconds() >= 0
    assert chapter_setup("smoke", "cpu").data_dir is None
    for bad in (-1, 1.5, True):
        with pytest.raises(ValueError, match="seed"):
            chapter_setup("smoke", "cpu", seed=bad)
    with pytest.raises(ValueError, match="unknown profile"):
        chapter_setup("tiny")


def test_bars_off_follows_the_caller_and_tqdm_disable(monkeypatch):
    from copkit.io import bars_off

    monkeypatch.delenv("TQDM_DISABLE", raising=False)
    assert bars_off(True) is False and bars_off(False) is True
    for off in ("1", "true", "yes"):
        monkeypatch.setenv("TQDM_DISABLE", off)
        assert bars_off(True) is True
    for on in ("", "0", "false", "False"):
        monkeypatch.setenv("TQDM_DISABLE", on)
        assert bars_off(True) is False


# ---------------------------------------------------------------------------------------------
# The book's one family, and values as a reader reads them


def _raw_book(tmp_path: Path) -> dict:
    """Two chapters' files as they were written at different times: 01_a decided its claim when
    the book had 27 tested claims, 02_b when it had 24; together they hold 3. Claim a.near is
    significant alone (p ~ 0.02) but not once Holm multiplies it: its chapter said "reproduced"."""
    near = stats.one_sample([0.30, 0.32, 0.35, 0.33, 0.31, 0.36], 0.3)
    null = stats.welch([1.0, 2.0, 3.0], [1.1, 2.2, 2.9])
    a = {"a.near": tested(0.3, 1.0, near, "higher", "A is higher.", smallest=0.01),
         "a.same": alias("a.near", 0.3, 1.0, "The same comparison read the other way.")}
    b = {"b.null": tested(1.0, 1.0, null, "higher", "Null.", smallest=0.5),
         "b.null2": tested(1.0, 1.0, null, "higher", "Null again.", smallest=0.5),
         "b.open": claim("open", 1.0, "not testable", "Not here.")}
    for chapter, claims, family in (("01_a", a, 27), ("02_b", b, 24)):
        decided = decide(claims, chapter, tmp_path / "none")  # a family of its own
        for c in decided.values():
            if c.get("test"):
                c["test"]["family"] = family
        write_results(tmp_path, chapter, profile="smoke", device="cpu", seeds=[0],
                      claims=decided, metrics={})
    return read_results(tmp_path)


def test_book_results_decide_every_file_over_one_family(tmp_path):
    from copkit.results import book_results, family_size

    raw = _raw_book(tmp_path)
    assert raw["01_a"]["claims"]["a.near"]["test"]["family"] == 27
    with pytest.raises(ValueError, match="families of \\[24, 27\\]"):
        family_size(raw)
    book, ran_with = book_results(raw)
    assert family_size(book) == 3  # a.near, b.null, b.null2; the alias once, b.open untested
    near = book["01_a"]["claims"]["a.near"]
    # the smallest of three p's: Holm multiplies it by 3
    assert near["test"]["p"] < book["02_b"]["claims"]["b.null"]["test"]["p"]
    assert near["test"]["p_holm"] == pytest.approx(3 * near["test"]["p"])
    assert near["verdict"] == "inconclusive" and book["01_a"]["claims"]["a.same"]["verdict"] == \
        "inconclusive"
    assert ran_with == {("01_a", "a.near"): "reproduced", ("01_a", "a.same"): "reproduced"}
    # the raw files are left as they were; what is not a claim is kept
    assert raw["01_a"]["claims"]["a.near"]["verdict"] == "reproduced"
    assert book["02_b"]["profile"] == "smoke" and "test" not in book["02_b"]["claims"]["b.open"]


def test_the_sd_of_equal_values_is_zero_not_float_noise():
    from copkit.results import brief, mean_sd

    knee = {"mean": 0.7799999999999999, "std": 1.3597399555105182e-16, "n": 3}
    assert mean_sd(knee, 4, significant=True) == "0.7800 ± 0"
    assert mean_sd(knee, 2) == "0.78 ± 0.00"
    assert brief(knee) == "0.7800 ± 0 (n=3)"
    # a real spread, however small beside the mean, is kept
    assert mean_sd({"mean": 0.78, "std": 2e-9, "n": 3}, 4, significant=True) == "0.7800 ± 2.0e-9"


def test_effect_scale_is_the_largest_number_a_test_states():
    from copkit.results import effect_scale

    assert effect_scale({"effect": -1.1e-16, "ci": [None, None], "margin": 0.07}) == 0.07
    assert effect_scale({"effect": 2.0, "ci": [-1.0, 5.0], "paper_effect": -3.0}) == 5.0
    assert effect_scale({"effect": float("nan"), "ci": None}) is None and effect_scale(None) is None


@pytest.mark.parametrize("key, words", [
    ("paper_late_share", "paper late share"), ("H_mask_late", "H_mask late"), ("L_r", "L_r"),
    ("CMAR_collapse_minus_MAR_random", "CMAR collapse minus MAR random"), ("n", "n"),
    ("(a) class mean", "(a) class mean"), ("0.5", "0.5"), ("spearman_after_0", "spearman after 0"),
])
def test_key_words(key, words):
    from copkit.results import key_words

    assert key_words(key) == words


@pytest.mark.parametrize("value, kw, want", [
    ({"paper_late_share": 0.2734, "from_step": 5676}, {},
     "paper late share: 27.3%; from step: 5,676"),
    ({"0.5": {"mutual_share": 0.7079, "edges_per_graph": 136.94, "acyclic_share": 0}}, {},
     "0.5: (mutual share 70.8%, edges per graph 136.9, acyclic share 0.0%)"),
    ({"MAR": {"mean": 169.973, "std": 8.211, "n": 3},
      "CMAR": {"mean": 199.917, "std": 12.949, "n": 3}}, {"fid": True},
     "MAR: 170.0 ± 8.2 (n=3); CMAR: 199.9 ± 12.9 (n=3)"),
    ({"mean": 0.3633, "std": 0.0, "n": 1}, {}, "0.3633 (n=1)"),
    ({"mean": 0.7799999999999999, "std": 1.3597399555105182e-16, "n": 3}, {}, "0.78 ± 0 (n=3)"),
    ({"mean": 0.95, "std": 0.02, "n": 2000}, {}, "0.95 ± 0.020 (n=2,000)"),
    ({"violation_rate": 0.005, "triples": 400, "ok": True}, {},
     "violation rate: 0.5%; triples: 400; ok: yes"),
    ({"a": 1, "b": 2, "c": 3, "d": 4, "e": 5}, {}, "a: 1; b: 2; c: 3; d: 4; …"),
    ({"ours": ["CViT", "RViT"], "kendall_tau": 0.2}, {}, "ours: CViT, RViT; kendall tau: 0.2"),
    ({"diff": {"test": "paired t", "effect": -1.951, "ci": [-2.313, -1.589], "p": 0.0019}}, {},
     "diff: -1.95 (95% interval -2.31 to -1.59)"),
    ({"residual": 1.494e-15, "big_share": 3.5}, {}, "residual: 1.494e-15; big share: 3.5"),
    ("4.816 -> 4.267", {}, "4.816 → 4.267"),
    (None, {}, "–"),
])
def test_readable_writes_keys_as_words_shares_as_percentages_and_fids_to_one_decimal(value, kw,
                                                                                      want):
    from copkit.results import readable

    got = readable(value, **kw)
    assert got == want
    assert "{" not in got and "'" not in got


def test_commit_text_says_a_dirty_tree():
    from copkit.results import commit_text

    assert commit_text("c2c41e65eb2bedea99ff-dirty") == "c2c41e65eb2b with uncommitted changes"
    assert commit_text("c2c41e65eb2bedea99ff-dirty", code=True) == \
        "`c2c41e65eb2b` with uncommitted changes"
    assert commit_text("unknown") == "unknown"
