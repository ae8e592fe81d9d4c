# One command sets everything up and runs the offline demo; one runs the tests.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
WORKDIR ?= demo-output

.PHONY: setup demo docs test reliability reliability-report bench bench-quick browser screenshot clean

setup: $(VENV)/.installed

$(VENV)/.installed: setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test,ray,docs]'
	touch $@

demo: setup
	$(BIN)/python cli.py demo --workdir $(WORKDIR)

# The suite people run before every commit: every code path, a few kills and fuzz cases
# (harness.trials), on every core (pytest-xdist; a module's tests stay on one worker).
test: setup
	$(BIN)/python -m pytest -q -n auto --dist loadfile --no-loadscope-reorder

# The long trials: the `trials` tests at full count (20 kills, 1,100 fuzz cases, every real image)
# and the `reliability` tests (a Ray run killed mid-run).
reliability: setup
	CELEBA_HEADS_TRIALS=full $(BIN)/python -m pytest -q -n auto --dist loadfile --no-loadscope-reorder -m "trials or reliability"

# Every fault-injection case at full count again, tabulated: rewrites docs/RELIABILITY.md.
reliability-report: setup
	$(BIN)/python -m bench.reliability

bench: setup
	$(BIN)/python -m bench

# Every benchmark group at shrunk sizes: the scripts run (the figures mean nothing).
bench-quick: setup
	$(BIN)/python -m bench --quick

# Debian's Chromium, for the test that renders the HTML report (skipped, saying why, without it)
browser:
	command -v chromium >/dev/null || (apt-get update -qq && apt-get install -y -qq chromium >/dev/null)

screenshot: demo browser
	$(BIN)/python -m bench.screenshot

clean:
	rm -rf $(WORKDIR) .pytest_cache .hypothesis

# The documentation site, built strictly (a broken link, anchor or API reference fails) into site/.
docs: setup
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict
