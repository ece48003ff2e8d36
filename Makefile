# muso: set-up, tests, demo and the paper's reproduction targets.
# `make demo` and `make test` install what they need first (idempotent: a second run installs nothing).
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
MUSO := $(BIN)/muso
FMNIST_DEB := /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz
export WANDB_SILENT := true

.PHONY: help setup data demo test test-slow test-all bench lock clean

help:
	@echo "make demo       set up, then run the demo on Fashion-MNIST (CPU, a few minutes)"
	@echo "make test       set up, then run the fast tests"
	@echo "make test-slow  the slow tests (full width ranges, Slurm); CI runs them"
	@echo "make repro-*    reproduce the paper's experiments (see README)"

setup: $(STAMP) data

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --disable-pip-version-check -c constraints.txt -e '.[test]'
	@touch $@

# Fashion-MNIST offline: Debian ships the original files. Elsewhere muso reads data.root or downloads
# through torchvision; see README "Data".
data:
	@if [ -f $(FMNIST_DEB) ]; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  echo "installing Debian's dataset-fashion-mnist"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dataset-fashion-mnist >/dev/null; \
	else \
	  echo "note: Fashion-MNIST not found at /usr/share/datasets/fashion-mnist. Install Debian's dataset-fashion-mnist,"; \
	  echo "      or put the four *-ubyte.gz files in a folder and pass data.root=<folder>, or pip install torchvision."; \
	fi

# The demo: K-FAC on Fashion-MNIST, SP against second-order µP. Tune lr × damping at width 64, train the best
# setting of each at widths 256, 1024 and 2048, and report whether the optimum transferred (~3 min on 2 cores).
DEMO := outputs/demo/mlp-kfac
DEMO_ARGS := optimizer=kfac data.n_train=20000 data.n_test=5000 train.steps=300 train.eval_every=100 \
	train.eval_train_samples=5000 study.params=[sp,somup] study.lr=log2:-5:0 study.damping=[0.1,0.3,1] \
	study.root=outputs/demo study.name=mlp-kfac

demo: setup
	$(MUSO) sweep $(DEMO_ARGS)
	$(MUSO) transfer $(DEMO) study.widths=[256,1024,2048]
	$(MUSO) report $(DEMO)

test: setup
	$(BIN)/pytest -q -m "not slow"

test-slow: setup
	$(BIN)/pytest -q -m "slow"

test-all: setup
	$(BIN)/pytest -q

lock: $(STAMP)
	@{ head -2 constraints.txt; $(BIN)/pip freeze --exclude-editable | grep -vi '^muso' | sed 's/+cpu$$//'; echo "torchvision==0.28.0"; } > constraints.new && mv constraints.new constraints.txt

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache outputs multirun
