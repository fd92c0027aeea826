"""One source of run times: the introduction and the README state the minutes that
book/results/runtimes-<profile>.json records (tools/runtimes_text.py writes them), so that no
page can disagree with another."""

import itertools
import json
import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))
import runtimes_text  # noqa: E402

from copkit import fmt  # noqa: E402
from copkit.results import RUNTIME_READERS, read_runtimes  # noqa: E402


def _block(text: str) -> str:
    return text.split(runtimes_text.BEGIN, 1)[1].split(runtimes_text.END, 1)[0]


@pytest.mark.parametrize("rel", runtimes_text.FILES)
def test_the_committed_pages_state_the_recorded_minutes(rel):
    """Every chapter's minutes in intro.md and README.md are the runtimes files' seconds / 60."""
    runtimes = read_runtimes(ROOT / "book" / "results")
    assert "cpu" in runtimes
    block = _block((ROOT / rel).read_text())
    rows = {line.split("|")[1].strip(): [c.strip() for c in line.split("|")[2:-1]]
            for line in block.splitlines() if line.startswith("| 0")}
    profiles = list(runtimes)
    for chapter in sorted({c for p in runtimes.values() for c in p}):
        # they read the file before their own time is in it: no page shows it
        if chapter in RUNTIME_READERS:
            assert chapter not in rows
            continue
        for p, shown in zip(profiles, rows[chapter]):
            want = (fmt.minutes(runtimes[p][chapter]["seconds"]) if chapter in runtimes[p]
                    else "not run")
            assert shown == want, (rel, chapter, p)
    assert block.strip() == runtimes_text.render(ROOT / "book" / "results")


def test_check_passes_on_the_committed_pages(monkeypatch):
    """The command as `make` runs it, called in this process (no second interpreter)."""
    monkeypatch.setattr(sys, "argv", ["runtimes_text.py", "--check"])
    assert runtimes_text.main() == 0


def test_check_fails_and_a_rewrite_fixes_a_stale_page(tmp_path, monkeypatch):
    results = tmp_path / "results"
    results.mkdir()
    (results / "runtimes-cpu.json").write_text(json.dumps({"profile": "cpu", "chapters": {
        "01_a": {"seconds": 42.0, "device": "cpu", "cpu": "X", "cpus": 2, "omp_num_threads": "1"},
        "02_b": {"seconds": 2520.0, "device": "cpu", "cpu": "X", "cpus": 2,
                 "omp_num_threads": "1"}}}))
    page = tmp_path / "intro.md"
    page.write_text(f"# Intro\n\nabout 42 minutes, typed by hand\n\n{runtimes_text.BEGIN}\n| old "
                    f"|\n{runtimes_text.END}\n\nafter\n")
    monkeypatch.setattr(runtimes_text, "ROOT", tmp_path)
    monkeypatch.setattr(runtimes_text, "FILES", ("intro.md",))
    monkeypatch.setattr(runtimes_text, "PRETRAIN_FILES", ())
    monkeypatch.setattr(sys, "argv", ["runtimes_text.py", "--check", "--results", str(results)])
    assert runtimes_text.main() == 1
    monkeypatch.setattr(sys, "argv", ["runtimes_text.py", "--results", str(results)])
    assert runtimes_text.main() == 0
    text = page.read_text()
    assert text.startswith("# Intro\n\nabout 42 minutes, typed by "
                           "hand\n\n") and text.endswith("\n\nafter\n")
    assert ("| 01_a | 0.7 |" in text and "| 02_b | 42.0 |" in text and "| **total** | **42.7** "
                                                                       "|" in text)
    assert "Not measured yet: `smoke` and `gpu`." in text
    monkeypatch.setattr(sys, "argv", ["runtimes_text.py", "--check", "--results", str(results)])
    assert runtimes_text.main() == 0


def test_the_pretrain_costs_are_the_shipped_models_seconds(tmp_path):
    (tmp_path / "pretrained.json").write_text(json.dumps({"models": {
        "vit": {"train_seconds": 7200.0, "epochs": 40}, "comae": {"train_seconds": 1800.0,
                                                                   "epochs": 1.5}}}))
    text = runtimes_text.render_pretrain(tmp_path)
    assert text.startswith("`make pretrain` cost 2.5 hours")
    assert "`vit` 2.0 h (40 epochs) and `comae` 30 min (1.5 epochs)" in text
    assert "make orders" not in text  # no bench.json: nothing said about it
    (tmp_path / "bench.json").write_text(json.dumps({"make_orders": {
        "images": 70000, "seconds": 280.0, "processes": 2, "orders_per_s": 250.0}}))
    assert ("ranks all 70,000 images in 4.7 min (2 processes, 250 images per second"
            in runtimes_text.render_pretrain(tmp_path))


def test_a_page_without_its_markers_is_an_error():
    with pytest.raises(ValueError, match="must hold one"):
        runtimes_text.with_block("no markers", "x", "intro.md")
    with pytest.raises(ValueError, match="must hold one"):
        runtimes_text.with_block(f"{runtimes_text.END}\n{runtimes_text.BEGIN}", "x", "intro.md")


def test_lanes_match_brute_force_list_scheduling():
    """Two lanes, longest first, each chapter to the lane that frees first: the same as trying
    the runner's order by hand; the summary pages add after."""
    seconds = {"01_a": 41.1, "02_b": 2178.7, "03_c": 189.3, "04_d": 1477.3, "05_e": 960.1,
               "06_report": 9.1, "07_performance": 1.2}
    got = runtimes_text.lanes_seconds(seconds, jobs=2)
    # by hand: 02_b | 04_d; 05_e to lane 2 (1477 < 2179); 03_c to lane 1 (2179 < 2437); 01_a to lane
    # 1
    assert got == pytest.approx(max(2178.7 + 189.3 + 41.1, 1477.3 + 960.1) + 9.1 + 1.2)
    # never shorter than the best split of the same chapters into two lanes
    rest = {k: v for k, v in seconds.items() if k[:2] not in ("06", "07")}
    best = min(max(sum(rest[k] for k in lane), sum(rest.values()) - sum(rest[k] for k in lane))
               for r in range(len(rest) + 1) for lane in itertools.combinations(rest, r))
    assert got >= best + 9.1 + 1.2 - 1e-9
    assert runtimes_text.lanes_seconds(seconds, jobs=1) == pytest.approx(sum(seconds.values()))


def test_no_page_types_a_chapters_minutes_outside_the_block():
    """The minutes the issue found typed by hand ('about 42', '18') are gone from the pages."""
    for rel in runtimes_text.FILES:
        text = (ROOT / rel).read_text()
        outside = text.split(runtimes_text.BEGIN)[0] + text.split(runtimes_text.END)[1]
        assert not re.search(r"ch(apter|\.) ?\d[^|\n]{0,40}?\b\d+(\.\d+)? min", outside), rel
        assert "about 42" not in outside
