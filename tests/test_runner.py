"""The chapter runner: a failing cell fails the run, names chapter and cell, and never lands in
the output folder; a good chapter lands with its parameters injected."""

import json
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


def run(tmp_path: Path, *names: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(ROOT / "tools" / "run_chapters.py"), "--profile", "smoke",
         "--chapters-dir", str(tmp_path / "src"), "--out", str(tmp_path / "out"), *names],
        capture_output=True, text=True, cwd=tmp_path, timeout=300)


def test_runner_executes_and_reports(tmp_path):
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "01_good.py").write_text(GOOD)
    (tmp_path / "src" / "02_bad.py").write_text(BAD)
    res = run(tmp_path)
    assert res.returncode == 1
    assert "FAILED: chapter 02_bad, cell" in res.stdout
    assert "ValueError: planted failure" in res.stdout
    assert "1 chapter(s) failed: 02_bad" in res.stderr
    assert not (tmp_path / "out" / "02_bad.ipynb").exists()
    good = json.loads((tmp_path / "out" / "01_good.ipynb").read_text())
    text = "".join("".join(o.get("text", "")) for c in good["cells"] for o in c.get("outputs", []))
    assert "profile is smoke" in text
    assert any("injected-parameters" in c["metadata"].get("tags", []) for c in good["cells"])
    shown = [c for c in good["cells"] if c["cell_type"] == "code" and "remove-cell" not in c["metadata"].get("tags", [])]
    assert sum("profile = " in "".join(c["source"]) for c in shown) == 1  # the site shows the parameters once
    runtimes = json.loads((tmp_path / "out" / "results" / "runtimes-smoke.json").read_text())
    assert runtimes["profile"] == "smoke" and list(runtimes["chapters"]) == ["01_good"]
    entry = runtimes["chapters"]["01_good"]
    assert entry["seconds"] > 0 and entry["device"] in ("cpu", "cuda", "mps")


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
        cell('profile = "cpu"  # the sizes\nseed = 0  # offset\nsizes = {\n    "a": 1,\n}  # a dict\n', ["parameters"]),
        cell('# Parameters\nprofile = "smoke"\nsizes = {"a": 2}\nextra = 3\n', ["injected-parameters"]),
        cell("print(profile)", []),
    ]}
    parameters_once(nb)
    orig, injected, rest = nb["cells"]
    assert orig["metadata"]["tags"] == ["parameters", "remove-cell"]
    assert injected["source"].splitlines() == [
        "# Parameters of this run (papermill)", 'profile = "smoke"  # the sizes', "seed = 0  # offset",
        'sizes = {"a": 2}  # a dict', "extra = 3"]
    scope = {}
    exec(injected["source"], scope)  # the shown cell alone sets every parameter to the run's values
    assert (scope["profile"], scope["seed"], scope["sizes"], scope["extra"]) == ("smoke", 0, {"a": 2}, 3)
    assert rest["metadata"]["tags"] == []
    # run without papermill's injection (e.g. in JupyterLab): nothing changes
    plain = {"cells": [cell('profile = "cpu"\n', ["parameters"]), cell("print(profile)", [])]}
    parameters_once(plain)
    assert plain["cells"][0]["metadata"]["tags"] == ["parameters"]
