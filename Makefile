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

.PHONY: help setup data demo test test-slow test-all lock clean repro repro-coord repro-mlp-lr repro-mlp-lr-muon repro-mlp-lr-soap repro-cnn-damping repro-nngp repro-resnet repro-transformer repro-depth

help:
	@echo "make demo       set up, then run the demo on Fashion-MNIST (CPU, a few minutes)"
	@echo "make test       set up, then run the fast tests"
	@echo "make test-slow  the slow tests (full width ranges, Slurm); CI runs them"
	@echo "make repro-*    reproduce the paper's experiments: repro-coord, repro-mlp-lr, repro-cnn-damping,"
	@echo "                repro-nngp, repro-transformer (CPU-sized) and repro-resnet (GPU); Muon and SOAP:"
	@echo "                repro-mlp-lr-muon, repro-mlp-lr-soap; depth: repro-depth; results in docs/results.md"

setup: $(STAMP) data

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --disable-pip-version-check -c constraints.txt -e '.[test]'
	@touch $@

# Fashion-MNIST offline: Debian ships the original files. Elsewhere muso reads data.root or downloads
# through torchvision; see docs/cli.md, "data".
data:
	@if [ -f $(FMNIST_DEB) ]; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  echo "installing Debian's dataset-fashion-mnist"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dataset-fashion-mnist >/dev/null; \
	else \
	  echo "note: Fashion-MNIST not found at /usr/share/datasets/fashion-mnist. Install Debian's dataset-fashion-mnist,"; \
	  echo "      or put the four *-ubyte.gz files in a folder and pass data.root=<folder>, or pip install torchvision."; \
	fi

# The demo: K-FAC on Fashion-MNIST with MSE, SP against second-order µP (docs/results.md, "The demo"). First the
# mechanism: the coordinate check, Δh per layer against width (SP's hidden features freeze, somup's stay flat).
# Then the workflow: tune lr at width 64 (a half-octave grid, 3 seeds, 50 steps), carry each parameterization's
# optimum to widths 256 and 1024 with 5 verification points each, add the points the verdicts ask for (refine),
# and report: transfers / fails, the regret per width, the drift and what the transfer saved.
DEMO_ROOT ?= outputs/demo
DEMO := $(DEMO_ROOT)/mlp-kfac
DEMO_RUN := optimizer=kfac train.loss=mse data.n_train=20000 data.n_test=2000 train.steps=50 train.eval_every=50 \
	train.eval_train_samples=2000 train.threads=1
DEMO_ARGS := $(DEMO_RUN) launcher=pool launcher.workers=2 study.params=[sp,somup] study.lr=log2:-4:0:0.5 \
	study.seeds=[0,1,2] study.root=$(DEMO_ROOT) study.name=mlp-kfac
DEMO_COORD := optimizer=kfac train.loss=mse coord.widths=[64,128,256,512,1024]

demo: setup
	$(MUSO) coord-check $(DEMO_COORD) param=sp coord.out=$(DEMO_ROOT)/coord-sp
	$(MUSO) coord-check $(DEMO_COORD) param=somup coord.out=$(DEMO_ROOT)/coord-somup
	$(MUSO) sweep $(DEMO_ARGS)
	$(MUSO) transfer $(DEMO) transfer.widths=[256,1024]
	$(MUSO) refine $(DEMO)
	$(MUSO) report $(DEMO)

test: setup
	$(BIN)/pytest -q -m "not slow"

test-slow: setup
	$(BIN)/pytest -q -m "slow"

test-all: setup
	$(BIN)/pytest -q

# ------------------------------------------------------------------------------------------------------
# Reproducing Ishikawa & Karakida (ICLR 2024). Each target writes its own folder under $(REPRO) and is sized
# for a 2-core CPU; the variables give the full size on GPUs, e.g.
#   make repro-mlp-lr DEVICE=cuda LAUNCHER="launcher=pool launcher.per_gpu=4" MLP_WIDTHS=[64,256,1024,4096,16384]
# Measured results: docs/results.md.
REPRO ?= outputs/repro
DEVICE ?= auto
LAUNCHER ?= launcher=pool
SEEDS ?= [0,1,2]
COMMON = device=$(DEVICE) $(LAUNCHER) study.root=$(REPRO) study.seeds=$(SEEDS)
# After each sweep, `muso refine` halves the grid step around every optimum until it is REFINE_TO octaves (or the
# verdict is decided), within REFINE_BUDGET trials; then the best base setting is transferred and reported.
REFINE_TO ?= 0.25
REFINE = study.refine_to=$(REFINE_TO) study.refine_budget=$(REFINE_BUDGET)

repro: repro-coord repro-mlp-lr repro-cnn-damping repro-nngp

# Δh per layer against width: SGD / Adam / K-FAC / Shampoo / Muon / SOAP × sp / mup / somup, one figure, then Muon
# and SOAP on the CNN over k = 1 → 8. SGD … Shampoo take ~2 min; Muon and SOAP 4.5 min to width 2048 on the 2 quiet
# cores, and ~7.5 min on the CNN.
COORD_WIDTHS ?= [64,128,256,512,1024,2048]
repro-coord: setup
	$(BIN)/python scripts/repro_coord.py --out $(REPRO)/coord --widths $(COORD_WIDTHS) --device $(DEVICE)
	$(BIN)/python scripts/repro_coord.py --out $(REPRO)/coord-cnn --model cnn --widths [1,2,4,8] --fit-from 2 \
		--optimizers muon soap --device $(DEVICE)

# Learning-rate transfer: MLP on Fashion-MNIST, lr grid at every width, sp / mup / somup, K-FAC to width 2048
# and Shampoo to 1024 on CPU, 3 seeds, refined to a quarter octave near each optimum (~2 h on 2 cores, estimated;
# Shampoo's part took 54 min with 2 seeds);
# the report's verdict per parameterization gives the optimum's drift with its interval and the transfer's regret.
# Shampoo's grid starts lower than K-FAC's: its base-width optimum is near 2^-5 and the curve's valley lies below
# (docs/results.md §8), while from 2^-3 up it diverges.
MLP_LR = data.n_train=20000 train.steps=300 train.eval_every=100 train.eval_train_samples=5000 \
	study.params=[sp,mup,somup]
KFAC_LR ?= log2:-6:1
SHAMPOO_LR ?= log2:-9:-2
MLP_WIDTHS ?= [64,256,1024,2048]
MLP_TRANSFER ?= [256,1024,2048]
SHAMPOO_WIDTHS ?= [64,256,1024]
SHAMPOO_TRANSFER ?= [256,1024]
repro-mlp-lr: REFINE_BUDGET ?= 200
repro-mlp-lr: setup
	$(MUSO) sweep optimizer=kfac optimizer.damping=0.1 $(MLP_LR) study.lr=$(KFAC_LR) $(COMMON) study.widths=$(MLP_WIDTHS) \
		study.name=mlp-lr-kfac
	$(MUSO) refine $(REPRO)/mlp-lr-kfac $(REFINE)
	$(MUSO) transfer $(REPRO)/mlp-lr-kfac transfer.widths=$(MLP_TRANSFER)
	$(MUSO) report $(REPRO)/mlp-lr-kfac
	$(MUSO) sweep optimizer=shampoo $(MLP_LR) study.lr=$(SHAMPOO_LR) $(COMMON) study.widths=$(SHAMPOO_WIDTHS) \
		study.name=mlp-lr-shampoo
	$(MUSO) refine $(REPRO)/mlp-lr-shampoo $(REFINE)
	$(MUSO) transfer $(REPRO)/mlp-lr-shampoo transfer.widths=$(SHAMPOO_TRANSFER)
	$(MUSO) report $(REPRO)/mlp-lr-shampoo

# Learning-rate transfer with Muon (AdamW at lr 1e-3 for the biases): the MLP on Fashion-MNIST, an lr grid at widths
# 64 → 512, sp / somup, 2 seeds, one thread per trial, refined to a quarter octave near each optimum; the report's
# verdict per parameterization. Newton–Schulz in float32 costs O(M³) per step (30× an SGD step at width 1024), so a
# trial takes 1.5 s at width 64, 13 s at 256 and 50–80 s at 512 on one thread. On a GPU:
# make repro-mlp-lr-muon DEVICE=cuda MUON_WIDTHS=[64,256,1024,4096] MUON_TRANSFER=[256,1024,4096].
MATRIX_LR = data.n_train=10000 train.steps=200 train.eval_every=100 train.eval_train_samples=5000 train.threads=1
MUON_WIDTHS ?= [64,128,256,512]
MUON_TRANSFER ?= [128,256,512]
repro-mlp-lr-muon: SEEDS = [0,1]
repro-mlp-lr-muon: REFINE_BUDGET ?= 60
repro-mlp-lr-muon: setup
	$(MUSO) sweep optimizer=muon $(MATRIX_LR) study.params=[sp,somup] study.lr=log2:-9:-1 $(COMMON) \
		study.widths=$(MUON_WIDTHS) study.name=mlp-lr-muon
	$(MUSO) refine $(REPRO)/mlp-lr-muon $(REFINE)
	$(MUSO) transfer $(REPRO)/mlp-lr-muon transfer.widths=$(MUON_TRANSFER)
	$(MUSO) report $(REPRO)/mlp-lr-muon

# Learning-rate transfer with SOAP (ε = 1e-4 relative, eigenbasis every 10 steps): the same MLP and budget as Muon's,
# widths 64 → 512 (SOAP's eigh costs less than Newton–Schulz: 18 s for a width-256 trial on one thread), an lr grid
# around Adam's optimum of 2^-8, 2 seeds, refined to a quarter octave near each optimum; sp / somup (SOAP's somup column
# is Adam's µP since issue 29, so mup is the same rule). SOAP_WIDTHS=[64] runs the advertised loop instead: the grid at
# the base width only, then transfer with verification points.
SOAP_WIDTHS ?= [64,128,256,512]
SOAP_TRANSFER ?= [128,256,512]
repro-mlp-lr-soap: SEEDS = [0,1]
repro-mlp-lr-soap: REFINE_BUDGET ?= 80
repro-mlp-lr-soap: setup
	$(MUSO) sweep optimizer=soap $(MATRIX_LR) study.params=[sp,somup] study.lr=log2:-12:-4 $(COMMON) \
		study.widths=$(SOAP_WIDTHS) study.name=mlp-lr-soap
	$(MUSO) refine $(REPRO)/mlp-lr-soap $(REFINE)
	$(MUSO) transfer $(REPRO)/mlp-lr-soap transfer.widths=$(SOAP_TRANSFER)
	$(MUSO) report $(REPRO)/mlp-lr-soap

# Damping transfer: the 3-layer CNN on Fashion-MNIST with MSE, K-FAC at lr 0.03, a damping grid in half decades
# at channel multipliers 1, 2, 4, 3 seeds, refined to a quarter octave near each optimum (~1.25 h on 2 cores,
# estimated); the report's damping* verdict per parameterization is the result.
CNN_WIDTHS ?= [1,2,4]
CNN_TRANSFER ?= [2,4]
repro-cnn-damping: REFINE_BUDGET ?= 120
repro-cnn-damping: setup
	$(MUSO) sweep model=cnn optimizer=kfac train.loss=mse data.n_train=10000 train.steps=200 train.eval_every=100 \
		train.eval_train_samples=5000 study.params=[sp,somup] study.lr=[0.03] study.damping=log10:-3:1:0.5 \
		$(COMMON) study.widths=$(CNN_WIDTHS) study.name=cnn-damping
	$(MUSO) refine $(REPRO)/cnn-damping $(REFINE)
	$(MUSO) transfer $(REPRO)/cnn-damping transfer.widths=$(CNN_TRANSFER)
	$(MUSO) report $(REPRO)/cnn-damping

# NNGP bias: K-FAC (lr 0.1, ρ 1) with a zero-initialised readout against the µP readout, batch 32 … 2048, as one
# Hydra multirun (~5 min).
repro-nngp: setup
	$(BIN)/python scripts/repro_nngp.py --out $(REPRO)/nngp --device $(DEVICE)

# ResNet-18 on CIFAR-100 at channel multipliers 1 → 16, K-FAC and Shampoo, sp vs somup: a GPU target. Needs
# the CIFAR-100 python batches under DATA_ROOT (or torchvision to download them); hours on one GPU.
DATA_ROOT ?= data
repro-resnet: setup
	$(MUSO) sweep model=resnet18 data=cifar100 data.root=$(DATA_ROOT) optimizer=kfac train.epochs=20 \
		train.batch_size=128 train.lr_schedule=cosine study.params=[sp,somup] study.lr=log2:-6:0 \
		study.damping=log10:-3:0 $(COMMON) study.name=resnet-kfac
	$(MUSO) transfer $(REPRO)/resnet-kfac transfer.widths=[2,4,8,16]
	$(MUSO) report $(REPRO)/resnet-kfac
	$(MUSO) sweep model=resnet18 data=cifar100 data.root=$(DATA_ROOT) optimizer=shampoo train.epochs=20 \
		train.batch_size=128 train.lr_schedule=cosine study.params=[sp,somup] study.lr=log2:-8:-2 \
		$(COMMON) study.name=resnet-shampoo
	$(MUSO) transfer $(REPRO)/resnet-shampoo transfer.widths=[2,4,8,16]
	$(MUSO) report $(REPRO)/resnet-shampoo

# Learning-rate transfer of a GPT on the Python standard library's source as bytes (data=pystdlib): K-FAC, Shampoo
# and Adam × sp / mup / somup (Adam: sp / mup; somup is mup for Adam), the lr grid at every d_model in GPT_WIDTHS,
# 3 seeds, refined where the verdicts need points (an optimum at the grid's edge gets the points beyond it), then the
# transfer from the base width with its verification points and the report (regret per width, drift, width law). CPU size (~30 min on 2 shared cores): 2 blocks, 4 heads, context 32, batch 8, 40 steps,
# d_model 64 → 256. GPU size: make repro-transformer DEVICE=cuda LAUNCHER="launcher=pool launcher.per_gpu=4"
#   GPT_WIDTHS=[128,256,512,1024,2048] GPT_TRANSFER=[256,512,1024,2048] GPT_RUN="data.context=128 train.steps=2000
#   train.batch_size=64 train.eval_every=500 data.n_test=2048 train.eval_train_samples=2048 model.layers=4"
GPT_RUN ?= data.context=32 data.n_test=128 train.steps=40 train.batch_size=8 train.eval_every=40 \
	train.eval_train_samples=128
GPT_WIDTHS ?= [64,128,256]
GPT_TRANSFER ?= [128,256]
GPT = model=gpt data=pystdlib $(GPT_RUN) $(COMMON) study.widths=$(GPT_WIDTHS)
repro-transformer: REFINE_BUDGET ?= 90
repro-transformer: setup
	$(MUSO) sweep optimizer=kfac $(GPT) study.params=[sp,mup,somup] study.lr=log2:-5:-1 study.name=gpt-lr-kfac
	$(MUSO) refine $(REPRO)/gpt-lr-kfac $(REFINE)
	$(MUSO) transfer $(REPRO)/gpt-lr-kfac transfer.widths=$(GPT_TRANSFER)
	$(MUSO) report $(REPRO)/gpt-lr-kfac
	$(MUSO) sweep optimizer=shampoo optimizer.eigh_dtype=float32 $(GPT) study.params=[sp,mup,somup] \
		study.lr=log2:-6:-3 study.name=gpt-lr-shampoo
	$(MUSO) refine $(REPRO)/gpt-lr-shampoo $(REFINE)
	$(MUSO) transfer $(REPRO)/gpt-lr-shampoo transfer.widths=$(GPT_TRANSFER)
	$(MUSO) report $(REPRO)/gpt-lr-shampoo
	$(MUSO) sweep optimizer=adam $(GPT) study.params=[sp,mup] study.lr=log2:-9:-6 study.name=gpt-lr-adam
	$(MUSO) refine $(REPRO)/gpt-lr-adam $(REFINE)
	$(MUSO) transfer $(REPRO)/gpt-lr-adam transfer.widths=$(GPT_TRANSFER)
	$(MUSO) report $(REPRO)/gpt-lr-adam

# Depth transfer (docs/results.md, "Depth"): the residual MLP (model=resmlp: pre-LayerNorm blocks, width 128) on
# Fashion-MNIST, an lr grid at the base depth 2, the base optimum trained at depths 8 and 32 with 4 verification
# points each, then refined where the verdicts ask; sp (α = 0: no branch multiplier and no depth rule, the control of
# standard practice) against somup (α = 1: branches × (L/2)^-1 and the depth rules of parametrize.DEPTH_LR /
# DEPTH_DAMPING). Adam under α = 1 is CompleteP, the published control; K-FAC, Shampoo and Muon carry the derived rules.
# 2 seeds, 200 steps of batch 128 on 10 000 images, one thread per trial. A depth-32 trial takes ~15 s of CPU.
DEPTH_RUN = model=resmlp model.width=128 model.base_width=128 data.n_train=10000 train.steps=200 train.eval_every=100 \
	train.eval_train_samples=5000 train.threads=1 study.params=[sp,somup] study.depths=[2]
DEPTH_TRANSFER ?= [8,32]
DEPTH_OPTIMIZERS ?= adam:log2:-13:-4 kfac:log2:-7:1 shampoo:log2:-10:-2 muon:log2:-10:-1
repro-depth: SEEDS = [0,1]
repro-depth: REFINE_TO = 0.5
repro-depth: REFINE_BUDGET ?= 40
repro-depth: setup
	@for spec in $(DEPTH_OPTIMIZERS); do opt=$${spec%%:*}; grid=$${spec#*:}; study=$(REPRO)/depth-$$opt; \
	  $(MUSO) sweep optimizer=$$opt $(DEPTH_RUN) study.lr=$$grid $(COMMON) study.name=depth-$$opt && \
	  $(MUSO) transfer $$study transfer.depths=$(DEPTH_TRANSFER) && \
	  $(MUSO) refine $$study $(REFINE) && \
	  $(MUSO) report $$study || exit 1; done

lock: $(STAMP)
	@{ head -2 constraints.txt; $(BIN)/pip freeze --exclude-editable | grep -vi '^muso' | sed 's/+cpu$$//'; echo "torchvision==0.28.0"; } > constraints.new && mv constraints.new constraints.txt

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache outputs multirun
