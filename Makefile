# Two commands on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
HASH := $(shell cat setup.py Makefile | md5sum | cut -c1-8)
STAMP := $(VENV)/.installed-$(HASH)
# The demo needs the package and TensorFlow (the [cpu] extra) only.
DEMO_STAMP := $(VENV)/.demo-$(HASH)

.PHONY: setup sysdeps demo test test-fast lint bench clean

# torch and torchvision (x86-64; tests only: the converter's parity tests run
# torchvision's own models; pip takes both from this machine kind's disk, about
# 50 s) run in child processes: torch imported after TensorFlow crashes.
# tensorflow-serving-api (tests only: they check the client's messages against
# the official ones) declares a dependency on the `tensorflow` distribution,
# which would install a second TensorFlow beside tensorflow-cpu; its modules
# need nothing but protobuf, grpcio and TensorFlow's protos, hence --no-deps.
$(STAMP): setup.py Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[cpu,test,tune]"
	$(PY) -m pip install --quiet --no-deps "tensorflow-serving-api==2.21.0"
	if [ "$$(uname -m)" = x86_64 ]; then $(PY) -m pip install --quiet "torch==2.14.1" "torchvision==0.29.1"; fi
	touch $(STAMP)

setup: $(STAMP)

$(DEMO_STAMP): setup.py Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[cpu]"
	touch $(DEMO_STAMP)

# Debian's ffmpeg writes the H.264 and odd-size test videos. Installed when
# this machine can (root with apt-get); otherwise those tests skip and say why.
sysdeps:
	@command -v ffmpeg >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends ffmpeg >/dev/null) \
	      || echo "warning: could not install ffmpeg; H.264 tests will be skipped"; \
	  else echo "warning: ffmpeg not found and cannot be installed here; H.264 tests will be skipped"; fi; }

# DEMO_ARGS shortens it (the suite runs `examples/demo.py --epochs 1 --videos-per-class 6`).
demo: $(DEMO_STAMP)
	$(PY) examples/demo.py $(DEMO_ARGS)

lint: $(STAMP)
	$(PY) -m ruff check keras_r21d tests tools examples

# pytest exits 5 when it collects no test: that is a failure here.
# TEST_WORKERS pytest-xdist processes share the files (--dist loadfile: a file's tests and its module fixtures stay
# in one process), the longest files first (tests/conftest.py's LONGEST_FIRST, kept by --no-loadscope-reorder);
# TEST_WORKERS=0 runs them in this process.
TEST_WORKERS ?= 2
test: $(STAMP) sysdeps lint
	$(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder --durations=30 tests

# What a developer runs between edits: everything but the tests marked slow (see pyproject.toml).
test-fast: $(STAMP) sysdeps lint
	$(PY) -m pytest -q -m "not slow" --durations=10 tests

bench: $(STAMP)
	$(PY) tools/bench_models.py

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .ruff_cache
