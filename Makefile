# One entry point for people and CI. `make demo` and `make test` set everything up from a fresh
# clone (Python 3.11, pip) in .venv, with versions pinned by constraints.txt.
VENV ?= .venv
PYTHON ?= python3
PY := $(VENV)/bin/python

export PREFECT_HOME ?= $(CURDIR)/.prefect
export PREFECT_SERVER_ANALYTICS_ENABLED := false
export PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS := 180

.PHONY: setup demo test docs clean postgres bench-backtoback

$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -c constraints.txt -e ".[test,microscopy,docs]"
	touch $@

setup: $(VENV)/.installed

demo: setup
	$(PY) scripts/demo.py

# The documentation site (mkdocs.yml, docs/) into site/; --strict: a broken link, page or API
# reference fails the build. No internet needed (no web fonts, no plugin that downloads).
docs: setup
	NO_MKDOCS_2_WARNING=1 $(PY) -m mkdocs build --strict --site-dir site

test: setup docs
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m pytest

clean:
	rm -rf $(VENV) .prefect data site

# Our flows against tensorstore, dask.array, scikit-image and bioimage-py on generated data
# (benchmarks/README.md); e.g. make bench BENCH_ARGS="--size 256 --repeats 3"
BENCH_ARGS ?=
.PHONY: bench
bench: setup
	$(PY) benchmarks/bench.py $(BENCH_ARGS)

# A real PostgreSQL for Prefect's server (root, apt); `make test` starts it itself when it can
postgres:
	bash scripts/postgres-test-server.sh start

# Ten back-to-back short runs on SQLite vs PostgreSQL servers (needs root for PostgreSQL)
bench-backtoback: setup
	$(PY) benchmarks/backtoback.py $(BENCH_ARGS)

# OME-Zarr pyramids: pyramid_flow against tensorstore, ome-zarr-py, ngff-zarr and the I/O floor
# (benchmarks/README.md, "Pyramids"); e.g. make bench-pyramid BENCH_ARGS="--size 256 --repeats 3"
.PHONY: bench-pyramid
bench-pyramid: setup
	$(PY) benchmarks/pyramid.py $(BENCH_ARGS)

# Object storage: S3 (moto_server on loopback) against local disk on the same data, ours through
# tensorstore's s3 kvstore against zarr-python over s3fs (benchmarks/README.md, "Object storage")
.PHONY: bench-s3
bench-s3: setup
	$(PY) benchmarks/s3.py $(BENCH_ARGS)

# A tiled OME-TIFF (1024^3 uint16, ~2 GB) to an OME-Zarr pyramid: pyramid_flow against ngff-zarr's
# TIFF conversion (benchmarks/README.md, "bench-tiff"); e.g. make bench-tiff BENCH_ARGS="--size 256"
.PHONY: bench-tiff
bench-tiff: setup
	$(PY) benchmarks/tiff_pyramid.py $(BENCH_ARGS)

# Our exact pyramid kernels against tinybrain's (igneous's), one thread, same data; tinybrain in
# a venv of its own (benchmarks/README.md, "bench-kernels"); e.g. BENCH_ARGS="--sizes 256"
.PHONY: bench-kernels
bench-kernels: setup
	$(PY) benchmarks/kernels.py $(BENCH_ARGS)

# Microscopy files (issue 23): a tiled mosaic CZI (0.5 and 1.6 GB) against bioio's OME-Zarr writers,
# and 200 small stacks against their concatenation (benchmarks/README.md, "bench-czi");
# e.g. make bench-czi BENCH_ARGS="czi --z 5 --repeats 1" or BENCH_ARGS="many --files 50"
.PHONY: bench-czi
bench-czi: setup
	$(PY) benchmarks/czi.py $(BENCH_ARGS)

# Adding mips to a neuroglancer precomputed volume in place: ours against igneous (a venv of its
# own) and tensorstore, same data (benchmarks/README.md, "bench-igneous"); quick: BENCH_ARGS="--size 128"
.PHONY: bench-igneous
bench-igneous: setup
	$(PY) benchmarks/igneous.py $(BENCH_ARGS)
