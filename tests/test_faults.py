"""Fault injection: a process SIGKILLed during a pretraining, a ranking or a fine-tune (between
checkpoints, or inside a file's atomic write) and then run again gives exactly what an
uninterrupted run gives, and leaves no partial file behind; two trainings into one run folder at
once give the records and weights of one.

Every run is a process of its own running the same script (``DRIVER``), at a tiny size, killed at
a point it reaches deterministically: ``$COPKIT_FAULT`` (:func:`copkit.io.fault_point`) makes it
SIGKILL (or SIGSTOP) itself after training step k, after the k-th shard of orders, or inside the
write of a named file. One reference process makes every uninterrupted result first.

The processes are forked from the test's, which has imported torch and copkit already: a fresh
interpreter would spend some 8 s of CPU importing them (torch, timm) for a second of training,
eleven times. What a run leaves for the next one is on disk, as after a real kill: each run is a
new process, killed for real, and none inherits anything from another run.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

import copkit.cli  # noqa: F401  what the runs import, imported once before they are forked
import copkit.orders  # noqa: F401
import copkit.pretrained  # noqa: F401
from copkit.checkpoint import load_tensors, read_metrics
from copkit.io import fault_point, folder_lock

ROOT = Path(__file__).resolve().parents[1]


#: a pretraining config much smaller than pretrain-smoke.yaml: the classifier, 8 steps
TINY_PRETRAIN = """name: tiny
data: {train_images: 256, val_images: 64, test_images: 128}
classifier:
  model: {width: 4, features: 8}
  train: {epochs: 1, batch_size: 32, lr: 0.002, warmup_steps: 2, ema_decay: 0.9, eval_every: 4,
          log_every: 2, ckpt_every: 4}
"""

#: ``DRIVER`` run with ``sys.argv[1:] == [task, folder]``: pretrain | rank | finetune | reference
#: (all three)
DRIVER = r'''
import hashlib, sys
from pathlib import Path
import torch
torch.set_num_threads(1)
task, folder = sys.argv[1], Path(sys.argv[2])

def pretrain():
    from copkit.cli import main
    (folder / "tiny.yaml").exists() or (folder / "tiny.yaml").write_text(TINY)
    assert main(["pretrain", "--config", str(folder / "tiny.yaml"),
                 "--data-dir", str(folder / "data"), "--out", str(folder / "data" / "pretrained"),
                 "--device", "cpu"]) == 0

def rank():
    import numpy as np
    from copkit import comae
    from copkit.orders import compute_orders
    torch.manual_seed(0)
    cfg = comae.CoMAEConfig(grid=(4, 4), token_dim=4, enc_width=8, enc_depth=1, enc_heads=2,
                            dec_width=8, dec_depth=1, dec_heads=2, targets_per_image=3)
    model = comae.CoMAE(cfg).eval()
    tokens = torch.randn(40, 16, 4, generator=torch.Generator().manual_seed(1))
    compute_orders(model, tokens, folder / "orders.npz", "0" * 64, np.array(["train"] * 40),
                   shard_size=8, chunk=8, progress=False)

def finetune():
    from copkit import metrics
    from copkit.recipe import TrainConfig
    from copkit.train import fit
    g = torch.Generator().manual_seed(0)
    x, y = torch.rand(64, 1, 28, 28, generator=g) * 2 - 1, torch.randint(0, 10, (64,), generator=g)
    cfg, data = metrics.FeatureNetConfig(width=4, features=8), metrics.FeatureNetData(x, y)
    tc = lambda steps: TrainConfig(steps=steps, batch_size=8, lr=2e-3, warmup_steps=2,
                                   ema_decay=0.8, seed=3, log_every=1, ckpt_every=2, eval_every=3)
    base = fit(metrics.RECIPE, cfg, tc(2), data, {"tiny": "base"}, folder, progress=False)
    ft = fit(metrics.RECIPE, cfg, tc(7), data, {"tiny": "fine-tune"}, folder, progress=False,
             init=(base.hash, base.model.state_dict()))
    weights = ft.model.state_dict().values()
    digest = hashlib.sha256(b"".join(v.numpy().tobytes() for v in weights)).hexdigest()
    print("weights", digest, ft.folder.name, flush=True)

for step in {"pretrain": [pretrain], "rank": [rank], "finetune": [finetune],
             "reference": [pretrain, rank, finetune]}[task]:
    step()
'''.replace("TINY", repr(TINY_PRETRAIN))


def _env(fault: str | None = None) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join(
        [str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])}
    env.pop("COPKIT_FAULT", None)
    if fault:
        env["COPKIT_FAULT"] = fault
    return env


#: runs are forked: they start with this process's imports (multiprocessing's own fork context)
FORK = multiprocessing.get_context("fork")


def _run_driver(task: str, folder: Path, fault: str | None, out: Path, err: Path) -> None:
    """The forked run: ``DRIVER`` in ``folder`` with the fault's environment, its output in two
    files (not this test's capture)."""
    env = _env(fault)
    os.environ.clear()
    os.environ.update(env)
    os.chdir(folder)
    for fd, path in ((1, out), (2, err)):
        os.dup2(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644), fd)
    sys.stdout = open(1, "w", buffering=1, closefd=False)
    sys.stderr = open(2, "w", buffering=1, closefd=False)
    sys.argv = ["DRIVER", task, str(folder)]
    exec(compile(DRIVER, "DRIVER", "exec"), {"__name__": "__main__"})


class Run:
    """A run of ``DRIVER`` in a process forked from this one, its output in two files."""

    def __init__(self, task: str, folder: Path, fault: str | None, err: Path | None) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        name = f"{folder.name}-{task}-{time.monotonic_ns()}"
        self.out = folder.parent / f"{name}.out"
        self.err = err or folder.parent / f"{name}.err"
        self.process = FORK.Process(target=_run_driver,
                                    args=(task, folder, fault, self.out, self.err))
        self.process.start()
        self.pid = self.process.pid

    @property
    def returncode(self) -> int | None:
        """The exit code, ``-signal`` for a run killed by one; None while it runs (or stops)."""
        return self.process.exitcode

    def wait(self, timeout: float = 300) -> int:
        self.process.join(timeout)
        if self.process.exitcode is None:
            self.process.kill()
            self.process.join()
            raise TimeoutError(f"run {self.pid} still going after {timeout} s")
        return self.process.exitcode

    @property
    def stdout(self) -> str:
        return self.out.read_text() if self.out.exists() else ""

    @property
    def stderr(self) -> str:
        return self.err.read_text() if self.err.exists() else ""


def drive(task: str, folder: Path, fault: str | None = None, wait: bool = True,
          err: Path | None = None) -> Run:
    """Run ``task`` into ``folder`` in a process of its own (``wait=False``: started, not waited
    for); ``err``: the file its standard error goes to."""
    run = Run(task, folder, fault, err)
    if wait:
        run.wait()
    return run


def killed(res: Run) -> None:
    assert res.returncode == -signal.SIGKILL, (
        f"expected a SIGKILL, got {res.returncode}: {res.stderr[-2000:]}")


def ok(res: Run) -> str:
    assert res.returncode == 0, res.stderr[-3000:]
    return res.stdout


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> tuple[Path, str]:
    """One uninterrupted process makes the pretraining, the ranking and the fine-tune."""
    folder = tmp_path_factory.mktemp("reference")
    return folder, ok(drive("reference", folder))


def no_partial_files(folder: Path) -> None:
    """No temporary file is left, and every file copkit wrote reads back whole."""
    files = [p for p in folder.rglob("*") if p.is_file()]
    assert not [p for p in files if p.name.endswith(".tmp")], files
    for p in files:
        if p.suffix == ".json":
            json.loads(p.read_text())
        elif p.suffix == ".safetensors":
            load_tensors(p)
        elif p.suffix == ".npz":
            with np.load(p, allow_pickle=False) as z:
                [z[k] for k in z.files]
        elif p.suffix == ".jsonl":
            read_metrics(p)


def strip(records: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k != "seconds"} for r in records]


def same_tensors(a: Path, b: Path) -> None:
    ta, tb = load_tensors(a)[0], load_tensors(b)[0]
    assert ta.keys() == tb.keys()
    for k in ta:
        assert torch.equal(ta[k], tb[k]), f"{a.name}: {k}"


def same_run_folders(a: Path, b: Path) -> None:
    """Two run folders of the same runs: checkpoints bitwise equal, metrics equal but for times."""
    runs_a = sorted(p.name for p in a.iterdir())
    assert runs_a == sorted(p.name for p in b.iterdir())
    for name in runs_a:
        same_tensors(a / name / "checkpoint.safetensors", b / name / "checkpoint.safetensors")
        assert (strip(read_metrics(a / name
                                   / "metrics.jsonl")) == strip(read_metrics(b / name
                                                                             / "metrics.jsonl")))


# ------------------------------------------------------------------ the points themselves
def test_fault_point_matches_exactly_and_a_dead_writers_temp_file_goes(tmp_path, monkeypatch):
    from copkit.io import atomic_write_text

    monkeypatch.setenv("COPKIT_FAULT", "step:30")
    fault_point("step", 3)  # neither step 3 nor another kind kills
    fault_point("shard", 30)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (tmp_path / f".x.json.{dead.pid}.abc.tmp").write_text("{")  # a writer killed before its rename
    (tmp_path / f".x.json.{os.getpid()}.def.tmp").write_text("{")  # a live writer's file
    atomic_write_text(tmp_path / "x.json", "{}")
    assert (sorted(p.name
                   for p in tmp_path.iterdir()) == [f".x.json.{os.getpid()}.def.tmp", "x.json"])


def test_a_lock_of_a_killed_process_is_released(tmp_path):
    holder = subprocess.Popen([sys.executable, "-c",
                               "import sys, time\nfrom copkit.io import folder_lock\n"
                               f"with folder_lock({str(tmp_path)!r}):\n    print('held', "
                               "flush=True)\n    time.sleep(600)"],
                              env=_env(), stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    holder.kill()
    holder.wait()
    start = time.perf_counter()
    with folder_lock(tmp_path):
        assert time.perf_counter() - start < 5


# ------------------------------------------------------------------ kill, then run again
@pytest.mark.fashion_mnist
def test_pretrain_killed_between_checkpoints_and_inside_a_write_resumes_to_the_same_model(
        tmp_path, reference):
    ref = reference[0] / "data"
    killed(drive("pretrain", tmp_path, "step:6"))  # after step 6; the last checkpoint is step 4's
    # its next checkpoint half-made
    killed(drive("pretrain", tmp_path, "write:checkpoint.safetensors"))
    # what the kill left
    assert list((tmp_path / "data" / "runs").rglob(".checkpoint.safetensors.*.tmp"))
    ok(drive("pretrain", tmp_path))
    no_partial_files(tmp_path)
    same_run_folders(ref / "runs", tmp_path / "data" / "runs")
    (shipped,) = (ref / "pretrained").glob("classifier-*.safetensors")
    mine = tmp_path / "data" / "pretrained" / shipped.name
    same_tensors(shipped, mine)
    # times, the hash of a file whose metadata holds them, and the commit (a commit made while
    # the tests run moves it between the reference and this run)
    volatile = {"train_seconds", "machine", "sha256", "commit"}
    a, b = (json.loads(p.with_suffix(".json").read_text()) for p in (shipped, mine))
    assert ({k: v for k, v in a.items()
             if k not in volatile} == {k: v for k, v in b.items() if k not in volatile})
    curve = f"{shipped.stem}.metrics.jsonl"
    assert (strip(read_metrics(ref / "pretrained"
                               / curve)) == strip(read_metrics(mine.parent / curve)))


def test_ranking_killed_resumes_to_the_same_orders(tmp_path, reference):
    killed(drive("rank", tmp_path, "shard:2"))
    assert (len(list((tmp_path / "orders.npz.parts").glob("shard-*.npz"))) == 2
            and not (tmp_path / "orders.npz").exists())
    # every shard made; killed writing the merged file
    killed(drive("rank", tmp_path, "write:orders.npz"))
    assert not (tmp_path / "orders.npz").exists()
    ok(drive("rank", tmp_path))
    no_partial_files(tmp_path)
    with np.load(reference[0] / "orders.npz") as a, np.load(tmp_path / "orders.npz") as b:
        assert (sorted(a.files) == sorted(b.files)
                and all(np.array_equal(a[k], b[k]) for k in a.files))


def test_fine_tune_killed_resumes_to_the_same_weights(tmp_path, reference):
    killed(drive("finetune", tmp_path, "step:5"))  # the fine-tune's step 5 (its base has 2 steps)
    assert (tmp_path / "runs").is_dir()
    out = ok(drive("finetune", tmp_path))
    assert out.split() == reference[1].split()[-3:]  # "weights <sha256> <run folder>"
    no_partial_files(tmp_path)
    same_run_folders(reference[0] / "runs", tmp_path / "runs")


# ------------------------------------------------------------------ two at once
def test_two_fine_tunes_into_one_folder_at_once_give_one_run(tmp_path, reference):
    first = drive("finetune", tmp_path, "step:4:stop", wait=False)
    deadline = time.time() + 120
    # stopped at step 4
    while Path(f"/proc/{first.pid}/stat").read_text().split(")")[-1].split()[0] != "T":
        assert first.returncode is None and time.time() < deadline, first.stderr[-2000:]
        time.sleep(0.05)
    err = tmp_path.parent / f"{tmp_path.name}-second.err"
    second = drive("finetune", tmp_path, wait=False, err=err)
    # one line, then it waits
    while "waiting: another training is using" not in second.stderr:
        assert second.returncode is None and time.time() < deadline, second.stderr[-2000:]
        time.sleep(0.05)
    os.kill(first.pid, signal.SIGCONT)
    first.wait()
    second.wait()
    assert (first.returncode == 0
            and second.returncode == 0), first.stderr[-2000:] + second.stderr[-2000:]
    waited = [line for line in second.stderr.splitlines() if line.startswith("waiting:")]
    assert len(waited) == 1 and "runs/featurenet-" in waited[0]
    # the same weights
    assert first.stdout.split() == second.stdout.split() == reference[1].split()[-3:]
    no_partial_files(tmp_path)
    same_run_folders(reference[0] / "runs", tmp_path / "runs")  # records not duplicated
