# The README's two commands: `make run` and `make test`. Each sets up what it needs first.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# As many jobs at once as this machine has CPUs: on 2 cores, 8 at a time ran the first run ~10% slower.
CORES ?= $(shell nproc 2>/dev/null || echo 8)

.PHONY: run test tools bench bench-train bench-pipeline report clean-venv

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
# whose files the fit must explain); elsewhere those tests skip and say why. Each is
# package:program (/usr/bin/convert: a `convert` elsewhere on the PATH may be no ImageMagick).
TOOLS := chromium:/usr/bin/chromium imagemagick:/usr/bin/convert

tools:
	@for tool in $(TOOLS); do package=$${tool%%:*}; program=$${tool#*:}; \
	  [ -x "$$program" ] || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 \
	       && (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$package) >/dev/null 2>&1; } \
	  || echo "$$package not available: the tests that run it will skip"; done

test: $(STAMP) tools
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
