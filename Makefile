# The README's two commands: `make run` and `make test`. Each sets up what it needs first.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# As many jobs at once as this machine has CPUs: on 2 cores, 8 at a time ran the first run ~10% slower.
CORES ?= $(shell nproc 2>/dev/null || echo 8)

.PHONY: run test browser imagemagick bench bench-train bench-pipeline report clean-venv

$(STAMP): envs/requirements.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -r envs/requirements.txt
	$(BIN)/python -m pip install --quiet --no-deps -e .
	# Bytecode for the package now: where PYTHONDONTWRITEBYTECODE is set, every job would compile it again.
	$(BIN)/python -m compileall -q workflow/img2kernel workflow/scripts >/dev/null
	touch $@

run: $(STAMP)
	$(BIN)/snakemake --cores $(CORES)

report: $(STAMP)
	$(BIN)/snakemake --cores $(CORES) results/report.html

# Tools some tests run, Debian's packages installed when missing and this is root on a
# Debian-like system: Chromium (the report's browser test) and ImageMagick (its resizes, a tool
# whose files the fit must explain); elsewhere those tests skip and say why.
browser:
	@command -v chromium >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 \
	  && (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium) >/dev/null 2>&1; } \
	  || echo "chromium not available: the report's browser test will skip"

imagemagick:
	@[ -x /usr/bin/convert ] || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 \
	  && (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq imagemagick) >/dev/null 2>&1; } \
	  || echo "ImageMagick not available: its resize tests will skip"

test: $(STAMP) browser imagemagick
	$(BIN)/python -m pytest

bench: $(STAMP)
	$(BIN)/img2kernel bench

clean-venv:
	rm -rf $(VENV)

# First run, no-op rerun, per-stage start-up and work, 15x15 and 31x31 kernels (docs/benchmarks.md).
bench-pipeline: $(STAMP)
	$(BIN)/img2kernel bench pipeline

bench-train: run
	$(BIN)/img2kernel bench train
