# Bootstraps everything on a fresh machine. `make setup` is idempotent: it rebuilds the venv's
# packages only when a requirements file changed.
PY ?= python3
VENV := .venv
VPY := $(VENV)/bin/python
# The exact torch pair this project's machines have in their local wheel cache (CPU runs of a
# CUDA build). Users on clusters install their own build; requirements.txt keeps a range.
TORCH_PIN ?= torch==2.14.1 torchvision==0.29.1
STAMP := $(VENV)/.installed

.PHONY: setup test run bench reproduce clean-venv

setup: $(STAMP)

$(STAMP): requirements.txt requirements-dev.txt
	test -x $(VPY) || $(PY) -m venv $(VENV)
	$(VPY) -m pip install -q --upgrade pip
	$(VPY) -m pip install -q $(TORCH_PIN)
	$(VPY) -m pip install -q -r requirements.txt -r requirements-dev.txt $(TORCH_PIN)
	@# build the CPU noise kernel now (it would otherwise be built on first use); never fatal
	-$(VPY) -c "from noise import fast_rng; print('noise kernel:', fast_rng.library_path() or 'not built, noise uses torch.randn')"
	touch $(STAMP)

test: setup
	$(VPY) -m pytest -q tests

# The main job: train LeNet5-BN on Fashion-MNIST (embedded defaults; reused if already
# trained), then walk additive noise through all 16 sites: σ_mid table and walking-noise plot.
run: setup
	$(VPY) train.py walk

bench: setup
	$(VPY) benchmarks/run_all.py

# Check the paper's claims on the real Fashion-MNIST and write docs/REPRODUCTION.md
# (SCALE=smoke: seconds, for testing; small: ~20 min on 2 cores; full: hours).
# SCALE=medium: the convergence study of docs/reproduction/PROTOCOL_medium.md (~3-4 h on two
# idle cores, resumable: measurements cached in docs/reproduction/medium/cache), writes
# docs/REPRODUCTION_medium.md; SCALE=medium-smoke: its code paths in minutes (a data subset).
SCALE ?= small
reproduce: setup
	$(VPY) -m analysis.reproduce --scale $(SCALE)

clean-venv:
	rm -rf $(VENV)
