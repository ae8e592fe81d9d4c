"""The README and the docs stay true: every `python cli.py` command they show names a command and
options that exist, with a value where an option takes one (parsed by the command's own click
parser); every command of the README is one the docs show; and in `make reliability`, the docs'
command blocks run in order (the site's page order) on offline stand-ins for what a reader brings."""

import re
import shlex
from pathlib import Path

import click
import pytest
import tensorflow as tf
import yaml

import cli
from tests.conftest import ROOT


def doc_pages():
    """The docs' Markdown pages in the site's order (mkdocs.yml's nav), as paths relative to ROOT;
    the home page is README.md itself (docs/hooks/readme_home.py), so it is left out."""
    def walk(items):
        for item in items:
            for value in item.values():
                yield from walk(value) if isinstance(value, list) else [value]
    nav = yaml.safe_load((ROOT / "mkdocs.yml").read_text())["nav"]
    return [f"docs/{page}" for page in walk(nav) if page.endswith(".md") and page != "index.md"]


def command_lines(page):
    """(line number, command text after `python cli.py `) of every command line in a page's code
    blocks, a line ending in \\ joined with the next."""
    text = (ROOT / page).read_text()
    lines, pending = [], None
    for number, line in enumerate(text.splitlines(), 1):  # a line ending in \ continues on the next
        if pending:
            line = pending[1] + " " + line.strip()
            number = pending[0]
        pending = (number, line[:-1]) if line.endswith("\\") else None
        if not pending:
            lines.append((number, line))
    found, inside = [], False
    for number, line in lines:
        if line.startswith("```"):
            inside = not inside
            continue
        match = re.match(r"\s*python cli\.py (.*)", line) if inside else None
        if match:
            found.append((number, match.group(1)))
    return found


def documented_commands():
    """(page:line, argv after `python cli.py`) of every command line in the README and the docs."""
    return [(f"{page}:{number}", shlex.split(text, comments=True))
            for page in ["README.md", *doc_pages()] for number, text in command_lines(page)]


def test_the_docs_show_commands():
    commands = {argv[0] for _, argv in documented_commands()}
    assert len(documented_commands()) > 40 and {"embed", "train-heads", "baselines", "sweep", "audit", "predict",
                                                 "serve", "export"} <= commands


def test_every_readme_command_is_one_the_docs_run():
    """The README's tour is a digest: each of its command lines stands in a docs page, so the
    docs' run in `make reliability` runs it too."""
    def argv(text):
        return shlex.split(text, comments=True)
    in_docs = {tuple(argv(text)) for page in doc_pages() for _, text in command_lines(page)}
    missing = [f"README.md:{n}: {text}" for n, text in command_lines("README.md") if tuple(argv(text)) not in in_docs]
    assert command_lines("README.md") and missing == []


@pytest.mark.parametrize("where, argv", documented_commands(), ids=lambda v: v if isinstance(v, str) else None)
def test_every_documented_command_parses(where, argv):
    assert argv[0] in cli.main.commands, f"{where}: no command {argv[0]!r}"
    command = cli.main.commands[argv[0]]
    parser = command.make_parser(click.Context(command, info_name=argv[0]))  # parses; converts nothing
    options, arguments, _ = parser.parse_args(args=list(argv[1:]))
    required = [p for p in command.params if getattr(p, "required", False) and p.name not in options]
    assert not required, f"{where}: {' '.join(argv)} lacks {[p.name for p in required]}"


def test_a_wrong_option_is_caught():
    command = cli.main.commands["sweep"]
    with pytest.raises(click.NoSuchOption):
        command.make_parser(click.Context(command, info_name="sweep")).parse_args(args=["c.h5", "--epochs", "3"])


# What the docs' reader brings, and what the workflow test gives instead: (docs text, stand-in
# text, why). Every entry must match the docs, so a changed page fails here until this is redone.
STAND_INS = (
    ("source .venv/bin/activate", ":", "the test runs with the project's own Python first on PATH"),
    ("python -c \"import tensorflow_hub as hub; print(hub.resolve(", ": \"(", "a download; hub-stand-in is the fetched folder"),
    ("python cli.py embed --data-dir ~/data/celeba --out celeba-effv2b0.h5\n",
     "python cli.py embed --data-dir ~/data/celeba --out celeba-effv2b0.h5 --model hub-stand-in --image-size 64\n",
     "the default model is TF-Hub's, downloaded once; a SavedModel of the same convention stands in"),
    ("--model /path/to/that/folder --image-size 224", "--model hub-stand-in --image-size 64", "the fetched folder"),
    ("~/data/celeba", "celeba", "CelebA itself: a generated sample in its layout"),
    ("--weights imagenet", "--weights none", "ImageNet weights are a download"),
    ("--n 2000", "--n 400", "size only"),
    ("--n 6000 --spurious", "--n 2000 --spurious", "size only: DFR balances groups on val, which needs rows in each"),
    ("--n 6000", "--n 400", "size only"),
    ("tensorboard --logdir", ": tensorboard --logdir", "a server that runs until stopped"),
    (" celeba.h5 ", " celeba-effv2b0.h5 ", "'a real cache': the one embedded above"),
    ("evaluate runs/plain", "evaluate runs/head", "'a saved head': the one trained above"),
    ("CELEBA=../shared/celeba-sample", "CELEBA=\"$SHARED/celeba-sample\"", "the shared sample, by absolute path"),
    ("../shared/models/", "$SHARED/models/", "the shared models, by absolute path"),
    ("$CELEBA/img_align_celeba/*.jpg", "$CELEBA/img_align_celeba/*0.jpg", "199 of the 1,987 photos, from every split: size only"),
)


def docs_script():
    """The docs' command blocks (those with a `python cli.py` line) and Python blocks (run by
    `python -`), page by page in the site's order, as one bash script with STAND_INS applied and
    `python cli.py` pointed at this checkout."""
    blocks = [(language, body) for page in doc_pages()
              for language, body in re.findall(r"^```(\w*)\n(.*?)^```", (ROOT / page).read_text(), re.S | re.M)]
    script = "\n".join(body if "python cli.py" in body else f"python - <<'PY'\n{body}PY"
                       for language, body in blocks if "python cli.py" in body or language == "python")
    for readme, stand_in, why in STAND_INS:
        assert readme in script, f"the docs no longer hold {readme!r} ({why}): update STAND_INS"
        script = script.replace(readme, stand_in)
    return script.replace("python cli.py", 'python "$ROOT/cli.py"')


class BlockMeans(tf.Module):
    """The TF-Hub stand-in: RGB in [0, 1] of any size in, its 4x4 block means out (768-d at 64 px)."""

    @tf.function(input_signature=[tf.TensorSpec([None, None, None, 3], tf.float32)])
    def __call__(self, images):
        pooled = tf.nn.avg_pool2d(images, 4, 4, "VALID")
        return tf.reshape(pooled, [tf.shape(images)[0], -1])


def prepare_workspace(space, celeba_sample):
    """What the reader has before the docs' commands: the data, a model folder, a builder, images,
    label files, a video, and a second cache for fusion."""
    import shutil

    import cv2
    from click.testing import CliRunner

    from embed.sample import make_sample
    from harness.caches import pixel_backbone
    make_sample(space / "celeba", n=400, seed=1)  # 320 train rows: pca-whiten:256 and knn-cosine's k of 200 need them
    tf.saved_model.save(BlockMeans(), str(space / "hub-stand-in"))
    images = space / "celeba" / "img_align_celeba"
    shutil.copy(images / "000001.jpg", space / "face1.jpg")
    cv2.imwrite(str(space / "face2.png"), cv2.imread(str(images / "000002.jpg")))
    shutil.copy(space / "celeba" / "list_attr_celeba.txt", space / "list_attr_celeba.txt")
    ids = [f"{i:06d}.jpg" for i in range(1, 401)]
    (space / "corrections.csv").write_text("image_id,Male,Smiling\n000001.jpg,1,\n000002.jpg,0,?\n000003.jpg,,1\n")
    (space / "glasses.csv").write_text("image_id,Eyeglasses\n" + "".join(f"{i},{k % 2}\n" for k, i in enumerate(ids)))
    (space / "my_split.csv").write_text("image_id,partition\n" + "".join(f"{i},{k % 3}\n" for k, i in enumerate(ids)))
    (space / "my_heads.py").write_text(
        "import keras\n\n\ndef build(n_features, attributes):\n    x = keras.Input((n_features,))\n"
        "    h = keras.layers.Dense(16, activation='relu')(x)\n"
        "    return keras.Model(x, {a: keras.layers.Dense(1, activation='sigmoid', name=a)(h) for a in attributes})\n")
    frame = cv2.resize(cv2.imread(str(next(iter(sorted((celeba_sample / "img_align_celeba").glob("*.jpg")))))), (178, 218))
    video = cv2.VideoWriter(str(space / "YOUR.mp4"), cv2.VideoWriter_fourcc(*"mp4v"), 5, (178, 218))
    for _ in range(5):
        video.write(frame)
    video.release()
    result = CliRunner().invoke(cli.main, ["embed", "--data-dir", str(space / "celeba"), "--out", str(space / "celeba-clip.h5"),
                                           "--model", str(pixel_backbone(space / "pixels-clip.keras")), "--layer",
                                           "embedding", "--image-size", "64", "--value-range", "0,1"])
    assert result.exit_code == 0, result.output


@pytest.mark.reliability
def test_the_docs_command_blocks_run_on_offline_stand_ins(tmp_path, celeba_sample, face_cnns):
    """Every command block of the docs that holds a `python cli.py` line, and every Python block,
    runs, in order, as a
    bash script in a fresh folder, each command exiting 0 (bash -e), with the stand-ins of
    STAND_INS for what a reader brings (CelebA, TF-Hub's model, hand-made label files, a video)."""
    import os
    import subprocess
    import sys
    space = tmp_path / "reader"
    space.mkdir()
    prepare_workspace(space, celeba_sample)
    script = tmp_path / "readme.sh"
    script.write_text("set -euo pipefail\n" + docs_script() + "\n")
    env = {**os.environ, "ROOT": str(ROOT), "SHARED": str(Path(celeba_sample).parent),
           "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}", "TF_CPP_MIN_LOG_LEVEL": "3"}
    done = subprocess.run(["bash", "-x", str(script)], cwd=space, env=env, capture_output=True, text=True, timeout=3000)
    trace = [line for line in done.stderr.splitlines() if line.startswith("+ ")]
    assert done.returncode == 0, f"exit {done.returncode} at {trace[-1] if trace else '?'}:\n{done.stderr[-3000:]}"
    for run in ("runs/head", "runs/tail", "runs/no-leak", "runs/corrected", "runs/photos"):
        assert (space / run / "metrics.json").is_file(), run
    assert (space / "annotated.mp4").is_file() and (space / "report.html").is_file()
