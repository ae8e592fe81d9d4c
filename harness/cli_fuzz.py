"""A fuzz harness for the command line: every command and every option of cli.py, one at a time,
given hostile values (0, negative, huge, NaN, empty, a wrong type, a missing path, a file where a
folder goes and the reverse, a non-empty folder, a non-ASCII name), in process (click's CliRunner)
on a small real workspace: a generated dataset, a tiny .keras backbone, its cache, shards, a
Keras run and baselines.

Each case starts from a valid invocation of its command (`base_args`) and changes one option. The
contract every case must keep (`check`): exit status 0, 1, 2 or 3; no traceback; and when it fails,
exactly one `Error:` line. Whether that line names the option or file is counted (`named`), not
required. A case still running after `limit` seconds (a valid value doing real work) is stopped and
counted as overtime. `demo` is left out: every valid value of its two options runs the whole demo,
which tests/test_heads.py runs. `serve` starts from a port this process holds (`busy_port`), so a
case that passes every check ends in "cannot listen" rather than a server that runs until stopped;
`--port 0` (any free port) would start one, and is left out (tests/test_serve.py starts servers).
"""

import contextlib
import random
import signal
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path

import click

NON_ASCII = "ñame-文件"
INTS = ["0", "-1", "1000000000000", "nan", "", "1.5", "x"]
FLOATS = ["0", "-1", "1e308", "nan", "inf", "", "x"]
STRINGS = ["", "0", "-1", "nan", ",", "x" * 300, NON_ASCII, "a,,b", "../../etc/passwd"]
LEFT_OUT = ("demo",)
STARTS_A_SERVER = {("serve", "port", "0")}  # (command, parameter, value): a valid case that would never end
_HELD = []
EXIT_CODES = (0, 1, 2, 3)


class Overtime(BaseException):
    """Raised in a case that runs past its time limit (not an Exception: no library code catches it)."""


@dataclass
class Workspace:
    root: Path
    data: Path
    model: Path
    cache: Path
    shards: tuple
    run: Path
    baselines: Path
    image: Path
    plain_file: Path
    full_folder: Path
    counter: list = field(default_factory=lambda: [0])

    def fresh(self, name):
        """A new path under the workspace, for a case's output."""
        self.counter[0] += 1
        return self.root / "out" / f"{self.counter[0]}" / name

    @property
    def label_files(self):
        """Labels and partition files as people's tools write them, and as they go wrong (LABEL_FILES)."""
        return [self.root / "labels" / name for name in LABEL_FILES]


# Label files a user's tools write (pandas' index column, a spreadsheet's semicolons and 1.0s) and
# their mistakes (a spreadsheet itself, a column in another case, ids without the extension or with
# a folder, a partition that empties val): each is read or refused in one line.
LABEL_FILES = {
    "pandas.csv": ",image_id,Male,Smiling\n0,000001.jpg,1.0,True\n1,000002.jpg,0.0,False\n2,000003.jpg,,True\n",
    "semicolon.csv": "image_id;Male\r\n000001.jpg;1\r\n000002.jpg;-1\r\n",
    "sheet.xlsx": "PK\x03\x04not really a spreadsheet",
    "case.csv": "image_id,male\n000001.jpg,1\n",
    "no_extension.csv": "image_id,Male\n000001,1\n000002,0\n",
    "folder.csv": "image_id,Male\nimg_align_celeba/000001.jpg,1\n",
    "all_train.csv": "image_id,partition\n" + "".join(f"{i:06d}.jpg,0\n" for i in range(1, 41)),
}
# Values a parameter takes beyond its type's hostile ones: --grid axes no variant uses.
EXTRA_VALUES = {("sweep", "grid"): ["tail_lr=1e-3,1e-4", "patience=3,5"]}


def invoke(*args):
    """(exit code, stdout, stderr, exception) of the CLI run in this process."""
    from click.testing import CliRunner

    import cli
    result = CliRunner().invoke(cli.main, [str(a) for a in args])
    exception = result.exception if not isinstance(result.exception, SystemExit) else None
    return result.exit_code, result.stdout, result.stderr, exception


def prepare(root):
    """The workspace, made once in `root` (reused when its record exists)."""
    from embed.sample import make_sample
    from harness.faults import prepare_model

    root = Path(root)
    space = Workspace(root, root / "data", root / "tiny.keras", root / "cache.h5", (root / "s0.h5", root / "s1.h5"),
                      root / "run", root / "baselines", root / "data" / "img_align_celeba" / "000001.jpg",
                      root / "plain.txt", root / "full")
    if (root / "ready").is_file():
        return space
    make_sample(space.data, n=40, seed=3)
    prepare_model(space.model)
    embed = ["embed", "--data-dir", space.data, "--model", space.model, "--value-range", "0,1", "--image-size", "32",
             "--batch-size", "16"]
    for args in ([*embed, "--out", space.cache],
                 [*embed, "--out", space.shards[0], "--shard", "0/2"], [*embed, "--out", space.shards[1], "--shard", "1/2"],
                 ["train-heads", space.cache, "--out", space.run, "--epochs", "1", "--attrs", "Male,Smiling"],
                 ["baselines", space.cache, "--out", space.baselines, "--models", "majority,logreg",
                  "--attrs", "Male,Smiling"]):
        code, _, stderr, exception = invoke(*args)
        if code != 0:
            raise RuntimeError(f"preparing the fuzz workspace: {args[0]} failed ({code}): {stderr[-800:]} {exception!r}")
    space.plain_file.write_text("not what any option wants\n")
    for path in space.label_files:
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(LABEL_FILES[path.name].encode("utf-8", "surrogateescape"))
    space.full_folder.mkdir()
    (space.full_folder / "mine.txt").write_text("a user's file\n")
    (root / "ready").write_text("")
    return space


def busy_port():
    """A loopback port this process listens on and never answers: `serve` there fails at once."""
    if not _HELD:
        _HELD.append(socket.create_server(("127.0.0.1", 0)))
    return _HELD[0].getsockname()[1]


def base_args(command, space):
    """A valid invocation of `command` on the workspace (its outputs fresh paths)."""
    s = space
    return {
        "embed": ["--data-dir", s.data, "--out", s.fresh("c.h5"), "--model", s.model, "--value-range", "0,1",
                  "--image-size", "32", "--batch-size", "16"],
        "merge": [*s.shards, "--out", s.fresh("m.h5")],
        "info": [s.cache],
        "train-heads": [s.cache, "--out", s.fresh("run"), "--epochs", "1", "--attrs", "Male"],
        "sweep": [s.cache, "--out", s.fresh("sweep"), "--grid", "lr=1e-3", "--grid", "epochs=1", "--attrs", "Male"],
        "baselines": [s.cache, "--out", s.fresh("base"), "--models", "majority", "--attrs", "Male"],
        "evaluate": [s.run],
        "compare": [s.run, s.baselines],
        "predict": ["--run", s.run, s.image],
        "export": ["--run", s.run, "--out", s.fresh("export")],
        "projector": [s.cache, "--out", s.fresh("projector"), "--n", "10"],
        "report": [s.run, "--out", s.fresh("r.html")],
        "audit": [s.cache, "--out", s.fresh("audit"), "--kind", "logreg", "--folds", "2", "--attrs", "Male",
                  "--no-duplicates"],
        "make-scenes": [s.image, "--out", s.fresh("scenes")],
        "make-sample": ["--out", s.fresh("sample"), "--n", "10"],
        "serve": ["--run", s.run, "--port", busy_port()],
    }[command]


def hostile_values(param, space, command=None):
    """The values tried for one parameter, by its click type (and EXTRA_VALUES; a labels or partition
    file's option also gets each of LABEL_FILES)."""
    kind = param.type
    if isinstance(param, click.Option) and param.is_flag:
        return [None]  # the flag given
    if isinstance(kind, click.Path):
        wrong_kind = space.plain_file if not kind.file_okay else space.full_folder
        files = space.label_files if param.name in ("label_files", "partition_file", "labels", "partition") else []
        return [space.root / "no" / "such" / NON_ASCII, wrong_kind, space.full_folder, "", space.root / NON_ASCII,
                *files]
    if (command, param.name) in EXTRA_VALUES:
        return STRINGS + EXTRA_VALUES[(command, param.name)]
    if isinstance(kind, (click.types.IntParamType, click.IntRange)):
        return INTS
    if isinstance(kind, (click.types.FloatParamType, click.FloatRange)):
        return FLOATS
    if isinstance(kind, click.Choice):
        return ["", "nope", NON_ASCII]
    return STRINGS


def cases(space):
    """Every (command, parameter name, argv) of the fuzz set, in a fixed order."""
    import cli
    found = []
    for name, command in sorted(cli.main.commands.items()):
        if name in LEFT_OUT:
            continue
        for param in command.params:
            if param.name in ("help",) or (isinstance(param, click.Option) and param.hidden):
                continue
            for value in hostile_values(param, space, name):  # each case its own fresh output paths
                if (name, param.name, value) in STARTS_A_SERVER:
                    continue
                found.append((name, param, _with([str(a) for a in base_args(name, space)], param, value)))
    return found


def _with(base, param, value):
    """base with param set to value: an argument replaces the positional values, an option replaces
    its value where base gives it, else is appended."""
    if isinstance(param, click.Argument):
        options, positional, i = [], [], 0
        while i < len(base):
            if base[i].startswith("--"):
                options.append(base[i])
                if i + 1 < len(base) and not base[i + 1].startswith("--"):
                    options.append(base[i + 1])
                    i += 1
            else:
                positional.append(base[i])
            i += 1
        return [str(value), *options]
    flag = param.opts[0]
    args = list(base)
    if value is None:
        return args + [flag]
    for i, arg in enumerate(args[:-1]):
        if arg in param.opts:
            args[i + 1] = str(value)
            return args
    return args + [flag, str(value)]


@dataclass
class Outcome:
    command: str
    option: str
    argv: list
    code: int
    seconds: float
    verdict: str  # "ok", "error", "overtime", or what broke the contract
    named: bool = True
    detail: str = ""


def check(command, param, argv, limit):
    """Run one case under a time limit and judge it against the contract (module docstring)."""
    def stop(signum, frame):
        raise Overtime()

    option = param.opts[0] if isinstance(param, click.Option) else param.human_readable_name
    began = time.perf_counter()
    previous = signal.signal(signal.SIGALRM, stop)
    signal.alarm(limit)
    try:
        code, stdout, stderr, exception = invoke(command, *argv)
    except Overtime:
        return Outcome(command, option, argv, -1, time.perf_counter() - began, "overtime")
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
    seconds = time.perf_counter() - began
    if isinstance(exception, Overtime):
        return Outcome(command, option, argv, -1, seconds, "overtime")
    output = stdout + stderr
    if exception is not None or "Traceback" in output:
        return Outcome(command, option, argv, code, seconds, "traceback", detail=repr(exception)[:300])
    if code not in EXIT_CODES:
        return Outcome(command, option, argv, code, seconds, f"exit {code}", detail=stderr[-300:])
    if code in (0, 3):
        return Outcome(command, option, argv, code, seconds, "ok")
    errors = [line for line in stderr.splitlines() if line.startswith("Error:")]
    if len(errors) != 1:
        return Outcome(command, option, argv, code, seconds, f"{len(errors)} Error: lines", detail=stderr[-300:])
    value = argv[argv.index(option) + 1] if option in argv and argv.index(option) + 1 < len(argv) else ""
    names = [*getattr(param, "opts", ()), param.human_readable_name, param.name]
    named = any(n and n in errors[0] for n in names) or bool(value and value in errors[0])
    return Outcome(command, option, argv, code, seconds, "error", named=named, detail=errors[0][:300])


def run(space, n=None, seed=0, limit=30):
    """Outcomes of every case, or of n drawn at random (seeded) from them."""
    chosen = cases(space)
    if n is not None and n < len(chosen):
        chosen = random.Random(seed).sample(chosen, n)
    with contextlib.chdir(space.root):  # a relative or empty path a command mishandles lands in the workspace
        return [check(command, param, argv, limit) for command, param, argv in chosen]


def broken(outcomes):
    """The outcomes that break the contract."""
    return [o for o in outcomes if o.verdict not in ("ok", "error", "overtime")]


def summary(outcomes, seconds):
    """Counts for docs/RELIABILITY.md: cases, commands, options, and each verdict."""
    return {"cases": len(outcomes), "commands": len({o.command for o in outcomes}),
            "options": len({(o.command, o.option) for o in outcomes}),
            "ok": sum(o.verdict == "ok" for o in outcomes), "errors": sum(o.verdict == "error" for o in outcomes),
            "unnamed": sum(o.verdict == "error" and not o.named for o in outcomes),
            "overtime": sum(o.verdict == "overtime" for o in outcomes), "broken": len(broken(outcomes)),
            "seconds": seconds}
