"""The chapter runner: a failing cell fails the run, names chapter and cell, and never lands in
the output folder; a good chapter lands with its parameters injected."""

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

GOOD = '''# %% tags=["parameters"]
profile = "cpu"
device = "auto"
results_dir = "results"

# %%
print("profile is", profile)
'''

BAD = '''# %% tags=["parameters"]
profile = "cpu"

# %%
x = 1

# %%
raise ValueError("planted failure")
'''


def runner(root: Path, profile: str, *args: str, device: str = "cpu") -> list[str]:
    """The command line of ``root``'s tools/run_chapters.py (``--device cpu`` spares the runner
    torch's import, seconds of CPU a run; one test keeps ``auto``, which resolves it with torch)."""
    return [sys.executable, str(root / "tools" / "run_chapters.py"), "--profile", profile,
            "--device", device, *args]


def run(tmp_path: Path, *names: str, device: str = "cpu") -> subprocess.CompletedProcess:
    """The runner at smoke on the chapters in tmp_path/src."""
    return subprocess.run(
        runner(ROOT, "smoke", "--chapters-dir", str(tmp_path / "src"), "--out",
               str(tmp_path / "out"), *names, device=device),
        capture_output=True, text=True, cwd=tmp_path, timeout=300)


def test_runner_executes_and_reports(tmp_path):
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "01_good.py").write_text(GOOD)
    (tmp_path / "src" / "02_bad.py").write_text(BAD)
    res = run(tmp_path, device="auto")
    assert res.returncode == 1
    assert "FAILED: chapter 02_bad, cell" in res.stdout
    assert "ValueError: planted failure" in res.stdout
    assert "1 chapter(s) failed: 02_bad" in res.stderr
    assert not (tmp_path / "out" / "02_bad.ipynb").exists()
    good = json.loads((tmp_path / "out" / "01_good.ipynb").read_text())
    text = "".join("".join(o.get("text", "")) for c in good["cells"] for o in c.get("outputs", []))
    assert "profile is smoke" in text
    assert any("injected-parameters" in c["metadata"].get("tags", []) for c in good["cells"])
    shown = [c for c in good["cells"] if c["cell_type"] == "code"
             and "remove-cell" not in c["metadata"].get("tags", [])]
    # the site shows the parameters once
    assert sum("profile = " in "".join(c["source"]) for c in shown) == 1
    runtimes = json.loads((tmp_path / "out" / "results" / "runtimes-smoke.json").read_text())
    assert runtimes["profile"] == "smoke" and list(runtimes["chapters"]) == ["01_good"]
    entry = runtimes["chapters"]["01_good"]
    assert entry["seconds"] > 0 and entry["device"] in ("cpu", "cuda", "mps")


TIMED = '''# %% tags=["parameters"]
profile = "cpu"

# %%
import os, pathlib, time
stamp = pathlib.Path(os.environ["STAMPS"]) / "{name}"
stamp.write_text(f"{{time.time()}}")
time.sleep({sleep})
stamp.write_text(f"{{stamp.read_text()}} {{time.time()}} {{os.environ.get('OMP_NUM_THREADS')}}")
'''

SUMMARY = '''# %% tags=["parameters"]
profile = "cpu"

# %%
import os, pathlib
stamps = {p.name: p.read_text().split() for p in pathlib.Path(os.environ["STAMPS"]).iterdir()}
assert set(stamps) == {"01_a", "02_b"} and all(len(v) == 3 for v in stamps.values()), stamps
'''


def test_runner_jobs_run_chapters_at_once_and_the_summary_after_them(tmp_path, monkeypatch):
    (tmp_path / "src").mkdir()
    (tmp_path / "stamps").mkdir()
    (tmp_path / "src" / "01_a.py").write_text(TIMED.format(name="01_a", sleep=4))
    (tmp_path / "src" / "02_b.py").write_text(TIMED.format(name="02_b", sleep=4))
    # fails unless both others have finished
    (tmp_path / "src" / "06_report.py").write_text(SUMMARY)
    monkeypatch.setenv("STAMPS", str(tmp_path / "stamps"))
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    res = subprocess.run(
        runner(ROOT, "smoke", "--jobs", "2", "--chapters-dir", str(tmp_path / "src"), "--out",
               str(tmp_path / "out")),
        capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert res.returncode == 0, res.stdout + res.stderr
    (a0, a1,
     threads), (b0, b1,
                _) = ((tmp_path / "stamps" / n).read_text().split() for n in ("01_a", "02_b"))
    assert float(a0) < float(b1) and float(b0) < float(a1)  # the two sleeps overlapped
    assert threads == str(max(1, (os.cpu_count() or 1) // 2))
    runtimes = json.loads((tmp_path / "out" / "results" / "runtimes-smoke.json").read_text())
    # every entry kept under the lock
    assert list(runtimes["chapters"]) == ["01_a", "02_b", "06_report"]
    assert all((tmp_path / "out" / f"{n}.ipynb").exists() for n in ("01_a", "02_b", "06_report"))


def test_schedule_puts_the_longest_first_and_the_summaries_last():
    sys.path.insert(0, str(ROOT / "tools"))
    try:
        from run_chapters import schedule
    finally:
        sys.path.pop(0)
    names = ["01_entropy", "02_comae", "03_rank", "04_cmar", "06_report", "07_performance",
             "08_new"]
    parallel, last = schedule(names,
                              {"01_entropy": 38, "02_comae": 1479, "03_rank": 141, "04_cmar": 1357})
    # unknown time: first
    assert parallel == ["08_new", "02_comae", "04_cmar", "03_rank", "01_entropy"]
    assert last == ["06_report", "07_performance"]


def test_runner_refuses_a_chapter_without_parameters(tmp_path):
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "01_plain.py").write_text("# %%\nprint(1)\n")
    res = run(tmp_path)
    assert res.returncode != 0
    assert "has no cell tagged 'parameters'" in res.stderr


def test_parameters_shown_once_with_the_injected_values_and_the_comments():
    sys.path.insert(0, str(ROOT / "tools"))
    try:
        from run_chapters import parameters_once
    finally:
        sys.path.remove(str(ROOT / "tools"))
    cell = lambda src, tags: {"cell_type": "code", "metadata": {"tags": tags}, "source": src}  # noqa: E731
    nb = {"cells": [
        cell('profile = "cpu"  # the sizes\nseed = 0  # offset\nsizes = {\n    "a": 1,\n}  # a '
             'dict\n', ["parameters"]),
        cell('# Parameters\nprofile = "smoke"\nsizes = {"a": 2}\nextra = 3\n',
             ["injected-parameters"]),
        cell("print(profile)", []),
    ]}
    parameters_once(nb)
    orig, injected, rest = nb["cells"]
    assert orig["metadata"]["tags"] == ["parameters", "remove-cell"]
    assert injected["source"].splitlines() == [
        "# Parameters of this run (papermill)", 'profile = "smoke"  # the sizes',
        "seed = 0  # offset",
        'sizes = {"a": 2}  # a dict', "extra = 3"]
    scope = {}
    exec(injected["source"], scope)  # the shown cell alone sets every parameter to the run's values
    assert (scope["profile"], scope["seed"], scope["sizes"],
            scope["extra"]) == ("smoke", 0, {"a": 2}, 3)
    assert rest["metadata"]["tags"] == []
    # run without papermill's injection (e.g. in JupyterLab): nothing changes
    plain = {"cells": [cell('profile = "cpu"\n', ["parameters"]), cell("print(profile)", [])]}
    parameters_once(plain)
    assert plain["cells"][0]["metadata"]["tags"] == ["parameters"]


# -------------------------------------------------------- the book is never overwritten by accident
def _tools():
    sys.path.insert(0, str(ROOT / "tools"))
    try:
        import run_chapters
    finally:
        sys.path.remove(str(ROOT / "tools"))
    return run_chapters


def _fake_root(tmp_path: Path, book_profile: str = "cpu") -> Path:
    """A copy of the runner in a project whose committed book was executed at ``book_profile``."""
    root = tmp_path / "project"
    (root / "tools").mkdir(parents=True)
    (root / "tools"
     / "run_chapters.py").write_text((ROOT / "tools" / "run_chapters.py").read_text())
    (root / "copkit").symlink_to(ROOT / "copkit")  # the profiles' files
    (root / "book" / "results").mkdir(parents=True)
    (root / "book" / "results"
     / "01_good.json").write_text(json.dumps({"chapter": "01_good", "profile": book_profile}))
    (root / "src").mkdir()
    (root / "src" / "01_good.py").write_text(GOOD)
    return root


def test_the_book_profile_and_the_default_output_folder(tmp_path):
    rc = _tools()
    root = _fake_root(tmp_path, "gpu")
    assert rc.book_profile(root) == "gpu"
    assert rc.book_profile(tmp_path / "nothing") == rc.BOOK_PROFILE == "cpu"
    assert rc.book_profile(ROOT) == "cpu"  # what the committed book records
    assert rc.default_out("cpu", None, "cpu") == "book"
    assert rc.default_out("smoke", None, "cpu") == ".scratch/book/smoke"
    # a file is never the book's
    assert rc.default_out("cpu", Path("cpu.yaml"), "cpu") == ".scratch/book/cpu"


def test_a_run_at_another_profile_leaves_the_book_alone(tmp_path):
    root = _fake_root(tmp_path)
    before = sorted(p.relative_to(root) for p in (root / "book").rglob("*"))
    res = subprocess.run(runner(root, "smoke", "--chapters-dir", str(root / "src")),
                         capture_output=True, text=True, cwd=root, timeout=300)
    assert res.returncode == 0, res.stdout + res.stderr
    assert sorted(p.relative_to(root) for p in (root / "book").rglob("*")) == before
    out = root / ".scratch" / "book" / "smoke"
    assert "into .scratch/book/smoke/" in res.stdout
    assert (out / "01_good.ipynb").exists() and (out / "results" / "runtimes-smoke.json").exists()
    assert not list((root / ".scratch" / "running").iterdir())  # this run's staging folder is gone


def test_a_profile_file_is_accepted_and_a_bad_one_refused_in_one_line(tmp_path):
    root = _fake_root(tmp_path)
    mine = tmp_path / "my.yaml"
    mine.write_text((ROOT / "copkit" / "configs" / "smoke.yaml").read_text())
    res = subprocess.run(runner(root, str(mine), "--chapters-dir", str(root / "src")),
                         capture_output=True, text=True, cwd=root, timeout=300)
    assert res.returncode == 0, res.stdout + res.stderr
    nb = json.loads((root / ".scratch" / "book" / "my" / "01_good.ipynb").read_text())
    text = "".join("".join(o.get("text", "")) for c in nb["cells"] for o in c.get("outputs", []))
    # a path relative to the chapters' folder
    assert "profile is " in text and text.strip().endswith("my.yaml")
    assert (root / ".scratch" / "book" / "my" / "results" / "runtimes-my.json").exists()
    for bad, says in ((tmp_path / "none.yaml", "no such file"),
                      (tmp_path / "p.txt", "give smoke, cpu, gpu")):
        res = subprocess.run(runner(root, str(bad)), capture_output=True, text=True, cwd=root,
                             timeout=120)
        assert (res.returncode == 2 and says in res.stderr
                and "Traceback" not in res.stderr), res.stderr
    broken = tmp_path / "broken.yaml"
    broken.write_text((ROOT / "copkit" / "configs" / "smoke.yaml").read_text() + "\nbogus_key: 1\n")
    res = subprocess.run(runner(root, str(broken)), capture_output=True, text=True, cwd=root,
                         timeout=120)
    assert (res.returncode == 2 and "bogus_key" in res.stderr
            and "Traceback" not in res.stderr), res.stderr


SLOW = '''# %% tags=["parameters"]
profile = "cpu"

# %%
import time
time.sleep(3)
print("slept")
'''


def test_two_runs_of_one_chapter_at_once_do_not_clash(tmp_path):
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "01_slow.py").write_text(SLOW)
    runs = [subprocess.Popen(runner(ROOT, "smoke", "--chapters-dir", str(tmp_path / "src"),
                                    "--out", str(tmp_path / f"out{i}")),
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                             cwd=tmp_path)
            for i in range(2)]
    for i, proc in enumerate(runs):
        out, _ = proc.communicate(timeout=300)
        assert proc.returncode == 0, out
        assert (tmp_path / f"out{i}" / "01_slow.ipynb").exists()
