# picompile — set-up, demo, tests. `make demo` and `make test` work from a fresh clone.
SHELL := /bin/bash
PYTHON_VERSION := $(shell cat .python-version)
# openfhe's PyPI wheels load only on CPython 3.10 here: find that interpreter (pyenv first).
PYTHON310 ?= $(shell pyenv which python 2>/dev/null || command -v python3.10)
VENV := .venv
PY := $(VENV)/bin/python
TRAIN_VENV := .venv-train
# torch 2.13 CPU lies on disk for Python 3.11 only: the training venv uses pyenv's 3.11.
TRAIN_PYTHON ?= $(shell ls -d $$(pyenv root 2>/dev/null)/versions/3.11*/bin/python 2>/dev/null | tail -1 || command -v python3.11)
BUILD := build

FASHION_DIR := /usr/share/datasets/fashion-mnist

.PHONY: venv demo test test-all lint fuzz examples fashion-data bench clean

$(VENV)/.installed: setup.cfg pyproject.toml
	@v=$$($(PYTHON310) -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null); \
	if [ "$$v" != "3.10" ]; then \
	  echo "error: picompile needs CPython 3.10 (openfhe's wheels load only there); found '$(PYTHON310)' ($$v). Install it with pyenv: pyenv install $(PYTHON_VERSION)"; exit 1; fi
	$(PYTHON310) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev,train,cluster]'
	@touch $@

venv: $(VENV)/.installed

demo: venv
	$(PY) examples/demo.py --out $(BUILD)/demo

# Two workers (one per core; a test file stays on one worker), then the wall-time checks alone.
test: venv
	$(PY) -m pytest -q -n 2 --dist loadfile -m "not slow and not serial"
	$(PY) -m pytest -q -m "serial and not slow"

test-all: venv
	$(PY) -m pytest -q -m "slow or not slow"

# Fuzz every harness (fuzz/harnesses.py) for FUZZ_SECONDS each, one process per harness (a crash
# of a native library ends only its harness); findings land in fuzz/findings/.
FUZZ_SECONDS ?= 60
fuzz: venv
	@status=0; for harness in plan_file plan_json onnx_model numpy_input frames fhe_session \
	  hybrid_session; do $(PY) fuzz/run.py --harness $$harness --seconds $(FUZZ_SECONDS) \
	  || status=1; done; exit $$status

lint: venv
	$(VENV)/bin/ruff check .

# Fashion-MNIST: Debian's package (the four original IDX files), and the committed subset
# (examples/fashion_subset.npz: 1,000 test + 512 calibration images) rewritten from it.
fashion-data: venv
	@test -d $(FASHION_DIR) || apt-get install -y -qq --no-install-recommends dataset-fashion-mnist \
	  || { echo "error: Fashion-MNIST needs Debian's package: apt-get install dataset-fashion-mnist"; exit 1; }
	$(PY) examples/fashion.py

# Re-train and re-export the example models (Python 3.11 + torch 2.13 CPU; not needed to use picompile).
examples: fashion-data
	@test -n "$(TRAIN_PYTHON)" || { echo "error: make examples needs CPython 3.11 (pyenv install 3.11)"; exit 1; }
	$(TRAIN_PYTHON) -m venv $(TRAIN_VENV)
	$(TRAIN_VENV)/bin/pip install --quiet -r examples/requirements-train.txt
	$(TRAIN_VENV)/bin/python examples/train_examples.py
	# Fashion-MNIST: MLP and VGG take minutes; ResNet-20 about 1.5-2.5 h on 2 cores
	# (resumable: examples/train_fashion.py --models resnet20 --resume).
	$(TRAIN_VENV)/bin/python examples/train_fashion.py --models mlp vgg resnet20

bench: venv
	@for script in bench/*.py; do echo "== $$script"; $(PY) $$script || exit 1; done

clean:
	rm -rf $(BUILD) .pytest_cache .ruff_cache
