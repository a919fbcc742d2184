# The README's two commands. Each creates .venv on first use and installs the package;
# later calls skip the install unless pyproject.toml changed.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.install-stamp
WORKDIR ?= runs/main
# Extra pytest arguments, e.g. `make test PYTEST_ARGS="-k vae"`.
PYTEST_ARGS ?=

.PHONY: run test lint install clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

$(STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

# The main job: train the Gaussian VAE on the embedded `digits` data, print the test NLL.
run: $(STAMP)
	$(PY) -m ssl_gen.train.main --config=experiments/vae.py:digits --workdir=$(WORKDIR)

test: $(STAMP)
	$(PY) -m ruff check ssl_gen experiments tests benchmarks
	@# pytest exits 5 when it collected no tests: that is a failure, never a pass.
	$(PY) -m pytest $(PYTEST_ARGS); rc=$$?; \
	  if [ $$rc -eq 5 ]; then echo 'make test: pytest collected no tests' >&2; exit 1; fi; exit $$rc

lint: $(STAMP)
	$(PY) -m ruff check ssl_gen experiments tests benchmarks

clean:
	rm -rf $(VENV) .pytest_cache
