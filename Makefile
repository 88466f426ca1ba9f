# pixdiff: `make demo` generates images from the shipped models; `make test` runs the test suite.
# Both set up everything first (virtualenv, torch, the package, the Debian data packages).

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# torch 2.13.0 is the CPU build available from local disk on this kind of machine
TORCH  ?= torch==2.13.0
DEBS   := dataset-fashion-mnist fonts-noto-color-emoji chromium chromium-driver
SUDO   := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
STAMP  := $(VENV)/.setup-done

.PHONY: setup demo test test-all test-reliability lint format clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	@missing=""; for p in $(DEBS); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq $$missing; \
	fi
	@[ -x $(BIN)/python ] || $(PYTHON) -m venv $(VENV)
	@$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/pip install -q "$(TORCH)"
	$(BIN)/pip install -q -e ".[dev,serve]"
	@# the FID tests' reference network; --no-deps: the torchvision it asks for breaks this torch
	$(BIN)/pip install -q --no-deps "torch-fidelity==0.4.0"
	@touch $(STAMP)

demo: setup
	$(BIN)/python -m pixdiff.cli.main demo

test: setup
	$(BIN)/pytest

test-all: setup
	$(BIN)/pytest -m "slow or not slow"

# the full fault-injection suite of RELIABILITY.md (`make test` runs its fast subset); its
# figures go to out/reliability-summary.json
test-reliability: setup
	@mkdir -p out
	PIXDIFF_RELIABILITY_SUMMARY=out/reliability-summary.json \
	  $(BIN)/pytest -p no:cacheprovider tests/reliability -m "reliability or not reliability"

lint: setup
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench
	$(BIN)/python tests/lint/layering.py

format: setup
	$(BIN)/ruff format src tests bench
	$(BIN)/ruff check --fix src tests bench

clean:
	rm -rf $(VENV) build *.egg-info src/*.egg-info .pytest_cache .ruff_cache
