# The two commands of the README: `make demo` runs the loop on the bundled sample,
# `make test` runs the tests. Both create and fill .venv when it is missing.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test test-fast benchmarks clean-venv

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/tinyloop demo

test: $(STAMP)
	scripts/ensure-system-deps
	$(BIN)/python -m pytest

# While developing: the suite without the tests that start MongoDB, a Prefect server or a
# browser (markers in pyproject.toml), so no chromium is needed. `make test` stays the gate.
FAST_TESTS := not benchmark and not mongo and not prefect and not browser
test-fast: $(STAMP)
	$(BIN)/python -m pytest -m '$(FAST_TESTS)'

benchmarks: $(STAMP)
	$(BIN)/python -m pytest -m benchmark

clean-venv:
	rm -rf $(VENV)
