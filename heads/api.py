"""The Python API for notebooks and scripts: the command line's workflow as functions that return
data (pandas DataFrames for tables, matplotlib Figures for plots) and never print. Import the
names from `heads`; the modules below them may change.

Every function that trains writes the same run folder the command line writes, so a run made here
is evaluated, compared, reported, served or exported by `cli.py` too, and the other way round.
"""

import csv
from pathlib import Path

import pandas as pd

from heads.defaults import API, REPORT, RUN, SCORE
from heads.run.rundir import HISTORY, Run


def metrics_table(metrics):
    """DataFrame of a metrics dict (metrics.json, or what `evaluate_run` returns): one row per
    (attribute, split), one column per metric (accuracy, balanced_accuracy, f1, roc_auc, ...)."""
    rows = {(attribute, split): values for attribute, splits in metrics["attributes"].items()
            for split, values in splits.items()}
    table = pd.DataFrame.from_dict(rows, orient="index")
    table.index = pd.MultiIndex.from_tuples(table.index, names=["attribute", "split"])
    return table


def train_head(spec, out_dir, *, on_epoch=None, plots=RUN["plots"], **settings):
    """Train one Keras head (what `cli.py train-heads` does) on a `TaskSpec`'s caches into the run
    folder out_dir; returns its `metrics_table` (val and test). settings: the keras_head kind's
    (head="mlp:128", epochs="auto", lr, dropout, l2, batch_size, seed, ...; `heads.defaults.KERAS`
    has every default). on_epoch(record) after each epoch."""
    from heads.run.fit import train_heads
    return metrics_table(train_heads(spec, out_dir, on_epoch=on_epoch, plots=plots, **settings))


def run_kinds(spec, out_dir, kinds, *, plots=RUN["plots"], **settings):
    """Fit each head kind in `kinds` (names as `cli.py baselines --models` takes them: "logreg",
    "logreg-cv", "knn-cosine", "majority", "dfr", ...) on the same task into out_dir/<kind>/;
    returns one DataFrame, indexed (kind, attribute, split). settings go to the kinds that take
    them (C=0.5 to logreg, k to knn)."""
    from heads.run.fit import run_kinds as fit_kinds
    results = fit_kinds(spec, out_dir, kinds, plots=plots, **settings)
    return pd.concat({kind: metrics_table(metrics) for kind, metrics in results.items()}, names=["kind"])


def evaluate(run_dir, split=SCORE["evaluate_split"], **options):
    """A saved run scored again on `split` from its head and caches (what `cli.py evaluate` does):
    its `metrics_table`. options: caches (new paths if they moved), groups, labels, partition,
    drop_nonfinite, trust_model, as `heads.run.evaluate.evaluate_run` takes them."""
    from heads.run.evaluate import evaluate_run
    return metrics_table(evaluate_run(run_dir, split, **options))


def compare(runs, split=SCORE["compare_split"], metrics=SCORE["compare_metrics"], **options):
    """The leaderboard of run folders (or folders holding runs, such as a sweep's): one row per
    run, columns ("head", "") and (attribute, metric) and (mean, metric), best first by the mean of
    the first metric (what `cli.py compare` prints). options: groups, labels, partition."""
    from heads.run.compare import leaderboard
    return leaderboard([runs] if isinstance(runs, (str, Path)) else list(runs), split, tuple(metrics), **options)


def _attribute_columns(attributes):
    return {column: value for name, v in attributes.items()
            for column, value in ((name, v["probability"]), (f"{name} decision", v["decision"]))}


def predict(run_dir, images, *, faces=None, draw_dir=None, **options):
    """Predict image files with a run's head, through the backbone its cache records (what
    `cli.py predict` does). faces: "none" (the whole image, resized), "all" (every face found,
    aligned into CelebA's frame) or "best" (one face); None: what the run's cache was made from
    ("all" for a cache of aligned photos, `embed --align`, else "none"). draw_dir: with faces, also
    write each photo with its faces drawn there. options: batch_size, trust_model; with faces also
    min_face, min_score, mirror_score, refine.
    Returns a DataFrame, one row per image ("none") or per face found (a photo without a face is
    one row with ok False): columns image, face (1, 2, ... in the order of the run's face rule, main by default; absent for "none"),
    ok, error, score and box [x, y, w, h] (faces), then per attribute its probability (column
    named after it) and its 0/1 decision ("<attribute> decision"). Unreadable images are rows with
    their error, not exceptions."""
    from heads.serve.predict import default_face_mode, predict_faces, predict_images

    images = [str(i) for i in ([images] if isinstance(images, (str, Path)) else images)]
    faces = faces or default_face_mode(run_dir)
    if faces == "none":
        return pd.DataFrame([{"image": e["image"], "ok": e["ok"], "error": e["error"],
                              **_attribute_columns(e["attributes"] or {})} for e in
                             predict_images(run_dir, images, **options)])
    rows = []
    for entry in predict_faces(run_dir, images, faces=faces, draw_dir=draw_dir, **options):
        if not entry["faces"]:
            rows.append({"image": entry["image"], "face": None, "ok": False, "error": entry["error"]})
        for number, face in enumerate(entry["faces"], 1):
            rows.append({"image": entry["image"], "face": number, "ok": True, "error": None,
                         "score": face["score"], "box": face["box"], **_attribute_columns(face["attributes"])})
    return pd.DataFrame(rows)


def worst_errors(run_dir, split=REPORT["split"], n=API["errors"], attributes=None, images=None):
    """The run's most confident errors on `split`, per attribute (what the report's galleries
    show): the n rows whose decision is wrong with the largest |probability - threshold|. Returns a
    DataFrame with columns attribute, image_id, path (the image file, from the folder the cache
    records, or `images` if it moved; None when unknown), label, probability, threshold; most
    confident first within each attribute. attributes: a subset of the run's (default all)."""
    from heads.look.thumbnails import image_folder
    from heads.run.evaluate import split_predictions
    from heads.run.scoring import confident_errors

    run, task, paths, probabilities = split_predictions(run_dir, split)
    folder, _ = image_folder(paths[0], images)
    data, rows = task.split(split), []
    for j, name in enumerate(task.attributes):
        if attributes and name not in attributes:
            continue
        _, worst = confident_errors(data.labels[:, j], probabilities[:, j], run.thresholds[j], n)
        rows += [{"attribute": name, "image_id": data.image_ids[row],
                  "path": None if folder is None else str(folder / data.image_ids[row]),
                  "label": int(data.labels[row, j]), "probability": float(probabilities[row, j]),
                  "threshold": run.thresholds[j]} for row in worst]
    return pd.DataFrame(rows, columns=["attribute", "image_id", "path", "label", "probability", "threshold"])


def image_grid(paths, captions=None, columns=API["columns"], size=REPORT["thumbnail"]):
    """A matplotlib Figure of the images at `paths` (each its central square, `size` pixels), in
    rows of `columns`, each titled by its caption; an unreadable file shows as an empty panel
    titled "unreadable". For a `worst_errors` table: image_grid(t.path, captions=...)."""
    from matplotlib.figure import Figure

    from heads.look.thumbnails import thumbnail

    paths = list(paths)
    captions = list(captions) if captions is not None else [Path(p).name for p in paths]
    rows = max(1, -(-len(paths) // columns))
    figure = Figure(figsize=(1.6 * columns, 1.9 * rows))
    for k, axis in enumerate(figure.subplots(rows, columns, squeeze=False).flat):
        axis.set_axis_off()
        if k >= len(paths):
            continue
        picture = None if paths[k] is None else thumbnail(paths[k], size)
        if picture is not None:
            axis.imshow(picture)
        axis.set_title(captions[k] if picture is not None else "unreadable", fontsize=8)
    figure.tight_layout()
    return figure


def plot_history(run_dir):
    """(loss figure, accuracy figure): a run's train and val curves per epoch from its
    history.csv, the epoch whose weights it kept marked (the pictures the run saved as loss.png
    and accuracy.png). Kinds not trained in epochs (scikit-learn baselines) have no history: a
    UserError says so."""
    from cache.errors import UserError
    from heads.look.plots import history_figures

    run = Run(run_dir)
    path = run.path / HISTORY
    if not path.is_file():
        raise UserError(f"{path}: no history (a {run.kind} run is not trained in epochs)")
    with open(path, newline="") as f:
        history = [{key: float(value) if key != "epoch" else int(value) for key, value in row.items()}
                   for row in csv.DictReader(f)]
    best = next((h["epoch"] for h in history if h.get("best") == 1), None)
    return history_figures(history, run.attributes, best)
