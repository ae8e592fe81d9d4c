"""The Python API (`cache`, `embed`, `heads`'s public names): importable without TensorFlow,
documented, and the same workflow as the command line, returning DataFrames and figures. The
quickstart notebook that uses them runs top to bottom in `make reliability`."""

import importlib
import json
import re
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

import cli
from tests.conftest import ROOT

PACKAGES = ("cache", "embed", "heads")


def test_the_packages_import_without_tensorflow_and_name_only_what_they_define():
    """`import heads` stays instant (cli.py --help never starts TensorFlow); each public name
    resolves, on first use, to the object its module defines, with a docstring."""
    code = "import sys, cache, embed, heads; print('tensorflow' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout == "False\n"
    for package in PACKAGES:
        module = importlib.import_module(package)
        assert module.__all__ == list(module.PUBLIC) and set(module.__all__) <= set(dir(module))
        for name, where in module.PUBLIC.items():
            value = getattr(module, name)
            assert value is getattr(importlib.import_module(where), name) and value.__doc__, f"{package}.{name}"
        with pytest.raises(AttributeError, match="has no attribute 'nothing'"):
            module.nothing


def test_the_api_reference_documents_every_public_name_and_nothing_else():
    documented = re.findall(r"^::: ([\w.]+)$", (ROOT / "docs/reference/api.md").read_text(), re.M)
    public = [f"{where}.{name}" for package in PACKAGES
              for name, where in importlib.import_module(package).PUBLIC.items()]
    assert documented == public


@pytest.fixture(scope="module")
def workflow(sample_dir, grayscale_h5_model, tmp_path_factory):
    """A cache embedded through `embed.embed_images`, a default head and two baselines trained on
    it through `heads`, and the same cache embedded by `cli.py embed` for comparison."""
    from embed import BackboneSpec, EmbedSpec, embed_images
    from heads import TaskSpec, run_kinds, train_head
    root = tmp_path_factory.mktemp("api")
    backbone = BackboneSpec(model=str(grayscale_h5_model), layer="embedding", value_range=(-1, 1))
    summary = embed_images(root / "api.h5", backbone, data_dir=sample_dir, run=EmbedSpec(batch_size=16))
    by_cli = CliRunner().invoke(cli.main, ["embed", "--data-dir", str(sample_dir), "--out", str(root / "cli.h5"),
                                           "--model", str(grayscale_h5_model), "--layer", "embedding",
                                           "--value-range=-1,1", "--batch-size", "16"])
    assert by_cli.exit_code == 0, by_cli.output
    task = TaskSpec(str(root / "api.h5"), attributes="Male,Smiling,Young", features="standardize")
    head = train_head(task, root / "runs/head", epochs=5, seed=0)
    kinds = run_kinds(task, root / "runs/base", ["majority", "logreg"], C=0.5)
    return {"root": root, "summary": summary, "head": head, "kinds": kinds}


def test_embed_images_writes_the_cache_cli_embed_writes(workflow):
    """Same computation, same machine: the features bit for bit, the ids, labels and split exact."""
    from cache import cache_info, load_split
    assert workflow["summary"].rows_ok == 40 and workflow["summary"].rows_failed == 0
    assert cache_info(workflow["root"] / "api.h5")["rows"] == {"ok": 40, "failed": 0, "not_done": 0}
    for split in ("train", "val", "test"):
        mine, theirs = (load_split(workflow["root"] / name, split) for name in ("api.h5", "cli.h5"))
        assert np.array_equal(mine.features, theirs.features) and np.array_equal(mine.labels, theirs.labels)
        assert list(mine.image_ids) == list(theirs.image_ids)


def test_train_head_and_run_kinds_return_the_metrics_their_runs_record(workflow):
    head, kinds, root = workflow["head"], workflow["kinds"], workflow["root"]
    assert head.index.names == ["attribute", "split"] and set(head.index) == {
        (a, s) for a in ("Male", "Smiling", "Young") for s in ("val", "test")}
    recorded = json.loads((root / "runs/head/metrics.json").read_text())["attributes"]
    assert head.loc[("Smiling", "test"), "accuracy"] == recorded["Smiling"]["test"]["accuracy"]
    assert kinds.index.names == ["kind", "attribute", "split"]
    assert set(kinds.index.get_level_values("kind")) == {"majority", "logreg"}
    logreg = json.loads((root / "runs/base/logreg/metrics.json").read_text())["attributes"]
    assert kinds.loc[("logreg", "Male", "val"), "roc_auc"] == logreg["Male"]["val"]["roc_auc"]
    assert (kinds.loc["majority"]["balanced_accuracy"] == 0.5).all()


def test_evaluate_and_compare_agree_with_the_command_line(workflow):
    from heads import compare, evaluate
    root = workflow["root"]
    scored = evaluate(root / "runs/head", "test")
    assert np.allclose(scored["accuracy"].to_numpy(), workflow["head"].xs("test", level="split")["accuracy"].to_numpy(),
                       atol=1e-6)
    board = compare([root / "runs/head", root / "runs/base"], split="test", metrics=["accuracy", "roc_auc"])
    assert isinstance(board, pd.DataFrame) and len(board) == 3 and board.columns[0] == ("head", "")
    means = board[("mean", "accuracy")].to_numpy()
    assert list(means) == sorted(means, reverse=True)
    printed = CliRunner().invoke(cli.main, ["compare", str(root / "runs/head"), str(root / "runs/base"),
                                            "--split", "test", "--metrics", "accuracy,roc_auc"])
    assert printed.exit_code == 0 and board.index[0] in printed.output


def test_worst_errors_are_wrong_decisions_most_confident_first_and_show_as_a_figure(workflow):
    from heads import image_grid, worst_errors
    errors = worst_errors(workflow["root"] / "runs/base/majority", split="test", n=3)
    assert list(errors.columns) == ["attribute", "image_id", "path", "label", "probability", "threshold"]
    assert len(errors) and (errors.label != (errors.probability >= errors.threshold)).all()
    for _, rows in errors.groupby("attribute"):
        confidence = (rows.probability - rows.threshold).abs().to_numpy()
        assert len(rows) <= 3 and list(confidence) == sorted(confidence, reverse=True)
    assert all(path.endswith(image_id) for path, image_id in zip(errors.path, errors.image_id))
    figure = image_grid(list(errors.path) + [str(workflow["root"] / "missing.jpg")], columns=4)
    titled = [axis.get_title() for axis in figure.axes if axis.get_title()]
    assert len(titled) == len(errors) + 1 and titled[-1] == "unreadable"
    assert sum(bool(axis.images) for axis in figure.axes) == len(errors)


def test_plot_history_draws_the_runs_curves_and_says_when_there_are_none(workflow):
    from cache import UserError
    from heads import plot_history
    loss, accuracy = plot_history(workflow["root"] / "runs/head")
    assert [len(line.get_xdata()) for line in loss.axes[0].get_lines()[:2]] == [5, 5]
    assert len(accuracy.axes[0].get_lines()) == 6  # train and val per attribute
    with pytest.raises(UserError, match="no history"):
        plot_history(workflow["root"] / "runs/base/logreg")


def test_predict_gives_a_row_per_image_with_each_attributes_probability_and_decision(workflow, sample_dir, tmp_path):
    from heads import predict
    images = sorted((sample_dir / "img_align_celeba").glob("*.jpg"))[:3]
    (tmp_path / "broken.jpg").write_bytes(b"not an image")
    table = predict(workflow["root"] / "runs/head", [*images, tmp_path / "broken.jpg"])
    assert list(table.image) == [str(p) for p in images] + [str(tmp_path / "broken.jpg")]
    assert list(table.ok) == [True, True, True, False] and table.error.iloc[-1]
    for name in ("Male", "Smiling", "Young"):
        known = table[table.ok]
        assert ((known[name] >= 0.5).astype(int) == known[f"{name} decision"]).all()


def test_the_quickstart_notebook_is_stored_without_outputs():
    import nbformat
    notebook = nbformat.read(ROOT / "examples/quickstart.ipynb", as_version=4)
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert code and all(cell.outputs == [] and cell.execution_count is None for cell in code)


@pytest.mark.reliability
def test_the_quickstart_notebook_runs_top_to_bottom(tmp_path, celeba_sample, face_cnns, monkeypatch):
    """examples/quickstart.ipynb executed by nbclient in the project's Python, in a fresh folder, on
    the shared sample and CNN: every cell runs, every figure renders, and the head it trains beats
    the majority class on Male."""
    import nbclient
    import nbformat
    monkeypatch.setenv("CELEBA_SAMPLE", str(celeba_sample))
    monkeypatch.setenv("CELEBA_MODELS", str(face_cnns))
    notebook = nbformat.read(ROOT / "examples/quickstart.ipynb", as_version=4)
    nbclient.NotebookClient(notebook, timeout=600, kernel_name="python3",
                            resources={"metadata": {"path": str(tmp_path)}}).execute()
    outputs = [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    assert sum("image/png" in o.get("data", {}) for o in outputs) == 3  # the curves, the errors, the photo
    head = json.loads((tmp_path / "quickstart-output/runs/head/metrics.json").read_text())["attributes"]["Male"]["test"]
    assert head["accuracy"] > head["majority_accuracy"] + 0.1
    assert (tmp_path / "quickstart-output/drawn/00000.jpg").is_file()


def test_the_site_builds_strictly_with_the_api_reference_from_the_docstrings(tmp_path):
    """`make docs` in a test: MkDocs with --strict (a broken link, anchor or reference fails), the
    API page rendering TaskSpec's and load_split's docstrings, the CLI page every command."""
    import html
    done = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
                          cwd=ROOT, capture_output=True, text=True, env={**__import__("os").environ,
                                                                           "NO_MKDOCS_2_WARNING": "1"})
    assert done.returncode == 0, done.stderr[-3000:]
    api = html.unescape(re.sub(r"<[^>]+>", "", (tmp_path / "site/reference/api/index.html").read_text()))
    from cache.reader import load_split
    from heads.run.task import TaskSpec
    for documented in (TaskSpec, load_split):
        first_line = " ".join(documented.__doc__.split("\n")[0].split())
        assert first_line in " ".join(api.split()), documented.__name__
    commands = (tmp_path / "site/reference/cli/index.html").read_text()
    assert all(f"python cli.py {name}" in commands for name in cli.main.commands)
    home = (tmp_path / "site/index.html").read_text()
    assert "Embed face images" in home and 'href="workflows/heads/"' in home
