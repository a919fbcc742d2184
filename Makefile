# The README's two commands. Each creates .venv on first use and installs the package;
# later calls skip the install unless pyproject.toml changed.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.install-stamp
WORKDIR ?= runs/dvae_comparison
# Extra pytest arguments, e.g. `make test PYTEST_ARGS="-k vae"`.
PYTEST_ARGS ?=
# pytest-xdist workers, one per core of the 2-core CI machine (most tests are single-threaded
# XLA compiles); whole modules stay on one worker (`loadscope`: a module's fixtures, e.g. the
# CLI test's launches, run once). `make test PYTEST_WORKERS=0` runs in one process.
PYTEST_WORKERS ?= 2

.PHONY: run test test-slow lint install clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

$(STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install --quiet -e '.[dev,parity]'
	touch $(STAMP)

install: $(STAMP)

# The main job: the discrete-VAE estimator comparison on the embedded `digits_binarized`
# data. Categorical latents: REINFORCE-LOO, Gumbel-Softmax and straight-through trained
# 2,000 steps each, and every categorical estimator of the library (14) measured at their
# parameters 4 times along each trajectory; Bernoulli latents: DisARM trained 1,000 steps,
# with ARM, DisARM and RLOO measured along it. ~5 min on 2 CPU cores; prints the tables
# and writes $(WORKDIR)/{categorical,bernoulli}/report.md with the plots.
run: $(STAMP)
	$(PY) -m ssl_gen.main --config=experiments/dvae_estimators.py:categorical,sweep \
	  --workdir=$(WORKDIR)/categorical
	$(PY) -m ssl_gen.main --config=experiments/dvae_estimators.py:bernoulli,sweep \
	  --config.estimators=disarm --config.track=rloo,arm,disarm --config.num_train_steps=1000 \
	  --workdir=$(WORKDIR)/bernoulli

# `make test`: ruff and every test not marked `slow` (under 15 min on 2 cores).
# `make test-slow`: the `slow` ones (multi-process, kill-and-resume, notebooks, end-to-end
# runlocal launches; CI runs both). `make test PYTEST_MARKERS=` runs the whole suite at once.
PYTEST_MARKERS ?= not slow

test: $(STAMP)
	$(PY) -m ruff check ssl_gen experiments tests benchmarks
	@# pytest exits 5 when it collected no tests: that is a failure, never a pass.
	$(PY) -m pytest -n $(PYTEST_WORKERS) --dist loadscope -m "$(PYTEST_MARKERS)" $(PYTEST_ARGS); \
	  rc=$$?; if [ $$rc -eq 5 ]; then echo 'make test: pytest collected no tests' >&2; exit 1; fi; \
	  exit $$rc

test-slow: $(STAMP)
	$(PY) -m pytest -n $(PYTEST_WORKERS) --dist loadscope -m slow $(PYTEST_ARGS); rc=$$?; \
	  if [ $$rc -eq 5 ]; then echo 'make test-slow: pytest collected no tests' >&2; exit 1; fi; \
	  exit $$rc

lint: $(STAMP)
	$(PY) -m ruff check ssl_gen experiments tests benchmarks

clean:
	rm -rf $(VENV) .pytest_cache
