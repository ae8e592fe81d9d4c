"""Benchmarks with targets: `python -m bench` (or `make bench`), `--quick` for a smoke run."""
