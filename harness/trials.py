"""How many kills, fuzz cases and real images the tests marked `trials` use, and how the CLI's
processes start (harness.processes): a few in `make test`
(every kind of case, quickly), the full counts in `make reliability` (which sets
CELEBA_HEADS_TRIALS=full; .ci/run runs both). docs/RELIABILITY.md quotes the full counts."""

import os

FULL = {"kills": 20, "cache_cases": 700, "run_cases": 400, "truncations": 35, "real_images": 1987,
        "cli_cases": None,  # None: every case of harness.cli_fuzz
        "fresh_processes": True}  # harness.processes: a new interpreter per CLI process, as users start it
QUICK = {"kills": 3, "cache_cases": 60, "run_cases": 40, "truncations": 8, "real_images": 400, "cli_cases": 40,
         "fresh_processes": False}  # forked from an interpreter that imported TensorFlow once


def counts():
    """FULL when CELEBA_HEADS_TRIALS=full, else QUICK."""
    return FULL if os.environ.get("CELEBA_HEADS_TRIALS") == "full" else QUICK
