# avemo: `make demo` and `make test` are all a fresh machine needs (both run `setup` first).
SHELL := /bin/bash
.DEFAULT_GOAL := help
VENV ?= .venv
PY := $(VENV)/bin/python
AVEMO := $(VENV)/bin/avemo
STAMP := $(VENV)/.avemo-setup
DEV_STAMP := $(VENV)/.avemo-dev
SMILE_STAMP := $(VENV)/.avemo-smile
DOCS_STAMP := $(VENV)/.avemo-docs
export AVEMO_CACHE ?= $(HOME)/.cache/avemo

# pass-through variables for the user-facing targets
DATASET ?= demo
# the adapter that reads ROOT (avemo list datasets); DATASET names the outputs
ADAPTER ?= $(DATASET)
ROOT ?=
MANIFEST ?= manifests/$(DATASET).csv
FEATURES ?= features/$(DATASET)
SETS ?= face_faceapi logmel
DEVICE ?= cpu
CONFIG ?= workflows/configs/demo_fbp.yaml
GRID ?= workflows/grids/demo.yaml
ARGS ?=
PYTEST_ARGS ?=

RUNS ?= runs
# DATASET=NAME given: fuse-train and ablate read that corpus (its manifest and feature folder;
# configs name feature sets, data.features_dir says where; its classes are its labels)
CORPUS_ARGS = $(if $(filter command line environment,$(origin DATASET)),data.manifest=$(MANIFEST) data.features_dir=$(FEATURES) data.classes=null)
GRID_OUT = $(if $(CORPUS_ARGS),-o $(RUNS)/ablate/$(basename $(notdir $(GRID)))-$(DATASET))

OUT ?= runs/ablate/demo

.PHONY: help setup dev smile lock docs demo manifest features fuse-train ablate report merge emodb bench gpu-check test test-slow reference-venvs lint clean

help:
	@echo "make demo        set up, then run the whole pipeline on the built-in demo corpus"
	@echo "make test        set up, then run the test suite"
	@echo "make manifest    DATASET=ravdess ROOT=/data/RAVDESS [ADAPTER=csv] [ARGS='--option folds=6']"
	@echo "make features    MANIFEST=... SETS='face_fer2013 logmel' FEATURES=... DEVICE=cuda"
	@echo "make fuse-train  CONFIG=workflows/configs/zhou_self_fbp.yaml [DATASET=ravdess] ARGS='trainer.max_epochs=5'"
	@echo "make ablate      GRID=workflows/grids/zhou.yaml [DATASET=ravdess]  (-> runs/ablate/zhou-ravdess)"
	@echo "make report      OUT=<grid results folder>  (redraw the Markdown/PNG report)"
	@echo "make merge       OUT=<grid results folder>  (merge fold models: CCC centering)"
	@echo "make emodb       the EmoDB check: packaged grid + SVM baseline (experiments/; [ROOT=DIR] ARGS=...)"
	@echo "make bench       benchmarks -> benchmarks/results/<date>.md (ARGS=\"--only S -o FILE\")"
	@echo "make gpu-check   every GPU path once vs the CPU (<= 8 min on one H100) -> bench rows"
	@echo "make test-slow   the slow tests (kill/resume, README's real-dataset path on ../shared, live references)"
	@echo "make reference-venvs  TensorFlow / face-api runtimes for the live reference re-checks (~1.6 GB)"
	@echo "make docs        the docs site -> site/ (strict: any warning fails; draws its figures from a demo run)"
	@echo "make lint        ruff check + ruff format --check + mypy over the package"
	@echo "make smile       add opensmile (research-only licence) for the EmoDB baselines"
	@echo "make lock        rewrite requirements*.lock from the installed venv"

setup: $(STAMP)

$(STAMP): requirements.lock pyproject.toml setup.py
	@command -v python3.11 >/dev/null || command -v python3 >/dev/null || { echo "need Python 3.11"; exit 1; }
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q setuptools==80.9.0 wheel==0.45.1
	$(PY) -m pip install -q -r requirements.lock
	$(PY) -m pip install -q --no-deps --no-build-isolation -e .
	$(PY) -m avemo.data.assets fetch
	$(PY) -m avemo.extract.weights
	touch $(STAMP)

# test and lint tools (the [dev] extra): `make test` / `make lint` only, not `make demo`
dev: $(DEV_STAMP)

$(DEV_STAMP): requirements-dev.lock $(STAMP)
	$(PY) -m pip install -q -r requirements-dev.lock
	touch $(DEV_STAMP)

# openSMILE (audEERING Research License): non-commercial use, research, teaching and testing
# included; installing it accepts that licence (make test installs it so the speech recipe's
# descriptor path is tested, not skipped)
$(SMILE_STAMP): requirements-smile.lock $(STAMP)
	$(PY) -m pip install -q -r requirements-smile.lock
	touch $(SMILE_STAMP)

smile: $(SMILE_STAMP)

# the docs site: figures drawn from a real demo run (docs/figures.py), then a strict build
$(DOCS_STAMP): requirements-docs.lock $(STAMP)
	$(PY) -m pip install -q -r requirements-docs.lock
	touch $(DOCS_STAMP)

docs: $(DOCS_STAMP)
	$(PY) docs/figures.py docs/figures
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict

lock: setup
	$(PY) -m avemo.lockfile

demo: setup
	$(AVEMO) demo $(ARGS)

manifest: setup
	$(AVEMO) manifest $(ADAPTER) $(ROOT) -o $(MANIFEST) $(ARGS)

features: setup
	$(AVEMO) features -m $(MANIFEST) $(foreach s,$(SETS),-s $(s)) -o $(FEATURES) --device $(DEVICE) $(ARGS)

fuse-train: setup
	$(AVEMO) fuse-train -c $(CONFIG) $(CORPUS_ARGS) $(if $(CORPUS_ARGS),output.dir=$(RUNS)) $(ARGS)

ablate: setup
	$(AVEMO) ablate -g $(GRID) $(GRID_OUT) $(CORPUS_ARGS) $(ARGS)

report: setup
	$(AVEMO) report $(OUT) $(ARGS)

merge: setup
	$(AVEMO) merge $(OUT) $(ARGS)

# EmoDB: ROOT=DIR, else AVEMO_EMODB, else ../shared/data/emodb-8spk (experiments/README.md)
emodb: setup
	$(PY) experiments/emodb/run.py models $(if $(ROOT),--root $(ROOT)) $(ARGS)

# one entry, one file: make bench ARGS="--only store --quick -o /tmp/b.md"
bench: setup
	$(PY) -m avemo.bench $(ARGS)

# exit 3 = no CUDA device (nothing measured): not an error for make on a CPU-only machine
gpu-check: setup
	$(PY) -m avemo.workflows.gpu_check $(ARGS) || [ $$? -eq 3 ]

test: setup dev smile
	$(PY) -m pytest -q -m "not slow" $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests: treating as failure"; exit 1; fi; exit $$rc

# kill/resume, real footage end to end (README's real-dataset commands), live re-checks vs
# TensorFlow / face-api (those two need `make reference-venvs`, else they skip naming it)
test-slow: setup dev smile
	$(PY) -m pytest -q -m slow $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests: treating as failure"; exit 1; fi; exit $$rc

# reference runtimes for the live re-checks; not project dependencies (~1.6 GB in .cache/)
reference-venvs:
	test -x .cache/refvenv/bin/python || python3 -m venv .cache/refvenv
	.cache/refvenv/bin/pip install -q tensorflow-cpu==2.21.0 ai-edge-litert==2.3.0
	$(PY) tests/fixtures/make_faceapi_reference.py --install

# ruff (lint + the formatter, checked) and mypy over the whole package; part of .ci/run
lint: setup dev
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(PY) tools/typecheck.py

clean:
	rm -rf build *.egg-info .pytest_cache .ruff_cache
