# peftlab: `make study` runs the default study end to end, `make test` runs the tests.
# Both set up everything themselves (virtual environment, pinned packages, offline data;
# `make test` also the tracking, Slurm, Ray and notebook extras, so the TensorBoard, MLflow and W&B sinks,
# the submitit and Ray executors and the example notebook, through a real Jupyter kernel, are tested) and
# reinstall nothing on a second call.
# From the default study to a paper: `make figures`, `make tables`, `make paper` (runs the
# study first when its results are missing; installs the LaTeX packages when apt may be
# used) and `make submission` (one archive to reproduce the paper).

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.peftlab-installed
DATA_STAMP := $(VENV)/.peftlab-data
TRACK_STAMP := $(VENV)/.peftlab-track
SLURM_STAMP := $(VENV)/.peftlab-slurm
RAY_STAMP := $(VENV)/.peftlab-ray
NOTEBOOK_STAMP := $(VENV)/.peftlab-notebook
PYTEST_ARGS ?=
# pip without its byte-compilation, which runs one file at a time; then every installed module compiled on all
# cores (compileall -j 0: 2 cores took 25 s where pip took 52, issue 87). A file that does not compile under
# this Python (torch's py312_intrinsics.py) is skipped without a word, as pip skips it. peftlab's own src/ too
# (SRC_COMPILE, before every test and study run; a file compiled already is skipped): where PYTHONDONTWRITEBYTECODE
# is set (this project's sandboxes set it), every process the suite starts compiled the ~200 peftlab modules it
# imports, 0.23 CPU s for a `peftlab train`, and no process wrote them down for the next.
PIP_INSTALL := $(BIN)/python -m pip install --quiet --disable-pip-version-check --no-compile
COMPILE := $(BIN)/python -m compileall -qq -j 0 "$$($(BIN)/python -c 'import sysconfig; print(sysconfig.get_path("purelib"))')" || true
SRC_COMPILE := $(BIN)/python -m compileall -qq -j 0 src || true
# pytest-xdist: test files run side by side in this many processes, each file in one (its module
# fixtures built once, its real-Slurm or Ray tests one at a time), in tests/conftest.py's order (the
# files with the most end-to-end tests first, not xdist's largest-first); TEST_WORKERS=0: one process
TEST_WORKERS ?= 2
DEFAULT_STUDY := runs/default
STUDY_YAML := configs/studies/default.yaml
PAPER_DIR := $(DEFAULT_STUDY)/paper
STUDY_RESULTS := $(DEFAULT_STUDY)/report/report.md

.PHONY: install data track slurm ray notebook study study-text study-lora-ablations study-lora-ranks study-text-ranks study-dialogue vtab-demo lint test test-full test-profile test-joins-full check-locks clean-study latex figures tables paper submission

install: $(STAMP)

$(STAMP): requirements.lock pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(PIP_INSTALL) -r requirements.lock
	$(PIP_INSTALL) --no-deps --no-build-isolation -e .
	@$(COMPILE)
	@touch $@

# the optional tracking sinks (pip install -e .[track]); -c keeps requirements.lock's versions
track: $(TRACK_STAMP)

$(TRACK_STAMP): $(STAMP) requirements-track.lock
	$(PIP_INSTALL) -r requirements-track.lock -c requirements.lock
	@$(COMPILE)
	@touch $@

# the optional executors of `peftlab study --executor`: submitit (pip install -e .[slurm]) and Ray (.[ray])
slurm: $(SLURM_STAMP)

$(SLURM_STAMP): $(STAMP) requirements-slurm.lock
	$(PIP_INSTALL) -r requirements-slurm.lock -c requirements.lock
	@$(COMPILE)
	@touch $@

ray: $(RAY_STAMP)

$(RAY_STAMP): $(STAMP) requirements-ray.lock
	$(PIP_INSTALL) -r requirements-ray.lock -c requirements.lock
	@$(COMPILE)
	@touch $@

# a real Jupyter kernel (pip install -e .[notebook]): nbclient runs examples/*.ipynb through ipykernel in the tests
notebook: $(NOTEBOOK_STAMP)

$(NOTEBOOK_STAMP): $(STAMP) requirements-notebook.lock
	$(PIP_INSTALL) -r requirements-notebook.lock -c requirements.lock
	@$(COMPILE)
	@touch $@

data: $(DATA_STAMP)

$(DATA_STAMP): $(STAMP) scripts/install-data.sh
	bash scripts/install-data.sh $(VENV)
	@touch $@

study: install data
	@$(SRC_COMPILE)
	bash scripts/default-study.sh $(BIN)

# the VTAB-1k protocol offline: Fashion-MNIST written as a VTAB-style task, then tuned, trained and reported
vtab-demo: install data
	$(BIN)/peftlab data vtab-demo cache/vtab-demo --quiet
	$(BIN)/peftlab study configs/studies/vtab_demo.yaml --workers 2 --report

# the offline text study: Debian's fortunes as a pretraining corpus and a four-category task, a small GPT-2
# pretrained on the corpus, then adapted with full fine-tuning, LoRA, AdaLoRA, the controller and prompt tuning
study-text: install data
	$(BIN)/peftlab data fortunes-corpus --out cache/data/fortunes-corpus
	$(BIN)/peftlab data fortunes-task --out cache/data/fortunes-task
	$(BIN)/peftlab study configs/studies/text.yaml --workers 2 --report

# the LoRA fine-tuning document's rank, alpha and target ablations on the same offline task
study-lora-ablations: install data
	$(BIN)/peftlab data fortunes-corpus --out cache/data/fortunes-corpus
	$(BIN)/peftlab data fortunes-task --out cache/data/fortunes-task
	$(BIN)/peftlab study configs/studies/lora_ablations.yaml --workers 2 --report

# the design document's rank study: LoRA r = 2, 4, 8, 16, 32 beside full fine-tuning, each tuned, on the default
# study's data and base
study-lora-ranks: install data
	$(BIN)/peftlab study configs/studies/lora_ranks.yaml --workers 2 --report

# the adaptive-rank document's per-layer rank study on the same base as a causal LM: uniform LoRA, three
# static rank strategies and AdaLoRA at one rank budget, judged by test perplexity
study-text-ranks: install data
	$(BIN)/peftlab data fortunes-corpus --out cache/data/fortunes-corpus
	$(BIN)/peftlab data fortunes-task --out cache/data/fortunes-task
	$(BIN)/peftlab study configs/studies/text_ranks.yaml --workers 2 --report

# the dialogue study: uniform LoRA, AdaLoRA and the controller at one trained budget on the fortunes LM (GPT-2, the
# architecture DialoGPT is) fine-tuned on a dialogue task in DialoGPT's turn format, judged by test perplexity, with
# each configuration's greedy replies in the report
study-dialogue: install data
	$(BIN)/peftlab data fortunes-corpus --out cache/data/fortunes-corpus
	$(BIN)/peftlab data fortunes-dialogue --out cache/data/fortunes-dialogue
	$(BIN)/peftlab study configs/studies/dialogue.yaml --workers 2 --report

# ruff (pyproject's [tool.ruff]): the whole tree linted and formatted; `ruff format .` and `ruff check --fix .`
# repair most of what it finds. `make test` runs it first.
lint: install
	$(BIN)/ruff check --quiet .
	$(BIN)/ruff format --check --quiet .

# the suite's pytest, as `make test` and `make test-full` run it (pytest exits 5 when it collected no test)
PYTEST_SUITE = $(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder $(PYTEST_ARGS); \
	rc=$$?; if [ $$rc -eq 5 ]; then echo "make $@: pytest collected no tests" >&2; fi; exit $$rc

test: install data track slurm ray notebook lint
	@$(SRC_COMPILE)
	@PEFTLAB_TEST_TIER=ci $(PYTEST_SUITE)

# `make test` and the full tier's further cases it leaves out (tests/tiers.py): the same scenarios in other
# timings, start methods, signals and executors
test-full: install data track slurm ray notebook lint
	@$(SRC_COMPILE)
	@PEFTLAB_TEST_TIER=full $(PYTEST_SUITE)

# Where the suite's time goes (docs/testing.md, "The suite's profile"): `make test`'s pytest with a plugin that
# records each test's wall and CPU seconds and the processes it starts; prints the 50 slowest tests and the 20
# slowest files, the load and the CPU, and keeps them in runs/test-profile/profile.md
test-profile: install data track slurm ray notebook
	@$(SRC_COMPILE)
	PEFTLAB_TEST_TIER=ci $(BIN)/python scripts/test_profile.py --workers $(TEST_WORKERS) $(PYTEST_ARGS)

# The join matrix's whole product (tests/test_joins.py: every compatible family x data x protocol x cache x method
# x export; `make test` runs its all-pairs design): docs/testing.md, "The join matrix".
test-joins-full: install data
	PEFTLAB_JOINS=full $(BIN)/python -m pytest -n $(TEST_WORKERS) -q tests/test_joins.py $(PYTEST_ARGS)

# Every lock resolves for macOS arm64 / CPython 3.11 and Linux aarch64, and x86_64 where this is not it (a wheel
# with a tag pip takes there, markers evaluated for each target: scripts/check_locks.py). Reads the package index's
# file lists (one JSON page per package), never a wheel: 4 CPU seconds, 8 s of wall clock on a 2-core x86_64
# machine (pip's dry run, which downloaded about 4 GB of wheels, took 706 s in CI).
# First, offline, every package pyproject.toml names must be locked inside its range (docs/install.md).
# CI runs it before `make test`.
check-locks: install
	$(BIN)/python scripts/check_locks.py

clean-study:
	rm -rf runs/default

latex:
	bash scripts/install-latex.sh

# The study's results; a failed run still leaves a report, and the paper says what failed.
$(STUDY_RESULTS):
	$(MAKE) study || test -f $@

figures: install $(STUDY_RESULTS)
	$(BIN)/peftlab paper $(DEFAULT_STUDY) --out $(PAPER_DIR) --only figures

tables: install $(STUDY_RESULTS)
	$(BIN)/peftlab paper $(DEFAULT_STUDY) --out $(PAPER_DIR) --only tables

paper: install latex $(STUDY_RESULTS)
	$(BIN)/peftlab paper $(DEFAULT_STUDY) --out $(PAPER_DIR)

submission: paper
	$(BIN)/peftlab submission $(DEFAULT_STUDY) --study $(STUDY_YAML) --paper $(PAPER_DIR)
