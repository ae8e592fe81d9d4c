# One command sets everything up and runs the offline demo; one runs the tests.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
WORKDIR ?= demo-output

.PHONY: setup demo test bench reliability browser screenshot clean

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

# Debian's Chromium, for the test that renders the HTML report (skipped, saying why, without it)
browser:
	command -v chromium >/dev/null || (apt-get update -qq && apt-get install -y -qq chromium >/dev/null)

screenshot: demo browser
	$(BIN)/python -m bench.screenshot

clean:
	rm -rf $(WORKDIR) .pytest_cache .hypothesis
