# Two commands on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cat setup.py | md5sum | cut -c1-8)

.PHONY: setup demo test lint bench clean

$(STAMP): setup.py
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[test,tune]"
	touch $(STAMP)

setup: $(STAMP)

demo: $(STAMP)
	$(PY) examples/demo.py

lint: $(STAMP)
	$(PY) -m ruff check keras_r21d tests tools examples

# pytest exits 5 when it collects no test: that is a failure here.
test: $(STAMP) lint
	$(PY) -m pytest -q --durations=15 tests

bench: $(STAMP)
	$(PY) tools/bench_models.py

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .ruff_cache
