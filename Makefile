# The two commands: `make book` and `make test`. Everything else is a step of theirs.
#   make book PROFILE=cpu|smoke|gpu DEVICE=auto|cpu|cuda  [CHAPTERS="01_entropy ..."] [JOBS=2]
#   make test            ruff, unit tests, every chapter at smoke into .scratch/, the site with -W
#   make check-site      the built site in headless Chromium: pages, links, figures, search
SHELL := /bin/bash
.SHELLFLAGS := -eo pipefail -c
# Python may write the bytecode of what it imports (__pycache__/, git-ignored), whatever the caller's
# environment says: the packages are installed without byte-compiling them (see $(STAMP)), so with
# PYTHONDONTWRITEBYTECODE set every process would compile torch's and timm's sources again on each
# import (measured: collecting the unit tests 45 s instead of 16 s, and each of the dozens of
# processes make test starts, kernels and test subprocesses, pays the same).
unexport PYTHONDONTWRITEBYTECODE
.DEFAULT_GOAL := help

PYTHON ?= python3.11
VENV ?= .venv
PY := $(VENV)/bin/python
PROFILE ?= cpu
DEVICE ?= auto
CHAPTERS ?=
# chapters run at once, each with cpus/JOBS threads (the report and performance pages after the others)
JOBS ?= 2
# unit-test processes (pytest-xdist; each test runs one intra-op thread, tests/conftest.py)
TEST_JOBS ?= auto
STAMP := $(VENV)/.installed-stamp
JB := $(VENV)/bin/jupyter-book
# _config.yml, or a copy with the repository URL and launch buttons when origin is on GitHub/GitLab
SITE_CONFIG = $$($(PY) tools/site_config.py)

.PHONY: help setup data pretrain book chapters runtimes findings site test lint unit smoke site-check site-check-beside check-site bench orders ship-runs gpu-book device-kit clean

help:
	@echo "make book   set up .venv, find the data, execute every chapter (PROFILE=$(PROFILE)) into book/, build the site"
	@echo "make test   set up, ruff, unit tests, every chapter at PROFILE=smoke into .scratch/, the site with -W"
	@echo "make chapters  execute the chapters (PROFILE=$(PROFILE) DEVICE=$(DEVICE) [CHAPTERS=...] JOBS=$(JOBS)) into book/, without building the site"
	@echo "make runtimes  write the run times of book/results/runtimes-*.json into book/intro.md and README.md"
	@echo "make findings  write the book's 'What we found' box from book/results/*.json into book/intro.md"
	@echo "make site   build book/_build/html from the executed notebooks in book/"
	@echo "make check-site  build the site into .scratch/site and check it in headless Chromium"
	@echo "make data   find Fashion-MNIST (or install / download it) and check it"
	@echo "make pretrain  train the base models (copkit/configs/pretrain.yaml) -> data/pretrained/ [ONLY=name]"
	@echo "make orders collapse orders of all Fashion-MNIST images from the shipped CoMAE -> data/pretrained/orders-<hash8>.npz"
	@echo "make ship-runs  ship what the chapters trained (book/results/*.json 'runs') -> data/pretrained/runs/, pruning the rest"
	@echo "make gpu-book  the whole book at PROFILE=gpu on one CUDA GPU (scripts/gpu_book.sh)"
	@echo "make device-kit  wheels and data for a GPU machine without network -> .device/ (scripts/device_book.sh runs there)"
	@echo "make bench  speed measurements (CoMAE masks/s vs the matmul limit, Gaussian model) -> book/results/bench.json"

# The virtual environment: torch and torchvision pinned by constraints.txt, copkit editable.
# --no-compile: pip would byte-compile every module of every wheel (torch's thousands among them),
# half of the install's CPU time (93 -> 46 user-seconds); Python compiles what is imported, once.
# Then tools/warm_bytecode.py compiles, once, what the processes make test starts at once import.
$(STAMP): pyproject.toml constraints.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --disable-pip-version-check -q --no-compile -c constraints.txt -e ".[book,dev]"
	$(PY) tools/warm_bytecode.py
	@touch $@

setup: $(STAMP)

# Found in $COPKIT_DATA, data/fashion-mnist or /usr/share/datasets/fashion-mnist; else the Debian package
# dataset-fashion-mnist is installed (apt-get, as root or through password-less sudo); else torchvision
# downloads it (when online); else one message names the three ways to get it.
data: setup
	$(PY) -m copkit data

# The base models the chapters start from, trained once and committed in data/pretrained/ (resumes an
# interrupted run from data/runs/; a model already there is not trained again). ONLY=vit trains one.
ONLY ?=
pretrain: data
	$(PY) -m copkit pretrain $(foreach n,$(ONLY),--only $(n)) $(if $(ONLY),,--results book/results/pretrained.json)

# Execute the chapters into book/ (committed, with outputs).
chapters: data
	$(PY) tools/run_chapters.py --profile $(PROFILE) --device $(DEVICE) --jobs $(JOBS) --out book $(CHAPTERS)
	$(MAKE) --no-print-directory runtimes
	$(MAKE) --no-print-directory findings

# The run times the intro and README state, rewritten from book/results/runtimes-<profile>.json (the
# file the report and the performance chapter read), between their <!-- runtimes:... --> lines.
runtimes: setup
	$(PY) tools/runtimes_text.py

# The intro's "What we found" box, rewritten from the chapters' results files (copkit.findings, the
# function the chapters and the report use for theirs), between its <!-- findings:... --> lines.
findings: setup
	$(PY) tools/findings_text.py

site: setup
	$(JB) build . --config $(SITE_CONFIG) --path-output book -W -n --keep-going
	@echo "site: book/_build/html/index.html"

book: chapters
	$(MAKE) --no-print-directory runtimes
	$(MAKE) --no-print-directory findings
	$(MAKE) --no-print-directory site

# ruff, as pyproject.toml configures it: pyflakes, pycodestyle at 100 columns, the import order,
# bugbear (the chapters are jupytext sources: their cell headers are not wrapped).
lint: setup
	$(PY) -m ruff check .

# After `data`: some tests read the real Fashion-MNIST. One process per core (pytest-xdist;
# TEST_JOBS=0 runs them in this process, e.g. to step into a test with a debugger). loadfile keeps
# each test file on one worker, so a costly module fixture (test_dist's 10 trainings, test_faults'
# reference run) is made once, not once per worker and again after another file's tests.
unit: data
	$(PY) -m pytest -n $(TEST_JOBS) --dist loadfile

# Every chapter at smoke into .scratch/book (trained runs in .scratch/data): book/ and data/ are never touched.
# The smoke base models train on one thread: tiny models gain little from a second (measured idle:
# 48 s on one, 38 s on two, for 10 CPU-seconds more), and make test runs the unit tests beside them.
smoke: data
	OMP_NUM_THREADS=1 $(PY) -m copkit pretrain --config smoke --data-dir .scratch/data --out .scratch/data/pretrained --results .scratch/book/results/pretrained.json
	$(PY) tools/run_chapters.py --profile smoke --device $(DEVICE) --jobs $(JOBS) --out .scratch/book --data-dir .scratch/data
	COPKIT_SMOKE_BOOK=.scratch/book $(PY) -m pytest -q -p no:cacheprovider tests/test_book_pages.py -k smoke_run

# The committed book must build without a warning; built into .scratch/site, not book/_build.
SITE_BUILD = $(JB) build . --config $(SITE_CONFIG) --path-output .scratch/site -W -n --keep-going
site-check: setup
	$(SITE_BUILD)

# The site in a real browser (Chromium from the system, through Playwright): every page loads
# without a console error, every internal link and anchor resolves, every image loads and each
# chapter shows its figures, every equation is typeset by the bundled MathJax, the search finds
# "PageRank"; a screenshot goes to .scratch/site-check/.
# Rebuilding .scratch/site is incremental, so after `make test` it takes seconds.
check-site: site-check
	$(PY) tools/check_site.py .scratch/site/_build/html --out .scratch/site-check

# The unit tests, the smoke run and the strict site build run at once: each leaves a core idle for
# a while (a test file or a chapter alone in its tail, the smoke base models and Sphinx in one
# process each), and none reads what another writes (the unit tests check no smoke notebook unless
# COPKIT_SMOKE_BOOK names them). Each command's output shows in one piece when it ends
# (--output-sync=line), so the three never interleave; the site build's log goes to
# .scratch/site-check.log, shown when it fails. `make unit` or `make smoke` runs one of them alone.
test: lint
	$(MAKE) --no-print-directory -j3 --output-sync=line unit smoke site-check-beside
	@echo "make test: all passed"

site-check-beside: setup
	@mkdir -p .scratch && echo "site-check: the site builds with -W beside the tests (log: .scratch/site-check.log)"
	@if $(SITE_BUILD) > .scratch/site-check.log 2>&1; \
	then echo "site-check: built without a warning"; \
	else tail -n 60 .scratch/site-check.log; echo "site-check failed: the whole log is .scratch/site-check.log"; exit 1; fi

# Collapse orders of all 70,000 Fashion-MNIST images from the profile's saved CoMAE (resumable):
# one single-threaded process per core under torchrun, each ranking its own shards (on a GPU: one).
NPROC ?= $$(if [ "$(DEVICE)" = cpu ] || ! $(PY) -c 'import torch,sys; sys.exit(not torch.cuda.is_available())' 2>/dev/null; then nproc; else echo 1; fi)
orders: data
	OMP_NUM_THREADS=1 $(VENV)/bin/torchrun --standalone --nproc_per_node=$(NPROC) -m copkit rank --profile $(PROFILE) --device $(DEVICE)

# What the chapters trained at the book's profile, shipped so that a fresh clone loads it
# (tools/ship_runs.py: the runs each results file lists; refuses past 60 MB in data/pretrained).
ship-runs: setup
	$(PY) tools/ship_runs.py --all --prune

# Speed and efficiency (never in the tests): writes book/results/bench.json.
bench: data
	$(PY) tools/bench.py --profile $(PROFILE) --device $(DEVICE)

# The whole book at the gpu profile on one GPU (scripts/gpu_book.sh): chapters into book/, bench, site.
gpu-book: setup
	scripts/gpu_book.sh

# What a GPU machine that reaches no network lacks (wheels for its Python 3.12, Fashion-MNIST) -> .device/;
# scripts/device_book.sh, run there with .device carried, installs them and runs scripts/gpu_book.sh.
device-kit: data
	$(PY) tools/device_kit.py

clean:
	rm -rf .scratch book/_build
