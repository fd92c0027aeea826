"""Byte-compile, once, what the book's processes import: torch, timm, copkit, Jupyter, Sphinx.

`make setup` installs the packages without byte-compiling them (pip's compileall of every module
of every wheel costs some 50 s of one core, most of it on modules nothing imports), so Python
compiles a module the first time one imports it. `make test` starts its processes at once: the
two unit-test processes, the smoke base models and the site build, each importing torch and the
rest cold, each compiling the same ~20 s of bytecode. This script imports them first, in two
processes (torch and its line on one core, the rest on the other), then copkit on top, so every
later process finds the bytecode written.

    python tools/warm_bytecode.py     # seconds, once after an install; again is harmless
"""

from __future__ import annotations

import subprocess
import sys
import time

#: imported side by side: the first line needs minutes of compiling alone, the second the rest
TORCH_LINE = ["torch", "torchvision", "timm"]
OTHERS = ["numpy", "scipy.stats", "matplotlib.pyplot", "seaborn", "skimage.transform", "yaml",
          "safetensors.torch", "jupyter_book.cli.main", "myst_nb", "sphinx.application",
          "papermill", "ipykernel.kernelapp", "nbclient", "jupytext", "pytest", "xdist",
          "playwright.sync_api"]
#: then, with both written: copkit's every module and what only it imports
COPKIT = ("import importlib, pkgutil, copkit\n"
          "for m in pkgutil.iter_modules(copkit.__path__, 'copkit.'):\n"
          "    if m.name != 'copkit.__main__':\n"
          "        importlib.import_module(m.name)\n"
          "import torchmetrics.image.fid, kneed\n")


def _imports(names: list[str]) -> str:
    return "".join(f"import {name}\n" for name in names)


def main() -> int:
    start = time.perf_counter()
    pair = [subprocess.Popen([sys.executable, "-c", _imports(names)])
            for names in (TORCH_LINE, OTHERS)]
    codes = [p.wait() for p in pair]
    codes.append(subprocess.run([sys.executable, "-c", COPKIT]).returncode)
    if any(codes):
        print("warm_bytecode: an import failed (above); the packages are not fully installed",
              file=sys.stderr)
        return 1
    print(f"warm_bytecode: torch, copkit, Jupyter and Sphinx byte-compiled in "
          f"{time.perf_counter() - start:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
