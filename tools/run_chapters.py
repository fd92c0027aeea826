"""Execute the book's chapters with papermill: chapters/NN_name.py -> <out>/NN_name.ipynb.

Each jupytext source is converted to a notebook, executed with the profile and device as papermill
parameters (working directory: chapters/, as in JupyterLab), and moved into <out>/ only when every
cell ran; a failed run is kept in .scratch/failed/ and the failing chapter and cell are named.
Exit status 1 when any chapter failed. The seconds each chapter took, and the device and machine
it ran on, go to <out>/results/runtimes-<profile>.json (updated chapter by chapter; the
performance chapter renders every profile's file).

With ``--jobs J`` the chapters run J at a time, each in its own process with cpus/J threads
(``OMP_NUM_THREADS``, unless set), the longest first by the last recorded run times; the
summary pages (``SUMMARIES``: the report and performance chapters read every other chapter's
results) run after all others. Small models on a few cores are bound by per-operator overhead,
so two chapters on one thread each finish sooner than one after the other on two. Each chapter's
output goes to .scratch/logs/<name>.log.

The committed book is never overwritten by accident: without ``--out``, the chapters go to book/
only at the profile the book was executed with (the one its results files record: cpu), and to
.scratch/book/<profile>/ at any other profile or with a profile file (``--profile my.yaml``, an
edited copy of copkit/configs/cpu.yaml); ``--out book`` writes into the book whatever the profile.
Without ``--data-dir``, trained runs go to data/ for the profiles that start from the shipped base
models (``pretrain: full``) and to .scratch/data/ for the others (smoke: ``make smoke`` pretrains
there). Every run stages its notebooks in a folder of its own under .scratch/running/, so two runs
of one chapter at once do not clash (their trainings wait for each other: copkit.io.folder_lock).

    python tools/run_chapters.py --profile cpu --out book --jobs 2
    python tools/run_chapters.py --profile smoke 01_entropy          # into .scratch/book/smoke/
    python tools/run_chapters.py --profile my.yaml 01_entropy        # into .scratch/book/my/
"""

from __future__ import annotations

import argparse
import ast
import fcntl
import io
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import tokenize
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CHAPTERS = ROOT / "chapters"
SCRATCH = ROOT / ".scratch"
KERNELSPEC = {"name": "python3", "display_name": "Python 3 (ipykernel)", "language": "python"}
#: pages that read every other chapter's results files: with --jobs they run after all the others
SUMMARIES = ("06_report", "07_performance")
#: the book's own profiles (copkit/configs/<name>.yaml); any other --profile is a profile file
NAMED = ("smoke", "cpu", "gpu")
#: the book's profile when its results files record none (copkit.results.BOOK_PROFILE)
BOOK_PROFILE = "cpu"


def book_profile(root: Path = ROOT) -> str:
    """The profile the committed book was executed with: the one most of book/results/NN_name.json
    record (as copkit.results.book_profile, without importing copkit); BOOK_PROFILE if none does."""
    counts: dict[str, int] = {}
    for path in (root / "book" / "results").glob("[0-9][0-9]_*.json"):
        try:
            profile = json.loads(path.read_text()).get("profile")
        except (OSError, ValueError, AttributeError):
            continue
        if isinstance(profile, str):
            counts[profile] = counts.get(profile, 0) + 1
    return max(counts, key=lambda k: counts[k]) if counts else BOOK_PROFILE


def resolve_profile(value: str) -> tuple[str, str, Path | None]:
    """(name, label, file) of ``--profile``: a named profile is (name, name, None); a profile file
    (.yaml, .yml, .toml) is checked now (strictly, as the chapters read it) and is (absolute path,
    file stem, path). ValueError in one line otherwise."""
    if value in NAMED:
        return value, value, None
    path = Path(value).expanduser().resolve()
    if path.suffix not in (".yaml", ".yml", ".toml"):
        raise ValueError(f"--profile {value}: give {', '.join(NAMED)} or a profile file (.yaml or "
                         ".toml, a copy of copkit/configs/cpu.yaml)")
    if not path.is_file():
        raise ValueError(f"--profile {value}: no such file")
    sys.path.insert(0, str(ROOT))
    try:
        from copkit.profiles import load_profile

        load_profile(path)
    except Exception as err:  # a config error: one line, naming the key and the file
        raise ValueError(f"--profile {value}: {str(err).splitlines()[0]}") from None
    finally:
        sys.path.remove(str(ROOT))
    return str(path), path.stem, path


def default_out(label: str, profile_file: Path | None, book: str) -> str:
    """The output folder when no --out is given: book at the book's own named profile, else
    .scratch/book/<label> (a profile file is never the book's, whatever name it gives itself)."""
    return ("book" if profile_file is None and label == book
            else str(Path(".scratch") / "book" / label))


def pretrain_config(name: str, file: Path | None) -> str:
    """The ``pretrain`` key of a profile (which base models its chapters start from); "full" when
    absent."""
    import yaml

    path = file or ROOT / "copkit" / "configs" / f"{name}.yaml"
    if path.suffix == ".toml":
        import tomllib

        data = tomllib.loads(path.read_text())
    else:
        data = yaml.safe_load(path.read_text())
    return str((data or {}).get("pretrain", "full"))


def chapter_sources(folder: Path, only: list[str]) -> list[Path]:
    sources = sorted(folder.glob("[0-9][0-9]_*.py"))
    if only:
        wanted = {o.removesuffix(".py").split("/")[-1] for o in only}
        unknown = wanted - {s.stem for s in sources}
        if unknown:
            sys.exit(f"no such chapter: {', '.join(sorted(unknown))} (have: "
                     f"{', '.join(s.stem for s in sources)})")
        sources = [s for s in sources if s.stem in wanted]
    return sources


def to_notebook(src: Path, dest: Path) -> set[str]:
    """Write the chapter as a notebook; return the names its ``parameters`` cell assigns."""
    import jupytext

    nb = jupytext.read(src, fmt="py:percent")
    cells = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    if not cells:
        sys.exit(f"{src} has no cell tagged 'parameters': papermill cannot set the profile")
    names = {t.id for node in ast.parse(cells[0].source).body if isinstance(node, ast.Assign)
             for t in node.targets if isinstance(t, ast.Name)}
    nb.metadata["kernelspec"] = KERNELSPEC
    nb.metadata.pop("jupytext", None)
    dest.parent.mkdir(parents=True, exist_ok=True)
    jupytext.write(nb, dest, fmt="ipynb")
    return names


def _comments(source: str) -> dict[int, str]:
    """The comment ending each line of ``source``, by line number (1-based)."""
    return {tok.start[0]: tok.string
            for tok in tokenize.generate_tokens(io.StringIO(source).readline)
            if tok.type == tokenize.COMMENT}


def parameters_once(nb: dict) -> dict:
    """Show a page's parameters once: papermill puts a cell of the values it injected right after
    the chapter's ``parameters`` cell. That injected cell is rewritten as the chapter's cell with
    the injected values in place (every parameter, each with its explanatory comment), and the
    chapter's own cell is tagged ``remove-cell``, so the site shows one cell, with the values the
    page was executed with. A notebook without an injected cell is left as it is."""
    cells = nb["cells"]
    for i in range(len(cells) - 1):
        orig, injected = cells[i], cells[i + 1]
        if "parameters" not in orig.get("metadata", {}).get("tags", []) or \
                "injected-parameters" not in injected.get("metadata", {}).get("tags", []):
            continue
        src, inj = "".join(orig["source"]), "".join(injected["source"])
        values = {node.targets[0].id: ast.get_source_segment(inj, node.value)
                  for node in ast.parse(inj).body if isinstance(node, ast.Assign)
                  and isinstance(node.targets[0], ast.Name)}
        lines, comments = src.splitlines(), _comments(src)
        out, done = [], 0
        for node in ast.parse(src).body:
            if not (isinstance(node, ast.Assign) and len(node.targets) == 1
                    and isinstance(node.targets[0], ast.Name) and node.targets[0].id in values):
                continue
            name, end = node.targets[0].id, node.end_lineno
            out += lines[done:node.lineno - 1]
            comment = comments.get(end)
            out.append(f"{name} = {values.pop(name)}" + (f"  {comment}" if comment else ""))
            done = end
        out += lines[done:]
        # injected, not declared: kept
        out += [f"{name} = {value}" for name, value in values.items()]
        injected["source"] = "# Parameters of this run (papermill)\n" + "\n".join(out) + "\n"
        tags = orig.setdefault("metadata", {}).setdefault("tags", [])
        if "remove-cell" not in tags:
            tags.append("remove-cell")
    return nb


def run(src: Path, out_dir: Path, params: dict, timeout: int | None) -> tuple[bool, float]:
    """Execute one chapter into ``out_dir/<name>.ipynb`` (see the module's docstring); (ok,
    seconds). Its notebooks are staged in a folder of this run's own, removed afterwards."""
    name = src.stem
    (SCRATCH / "running").mkdir(parents=True, exist_ok=True)
    # this run's own staging folder
    work = Path(tempfile.mkdtemp(prefix=f"{name}-", dir=SCRATCH / "running"))
    try:
        return _run_in(src, work, out_dir, params, timeout)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _run_in(src: Path, work: Path, out_dir: Path, params: dict,
            timeout: int | None) -> tuple[bool, float]:
    """:func:`run` with its notebooks staged in ``work``."""
    import papermill as pm

    name = src.stem
    staged = work / f"{name}.in.ipynb"
    running = work / f"{name}.ipynb"
    declared = to_notebook(src, staged)
    start = time.perf_counter()
    try:
        pm.execute_notebook(str(staged), str(running),
                            parameters={k: v for k, v in params.items() if k in declared},
                            kernel_name="python3", cwd=str(src.parent),
                            progress_bar=sys.stderr.isatty() or bool(os.environ.get("CI")),
                            execution_timeout=timeout,
                            log_output=bool(os.environ.get("COPKIT_LOG_OUTPUT")))
    except pm.PapermillExecutionError as err:
        failed = SCRATCH / "failed" / f"{name}.ipynb"
        failed.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(running, failed)
        source = "\n".join("      | " + line for line in err.source.splitlines()[:15])
        print(f"\nFAILED: chapter {name}, cell {err.cell_index} (execution count "
              f"{err.exec_count}): {err.ename}: {err.evalue}\n{source}\n"
              f"    the executed notebook with the traceback: {os.path.relpath(failed)}",
              flush=True)
        return False, time.perf_counter() - start
    # Name the source and the result instead of this machine's staging files.
    nb = json.loads(running.read_text())
    nb["metadata"]["papermill"]["input_path"] = (os.path.relpath(src, ROOT)
                                                 if src.is_relative_to(ROOT) else src.name)
    nb["metadata"]["papermill"]["output_path"] = f"{name}.ipynb"
    parameters_once(nb)
    running.write_text(json.dumps(nb, indent=1, ensure_ascii=False) + "\n")
    out_dir.mkdir(parents=True, exist_ok=True)
    # same file system as out_dir: the rename is atomic
    done = out_dir / f".{name}.ipynb.{os.getpid()}.tmp"
    shutil.move(running, done)
    os.replace(done, out_dir / f"{name}.ipynb")
    return True, time.perf_counter() - start


def machine(device: str) -> dict:
    """The device a chapter run resolves ``device`` to, and the machine it runs on."""
    cpu = platform.processor() or platform.machine()
    try:  # Linux names the model
        cpu = next(line.split(":", 1)[1].strip()
                   for line in Path("/proc/cpuinfo").read_text().splitlines()
                   if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    info = {"device": device, "cpu": cpu, "cpus": os.cpu_count(),
            "omp_num_threads": os.environ.get("OMP_NUM_THREADS"), "gpu": None}
    if device == "cpu":  # nothing to resolve: spare this process torch's import (seconds of CPU)
        return info
    try:
        import torch

        from copkit.profiles import pick_device

        info["device"] = str(pick_device(device))
        if torch.cuda.is_available() and info["device"].startswith("cuda"):
            info["gpu"] = torch.cuda.get_device_name(torch.device(info["device"]))
    except (ImportError, ValueError, RuntimeError):
        pass
    return info


@contextmanager
def _locked(path: Path):
    """Hold an exclusive lock on ``path`` (created): chapters running at once update one file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def read_runtimes(results_dir: Path, profile: str) -> dict:
    """``results_dir/runtimes-<profile>.json``, or an empty record when it is missing or
    unreadable."""
    path = results_dir / f"runtimes-{profile}.json"
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return {"profile": profile, "chapters": {}}


def record_runtime(results_dir: Path, profile: str, name: str, seconds: float, host: dict) -> Path:
    """Add one chapter's run time to ``results_dir/runtimes-<profile>.json`` (atomically, under a
    lock), keeping the other chapters' entries."""
    path = results_dir / f"runtimes-{profile}.json"
    with _locked(SCRATCH / "locks" / f"runtimes-{profile}.lock"):
        data = read_runtimes(results_dir, profile)
        data["profile"] = profile
        data.setdefault("chapters", {})[name] = {
            "seconds": round(seconds, 1), **host,
            "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        data["chapters"] = dict(sorted(data["chapters"].items()))
        results_dir.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(data, indent=1) + "\n")
        os.replace(tmp, path)
    return path


def schedule(names: list[str], last_seconds: dict[str, float]) -> tuple[list[str], list[str]]:
    """(chapters to run at once, longest first by ``last_seconds`` (unknown: first), summary pages
    to run after them, in order)."""
    summaries = [n for n in names if n in SUMMARIES]
    rest = sorted((n for n in names if n not in SUMMARIES),
                  key=lambda n: -last_seconds.get(n, float("inf")))
    return rest, summaries


def run_parallel(names: list[str], argv: list[str], jobs: int, last_seconds: dict[str, float]
                 ) -> list[tuple[str, bool, float]]:
    """The chapters ``names``, ``jobs`` at a time (:func:`schedule`), each by :func:`run_child`
    with cpus/jobs threads; the summary pages after all others. (name, ok, seconds) of each."""
    parallel, summaries = schedule(names, last_seconds)
    threads = max(1, (os.cpu_count() or 1) // jobs)
    print(f"{jobs} at once ({threads} thread(s) each): {', '.join(parallel)}; then "
          f"{', '.join(summaries) or '-'}; logs in {os.path.relpath(SCRATCH / 'logs')}/",
          flush=True)

    def one(name: str) -> tuple[str, bool, float]:
        ok, seconds = run_child(name, argv, threads)
        print(f"{name} {'done' if ok else 'FAILED'} in {seconds:.1f} s", flush=True)
        return name, ok, seconds

    with ThreadPoolExecutor(jobs) as pool:
        report = list(pool.map(one, parallel))
    return report + [one(name) for name in summaries]


def run_child(name: str, argv: list[str], threads: int) -> tuple[bool, float]:
    """One chapter in its own process (this script, one chapter, --jobs 1) with ``threads`` threads;
    its output goes to .scratch/logs/<name>.log."""
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", str(threads))}
    log = SCRATCH / "logs" / f"{name}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    with open(log, "w") as out:
        code = subprocess.call([sys.executable, __file__, *argv, "--jobs", "1", name], stdout=out,
                               stderr=subprocess.STDOUT, env=env, cwd=ROOT)
    seconds = time.perf_counter() - start
    if code:
        print(f"--- {name} failed; the end of {os.path.relpath(log)}:\n"
              + "\n".join(log.read_text().splitlines()[-25:]), flush=True)
    return code == 0, seconds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("chapters", nargs="*", help="chapter names (default: all), e.g. 01_entropy")
    parser.add_argument("--profile", default="cpu",
                        help="smoke, cpu or gpu (copkit/configs/<name>.yaml), or a profile file "
                             "such as my.yaml")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--out", default=None,
                        help="folder for the executed notebooks and results (default: book at the "
                             "book's own profile, else .scratch/book/<profile>); --out book writes "
                             "into the book at any profile")
    parser.add_argument("--timeout", type=int, default=None, help="seconds allowed per cell")
    parser.add_argument("--chapters-dir", default=str(CHAPTERS),
                        help="where the jupytext sources are")
    parser.add_argument("--data-dir", default=None,
                        help="where chapters keep trained runs and artifacts (default: data for "
                             "profiles that start from the shipped base models, else "
                             ".scratch/data, where make smoke pretrains)")
    parser.add_argument("--jobs", type=int, default=1,
                        help="chapters run at once, each with cpus/jobs threads (summary pages "
                             "after the others)")
    args = parser.parse_args()
    if args.jobs < 1:
        parser.error(f"--jobs must be at least 1, got {args.jobs}")
    try:
        profile, label, profile_file = resolve_profile(args.profile)
    except ValueError as err:
        parser.error(str(err))

    began = time.perf_counter()
    # no progress-bar lines in the executed notebooks (copkit.io.bars_off; the kernels inherit it)
    os.environ.setdefault("TQDM_DISABLE", "1")
    book = book_profile()
    if args.out is None:
        args.out = default_out(label, profile_file, book)
    out_dir = (ROOT / args.out).resolve()
    if out_dir == (ROOT / "book").resolve():
        os.environ["COPKIT_WRITE_BOOK"] = "1"  # asked for: copkit.results writes into book/results
        if label != book:
            print(f"writing profile {label} into book/ (executed at {book}), as --out book asks",
                  flush=True)
    if args.data_dir is None:
        args.data_dir = str(ROOT
                            / ("data" if pretrain_config(label, profile_file) == "full"
                               else ".scratch/data"))
    # Paths relative to chapters/ (the kernel's working directory), so that no machine's folders are
    # written into the executed notebooks.
    chapters_dir = Path(args.chapters_dir).resolve()
    params = {"profile": profile if profile_file is None
              else os.path.relpath(profile_file, chapters_dir), "device": args.device,
              "results_dir": os.path.relpath(out_dir / "results", chapters_dir),
              "notebooks_dir": os.path.relpath(out_dir, chapters_dir),
              "data_dir": os.path.relpath(Path(args.data_dir).resolve(), chapters_dir)}
    sources = chapter_sources(Path(args.chapters_dir), args.chapters)
    if not sources:
        print(f"no chapters (NN_name.py) in {args.chapters_dir}", file=sys.stderr)
        return 1
    print(f"executing {len(sources)} chapter(s), profile={label}, device={args.device}, "
          f"into {os.path.relpath(out_dir)}/", flush=True)
    report = []
    if args.jobs > 1 and len(sources) > 1:
        argv = ["--profile", profile, "--device", args.device, "--out", str(out_dir),
                "--chapters-dir", str(chapters_dir), "--data-dir",
                str(Path(args.data_dir).resolve())]
        if args.timeout:
            argv += ["--timeout", str(args.timeout)]
        last = {k: v["seconds"]
                for k, v in read_runtimes(out_dir / "results", label).get("chapters", {}).items()}
        report = run_parallel([s.stem for s in sources], argv, args.jobs, last)
    else:
        host = machine(args.device)
        for i, src in enumerate(sources, 1):
            print(f"[{i}/{len(sources)}] {src.stem} ...", flush=True)
            ok, seconds = run(src, out_dir, params, args.timeout)
            report.append((src.stem, ok, seconds))
            if ok:
                record_runtime(out_dir / "results", label, src.stem, seconds, host)
            print(f"[{i}/{len(sources)}] {src.stem} {'done' if ok else 'FAILED'} in {seconds:.1f} "
                  "s", flush=True)
    print("\nchapter                     status     seconds")
    for name, ok, seconds in report:
        print(f"{name:<27} {'ok' if ok else 'FAILED':<10} {seconds:7.1f}")
    total = sum(s for _, _, s in report)
    print(f"{'total':<27} {'':<10} {total:7.1f}")
    print(f"{'wall':<27} {'':<10} {time.perf_counter() - began:7.1f}")
    failed = [name for name, ok, _ in report if not ok]
    if failed:
        print(f"\n{len(failed)} chapter(s) failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
