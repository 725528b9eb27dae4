# Two commands on a fresh machine: `make demo` (the main job) and `make test` (the tests).
# Both create or reuse the local virtual environment .venv and install what they need.
PYTHON ?= python3
VENV   ?= .venv
PY      = $(VENV)/bin/python
STAMP   = $(VENV)/.installed

.PHONY: demo test test-fast venv clean

$(STAMP): pyproject.toml
	@free=$$(df -Pk . | awk 'NR==2 {print int($$4 / 1048576)}'); \
	  if [ "$$free" -lt 8 ]; then echo "warning: $$free GB free here; the environment takes about 6 GB (torch and its CUDA libraries)"; fi
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	@touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/inceptionlab demo

# tests run in one process per core (pytest-xdist); WORKERS=0 runs them in this process
WORKERS ?= auto

test: $(STAMP)
	$(PY) -m pytest -q -n $(WORKERS) --dist worksteal -m "slow or not slow" $(PYTEST_ARGS)

test-fast: $(STAMP)
	$(PY) -m pytest -q -n $(WORKERS) --dist worksteal -m "not slow" $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache
