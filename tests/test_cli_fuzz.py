"""Every command and option of the CLI given hostile values (harness.cli_fuzz): exit status 0-3, no
traceback, one `Error:` line on failure. A seeded sample in `make test`, every case in `make
reliability` (docs/RELIABILITY.md has the counts)."""

import collections

import pytest

from harness import cli_fuzz, trials


@pytest.mark.trials
def test_hostile_option_values_end_in_one_line_or_a_result(tmp_path_factory):
    space = cli_fuzz.prepare(tmp_path_factory.mktemp("cli-fuzz"))
    n = trials.counts()["cli_cases"]
    outcomes = cli_fuzz.run(space, n=n, seed=0, limit=60)
    assert len(outcomes) == (n or len(cli_fuzz.cases(space)))
    broken = cli_fuzz.broken(outcomes)
    assert not broken, "\n".join(f"{o.command} {o.option} {o.argv}: {o.verdict} (exit {o.code}) {o.detail}"
                                 for o in broken)
    verdicts = collections.Counter(o.verdict for o in outcomes)
    assert verdicts["error"] > verdicts["ok"] > 0  # hostile values mostly fail, some are valid and run


def test_every_command_but_the_demo_is_fuzzed(tmp_path):
    import cli
    space = cli_fuzz.Workspace(tmp_path, *(tmp_path / n for n in ("d", "m.keras", "c.h5")), (tmp_path / "s0.h5",),
                               *(tmp_path / n for n in ("r", "b", "i.jpg", "f.txt", "full")))
    commands = {command for command, _, _ in cli_fuzz.cases(space)}
    assert commands == set(cli.main.commands) - {"demo"}
    options = {(command, param.name) for command, param, _ in cli_fuzz.cases(space)}
    assert ("sweep", "grid") in options and ("predict", "images") in options and ("embed", "max_pixels") in options
    labelled = {(command, param.name) for command, param, argv in cli_fuzz.cases(space) if argv[-1].endswith("case.csv")}
    assert {("train-heads", "label_files"), ("info", "label_files"), ("audit", "partition_file")} <= labelled
    assert any("tail_lr=1e-3,1e-4" in argv for command, _, argv in cli_fuzz.cases(space) if command == "sweep")
