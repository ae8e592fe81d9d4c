"""`report`: one self-contained static HTML page about runs (images inlined; no server, no network,
no JS framework).

The page holds: the leaderboard of every run (val and test accuracy per attribute and their mean;
sortable by clicking a column, a few lines of plain JS); per run, each attribute's val and test
metrics against the majority-class baseline, the run's plots, its per-group tables when it has
them, and per attribute a gallery of its most confident errors on the chosen split (thumbnail, id,
true label, predicted probability), the images read from the folder the cache records (or
`images`). When the images cannot be read, the page says so in place of the gallery. The page is
written to a temporary name and renamed when complete.
"""

import base64
import html
import os
from pathlib import Path

from cache.errors import UserError
from cache.units import counted
from heads.defaults import REPORT
from heads.look.tables import epochs_line
from heads.look.thumbnails import image_folder, png, thumbnail
from heads.metrics import BY_NAME
from heads.run.compare import find_runs, leaderboard
from heads.run.evaluate import split_predictions
from heads.run.rundir import Run
from heads.run.scoring import confident_errors

PLOTS = ("accuracy_vs_majority.png", "reliability.png", "loss.png", "accuracy.png")
THUMBNAIL = REPORT["thumbnail"]
# the per-run table: (split, metric) columns
RUN_COLUMNS = (("val", "accuracy"), ("test", "accuracy"), ("test", "majority_accuracy"),
               ("test", "balanced_accuracy"), ("test", "roc_auc"), ("test", "ece"), ("test", "threshold"))
STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em; color: #222; max-width: 1200px; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: right; }
th { background: #f0f0f0; cursor: pointer; }
td:first-child, th:first-child { text-align: left; }
.gallery { display: flex; flex-wrap: wrap; gap: 0.5em; margin-bottom: 1.5em; }
figure { margin: 0; width: 104px; font-size: 11px; text-align: center; }
figure img, figure .thumb { width: 96px; height: 96px; display: block; margin: 0 auto; }
figure .thumb { background-size: cover; }
.plots img { max-width: 380px; margin-right: 0.5em; }
.note { background: #fff4d6; padding: 0.5em; border-left: 4px solid #e0a800; }
"""
SORT_JS = """
document.querySelectorAll("table.sortable th").forEach(function (th, column) {
  th.addEventListener("click", function () {
    var body = th.closest("table").tBodies[0];
    var rows = Array.from(body.rows);
    var descending = th.dataset.order !== "desc";
    th.dataset.order = descending ? "desc" : "asc";
    rows.sort(function (a, b) {
      var x = a.cells[column].dataset.value, y = b.cells[column].dataset.value;
      var order = isNaN(x) || isNaN(y) ? x.localeCompare(y) : Number(x) - Number(y);
      return descending ? -order : order;
    });
    rows.forEach(function (row) { body.appendChild(row); });
  });
});
"""


def percent(value):
    return "–" if value is None else f"{100 * value:.2f}"


def cell(value, text=None):
    data = "" if value is None else value
    return f'<td data-value="{html.escape(str(data))}">{html.escape(text if text is not None else str(value))}</td>'


def data_uri(png_bytes):
    return "data:image/png;base64," + base64.b64encode(png_bytes).decode()


def _leaderboard(runs):
    """Val and test accuracy per attribute and their means, one row per run in the given order
    (`heads.run.compare.leaderboard`); sortable."""
    boards = {split: leaderboard([run.path for run in runs], split, ["accuracy"], ranked=False)
              for split in ("val", "test")}
    attributes = list(dict.fromkeys(a for run in runs for a in run.attributes))
    head = "".join(f"<th>{html.escape(a)} {s}</th>" for a in attributes for s in ("val", "test"))
    lines = [f'<table class="sortable" id="leaderboard"><thead><tr><th>run</th><th>head</th>{head}'
             "<th>mean val</th><th>mean test</th></tr></thead><tbody>"]
    for run in runs:
        cells = [cell(str(run.path)), cell(run.head_name)]
        for key in [(a, split) for a in attributes for split in ("val", "test")] + [("mean", "val"), ("mean", "test")]:
            board = boards[key[1]]
            value = board.at[str(run.path), (key[0], "accuracy")] if (key[0], "accuracy") in board.columns else None
            value = None if value is None or value != value else float(value)  # NaN: the run lacks it
            cells.append(cell(value, percent(value)))
        lines.append("<tr>" + "".join(cells) + "</tr>")
    lines.append("</tbody></table>")
    return "\n".join(lines)


def _metrics_table(run):
    headers = "".join(f"<th>{split} {html.escape(BY_NAME[m].label)}</th>" for split, m in RUN_COLUMNS)
    rows = [f'<table class="metrics"><thead><tr><th>attribute</th>{headers}</tr></thead><tbody>']
    for name, by_split in run.metrics["attributes"].items():
        cells = [cell(name)]
        for split, m in RUN_COLUMNS:
            value = by_split.get(split, {}).get(m)
            metric = BY_NAME[m]
            cells.append(cell(value, "–" if value is None else f"{100 * value:.2f}" if metric.form == "percent"
                               else metric.format(value)))
        rows.append("<tr>" + "".join(cells) + "</tr>")
    rows.append("</tbody></table>")
    return "\n".join(rows)


def _group_tables(run):
    section = run.metrics.get("groups")
    if not section:
        return ""
    parts = [f"<h3>Per group (by {html.escape(', '.join(section['by']))})</h3>"]
    for name, by_split in section["attributes"].items():
        for split, result in by_split.items():
            keys = [k for k in result["groups"][0] if k not in ("n", "accuracy", "positive_rate")]
            parts.append(f'<table class="groups"><caption>{html.escape(name)}, {split}: worst-group accuracy '
                         f'{percent(result["worst_group_accuracy"])} %</caption><thead><tr>'
                         + "".join(f"<th>{html.escape(k)}</th>" for k in keys) + "<th>n</th><th>accuracy</th></tr></thead><tbody>")
            for group in result["groups"]:
                parts.append("<tr>" + "".join(cell(group[k]) for k in keys) + cell(group["n"])
                             + cell(group["accuracy"], percent(group["accuracy"])) + "</tr>")
            parts.append("</tbody></table>")
    return "\n".join(parts)


def _plots(run):
    if run.metrics["run"].get("plots") is False:
        return '<p class="note">No pictures: the run was trained with --no-plots.</p>'
    images = [f'<img alt="{name}" src="{data_uri((run.path / name).read_bytes())}">'
              for name in PLOTS if (run.path / name).is_file()]
    return f'<div class="plots">{"".join(images)}</div>' if images else ""


def _gallery(run, split, n_errors, images, thumbnails, labels=(), partition=None):
    """Per attribute, the n most confident errors on `split` (largest |p - threshold|), judged by the
    run's labels (with `labels` applied after them, `partition` instead of its own)."""
    try:
        run, task, paths, probabilities = split_predictions(run.path, split, labels=labels, partition=partition)
    except UserError as exc:
        return f'<p class="note">No gallery: {html.escape(str(exc))}</p>'
    folder, why = image_folder(paths[0], images)
    if folder is None:
        return f'<p class="note">No gallery: {html.escape(why)}</p>'
    data = getattr(task, split)
    parts = []
    for j, name in enumerate(task.attributes):
        wrong, worst = confident_errors(data.labels[:, j], probabilities[:, j], run.thresholds[j], n_errors)
        parts.append(f"<h4>{html.escape(name)}: no errors on {split}</h4>" if not len(wrong) else
                     f"<h4>{html.escape(name)}: {len(wrong)} errors on {split}, the {len(worst)} most confident</h4>")
        figures, unreadable = [], 0
        for row in worst:
            image_id = data.image_ids[row]
            if thumbnail_uri(folder, image_id, thumbnails) is None:
                unreadable += 1
                continue
            figures.append(f'<figure><div class="thumb {thumbnails[image_id][0]}" role="img" '
                           f'aria-label="{html.escape(image_id)}"></div>'
                           f"<figcaption>{html.escape(image_id)}<br>true {int(data.labels[row, j])}, "
                           f"p = {probabilities[row, j]:.3f}</figcaption></figure>")
        if unreadable:
            parts.append(f'<p class="note">{counted(unreadable, "image")} could not be read from '
                         f'{html.escape(str(folder))}.</p>')
        parts.append(f'<div class="gallery">{"".join(figures)}</div>')
    return "\n".join(parts)


def thumbnail_uri(folder, image_id, thumbnails):
    """(CSS class, PNG data URI) of image_id's thumbnail (None if unreadable), made once per page:
    `thumbnails` maps ids to them, and the page holds each URI once (`thumbnail_style`), however
    many galleries show the image."""
    if image_id not in thumbnails:
        picture = thumbnail(folder / image_id, THUMBNAIL)
        thumbnails[image_id] = None if picture is None else (f"t{len(thumbnails)}", data_uri(png(picture)))
    return thumbnails[image_id]


def thumbnail_style(thumbnails):
    """One CSS rule per thumbnail shown: its class's background is its data URI."""
    rules = [f".{name}{{background-image:url({uri})}}" for name, uri in filter(None, thumbnails.values())]
    return f"<style>{''.join(rules)}</style>" if rules else ""


def build_report(paths, out, *, split=REPORT["split"], n_errors=REPORT["errors"], images=None, labels=(),
                 partition=None):
    """Write the report page for the runs among `paths` (run or sweep directories) to `out`;
    returns the number of runs. labels, partition: the galleries judge errors by these labels files
    (applied after each run's own) and this split (`heads.run.overlay`); the leaderboard and tables
    are the runs' own scores."""
    runs = [Run(path) for path in find_runs(paths)]
    for run in runs:
        run.check_files()
        run.label_files()
    thumbnails = {}
    other = ", ".join(Path(p).name for p in (*labels, *([partition] if partition else ())))
    note = f" Galleries judged by {html.escape(other)}, applied after each run's own labels." if other else ""
    body = [f"<h1>celeba-heads report</h1><p>{counted(len(runs), 'run')}; galleries on the {split} split.{note}</p>",
            "<h2>Leaderboard</h2>", _leaderboard(runs)]
    for run in runs:
        epochs = epochs_line(run.metrics)
        body += [f"<h2>{html.escape(str(run.path))} <small>({html.escape(run.kind)})</small></h2>",
                 f"<p>{html.escape(epochs)}</p>" if epochs else "", _metrics_table(run),
                 _plots(run), _group_tables(run), f"<h3>Most confident errors ({split})</h3>",
                 _gallery(run, split, n_errors, images, thumbnails, labels, partition)]
    write_page(out, "celeba-heads report", body + [thumbnail_style(thumbnails)])
    return len(runs)


def write_page(out, title, body):
    """Write the page of `body` (HTML parts) with the report's style and sorting script to `out`,
    through a temporary name."""
    page = (f"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{html.escape(title)}</title>"
            f"<style>{STYLE}</style></head><body>\n" + "\n".join(body) + f"\n<script>{SORT_JS}</script></body></html>\n")
    out = Path(out)
    tmp = out.with_name(f".{out.name}.tmp")
    tmp.write_text(page)
    os.replace(tmp, out)
