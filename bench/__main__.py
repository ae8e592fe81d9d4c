"""Run the benchmark groups (`bench.groups`, one module each), print a table, rewrite bench/RESULTS.md.

Figures are ratios or times measured inside one run (this machine is shared and noisy). `--quick`
shrinks every size so a smoke run takes a minute; its numbers mean nothing. `--only` runs some
groups and keeps the other groups' rows of the results file, found by their group column.
"""

import dataclasses
import datetime
import faulthandler
import os
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import click

from bench.common import ROOT, Context, machine
from bench.groups import load

HEADER = "| group | measure | value | unit | target | result | note |"


def table_lines(rows):
    """The results table's rows, one per Row."""
    lines = []
    for r in rows:
        result = "" if r.passed is None else ("PASS" if r.passed else "MISS")
        lines.append(f"| {r.group} | {r.name} | {r.value} | {r.unit} | {r.target} | {result} | {r.note} |")
    return lines


def kept_rows(previous, groups_run):
    """The rows of a previous results file's table (above its notes) whose group was not run this time."""
    table = previous.split("## Notes")[0]
    rows = [line for line in table.splitlines() if line.startswith("| ") and line != HEADER]
    return [line for line in rows if line.split(" | ")[0][2:] not in groups_run]


def render(lines, command, quick, kept=(), kept_from=""):
    """The results file's table: this run's rows, then rows kept from the previous file."""
    text = [f"# Benchmark results{' (quick smoke run: sizes shrunk, figures meaningless)' if quick else ''}", "",
            f"- date: {datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds')}",
            f"- machine: {machine()}", f"- command: `{command}`"]
    if kept:
        text.append(f"- rows of the groups not run by this command are kept from the previous run ({kept_from})")
    text += ["", HEADER, "|---|---|---|---|---|---|---|"]
    return "\n".join(text + list(lines) + list(kept)) + "\n"


@click.command()
@click.option("--quick", is_flag=True, help="Tiny sizes: checks the scripts run, measures nothing.")
@click.option("--results", type=click.Path(dir_okay=False),
              help="Markdown file to write (default bench/RESULTS.md for a full run, none for --quick).")
@click.option("--only", multiple=True, help="Run only these groups (repeat); the results file keeps the other "
                                            "groups' rows from its last run.")
@click.option("--list", "list_groups", is_flag=True, help="List the groups and exit.")
def main(quick, results, only, list_groups):
    """Benchmark the embed pipeline, head training, baselines, cache I/O and sweeps against their targets."""
    # A crash in native code (one malloc abort in a bench-quick run, not reproduced since) prints
    # every thread's Python stack, naming the group and line.
    faulthandler.enable()
    groups = load()
    if list_groups:
        for name, function in groups.items():
            doc = sys.modules[function.__module__].__doc__.strip().splitlines()[0]
            click.echo(f"{name}: {doc.removeprefix(name + ': ')}")
        return
    unknown = [name for name in only if name not in groups]
    if unknown:
        raise click.BadParameter(f"{', '.join(unknown)}; groups: {', '.join(groups)}", param_hint="--only")
    chosen = [name for name in groups if not only or name in only]
    lines = []
    with tempfile.TemporaryDirectory() as workdir:
        context = Context(workdir, quick)
        for name in chosen:
            rows = [dataclasses.replace(row, group=name) for row in groups[name](context)]
            lines += table_lines(rows)
    target = results or (None if quick else ROOT / "bench" / "RESULTS.md")
    previous = Path(target).read_text() if target and Path(target).exists() else ""
    kept = kept_rows(previous, set(chosen))
    kept_from = "; ".join(line[2:] for line in previous.splitlines() if line.startswith(("- date:", "- command:")))
    text = render(lines, "python -m bench " + " ".join(sys.argv[1:]), quick, kept, kept_from)
    click.echo(text)
    if target:
        notes = previous[previous.index("## Notes"):] if "## Notes" in previous else ""
        Path(target).write_text(text + ("\n" + notes if notes else ""))


if __name__ == "__main__":
    main()
