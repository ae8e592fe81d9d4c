# One command sets everything up and runs the offline demo; one runs the tests.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
WORKDIR ?= demo-output

.PHONY: setup demo test bench reliability clean

setup: $(VENV)/.installed

$(VENV)/.installed: setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test,ray]'
	touch $@

demo: setup
	$(BIN)/python cli.py demo --workdir $(WORKDIR)

test: setup
	$(BIN)/python -m pytest -q

bench: setup
	$(BIN)/python -m bench

reliability: setup
	$(BIN)/python -m bench.reliability

clean:
	rm -rf $(WORKDIR) .pytest_cache .hypothesis
