"""audit.html: one self-contained page of an audit folder (heads.audit.run's files), in the style
of `report`.

It holds: what was audited and how; per attribute the rows, flagged label issues, cleanlab's
noise estimate and how well the out-of-fold head sees the attribute; the near-duplicate summary
and the histogram of nearest-neighbour similarities with the threshold; per attribute a gallery of
its `top` likeliest label errors (thumbnail, id, split, given label, out-of-fold probability); and
the `top` duplicate pairs side by side, train <-> val/test pairs first. Images come from the folder
the cache records (or `images`); when they cannot be read the page says so in place of a gallery.

The review loop: each suspect of the galleries can be marked keep (the given label is right), flip
(it is wrong) or unsure, by its buttons or by keyboard (arrow keys or j/l move, k/f/u mark, 0
clears). Marks survive a reload (the browser's localStorage, keyed by the audit's label_issues.csv)
and "Download corrections.csv" writes a labels file `--labels` accepts: one row per marked image,
one column per attribute marked on any image; a marked cell holds the given label (keep), the other
label (flip) or ? (unsure: unknown, out of training); an unmarked cell holds the image's given
label, so applying the file changes only what was marked. The page stays one offline file.
"""

import hashlib
import html
import io
import json
from pathlib import Path

from cache.units import counted
from heads.defaults import AUDIT
from heads.look.page import cell, data_uri, percent, thumbnail_uri, write_page
from heads.look.plots import plot_nearest_similarity
from heads.look.thumbnails import image_folder

AUDIT_STYLE = """
.pair { border: 1px solid #ccc; padding: 3px; font-size: 11px; width: 200px; }
.pair .faces { display: flex; gap: 2px; }
.pair figure { width: 96px; }
.leak { border-color: #c00; background: #fff0f0; }
.histogram img { max-width: 700px; }
.suspect { cursor: pointer; border: 2px solid transparent; }
.suspect.selected { border-color: #06c; }
.suspect[data-mark="keep"] { background: #e8f6e8; }
.suspect[data-mark="flip"] { background: #fde8e8; }
.suspect[data-mark="unsure"] { background: #fff6d8; }
.suspect .marks button { font-size: 10px; padding: 0 3px; }
.suspect[data-mark="keep"] button.keep, .suspect[data-mark="flip"] button.flip,
.suspect[data-mark="unsure"] button.unsure { font-weight: bold; text-decoration: underline; }
#review { position: sticky; top: 0; background: #fff; padding: 4px 0; border-bottom: 1px solid #ccc; }
"""
# The review loop (module docstring); its data is the JSON in #review-data.
REVIEW_JS = r"""
(function () {
  const data = JSON.parse(document.getElementById('review-data').textContent);
  const key = 'celeba-heads-audit:' + data.key;
  const suspects = Array.from(document.querySelectorAll('.suspect'));
  let marks = {};
  try { marks = JSON.parse(localStorage.getItem(key) || '{}'); } catch (e) { marks = {}; }
  let selected = 0;
  const id = s => s.dataset.image + '\u0000' + s.dataset.attribute;
  function show() {
    suspects.forEach((s, i) => {
      const mark = marks[id(s)];
      if (mark) s.dataset.mark = mark; else delete s.dataset.mark;
      s.classList.toggle('selected', i === selected);
    });
    const counts = {keep: 0, flip: 0, unsure: 0};
    Object.values(marks).forEach(m => counts[m] += 1);
    document.getElementById('review-count').textContent =
      `${Object.keys(marks).length} marked: ${counts.keep} keep, ${counts.flip} flip, ${counts.unsure} unsure`;
  }
  function mark(i, value) {
    const s = suspects[i];
    if (!s) return;
    if (value) marks[id(s)] = value; else delete marks[id(s)];
    localStorage.setItem(key, JSON.stringify(marks));
    show();
  }
  function csvField(text) { return /[",\n]/.test(text) ? '"' + text.replace(/"/g, '""') + '"' : text; }
  function corrections() {
    const images = [], attributes = [];
    suspects.forEach(s => {
      if (!marks[id(s)]) return;
      if (!images.includes(s.dataset.image)) images.push(s.dataset.image);
      if (!attributes.includes(s.dataset.attribute)) attributes.push(s.dataset.attribute);
    });
    attributes.sort((a, b) => data.attributes.indexOf(a) - data.attributes.indexOf(b));
    const lines = [['image_id', ...attributes].map(csvField).join(',')];
    images.forEach(image => {
      const cells = attributes.map(attribute => {
        const given = data.given[image][attribute];
        const m = marks[image + '\u0000' + attribute];
        if (m === 'flip') return String(1 - given);
        if (m === 'unsure' || given === null) return '?';
        return String(given);
      });
      lines.push([csvField(image), ...cells].join(','));
    });
    return lines.join('\n') + '\n';
  }
  suspects.forEach((s, i) => {
    s.addEventListener('click', event => {
      selected = i;
      const button = event.target.closest('button');
      if (button) mark(i, marks[id(s)] === button.dataset.value ? null : button.dataset.value); else show();
    });
  });
  document.addEventListener('keydown', event => {
    if (event.target.closest && event.target.closest('input, textarea')) return;
    const moves = {ArrowRight: 1, l: 1, ArrowLeft: -1, j: -1};
    const values = {k: 'keep', f: 'flip', u: 'unsure', '0': null};
    if (event.key in moves) {
      selected = Math.max(0, Math.min(suspects.length - 1, selected + moves[event.key]));
      suspects[selected].scrollIntoView({block: 'nearest'});
      show();
    } else if (event.key in values) {
      mark(selected, values[event.key]);
      if (values[event.key]) selected = Math.min(suspects.length - 1, selected + 1);
      show();
    } else return;
    event.preventDefault();
  });
  document.getElementById('review-download').addEventListener('click', () => {
    const link = document.createElement('a');
    link.href = URL.createObjectURL(new Blob([corrections()], {type: 'text/csv'}));
    link.download = 'corrections.csv';
    document.body.appendChild(link);
    link.click();
    link.remove();
  });
  document.getElementById('review-clear').addEventListener('click', () => {
    marks = {};
    localStorage.removeItem(key);
    show();
  });
  show();
})();
"""


def _label_table(summary):
    head = ("<th>attribute</th><th>rows</th><th>positives</th><th>flagged</th><th>flagged %</th>"
            "<th>noise est. %</th><th>oof accuracy %</th><th>majority %</th><th>oof ROC AUC</th>")
    rows = [f'<table class="sortable" id="labels"><thead><tr>{head}</tr></thead><tbody>']
    for name, s in summary["labels"].items():
        oof = s["out_of_fold"]
        auc = oof["roc_auc"]
        rows.append("<tr>" + "".join([
            cell(name), cell(s["rows"]), cell(s["positives"]), cell(s["flagged"]),
            cell(s["flagged_rate"], percent(s["flagged_rate"])), cell(s["noise_rate"], percent(s["noise_rate"])),
            cell(oof["accuracy"], percent(oof["accuracy"])),
            cell(oof["majority_accuracy"], percent(oof["majority_accuracy"])),
            cell(auc, "–" if auc is None else f"{auc:.3f}")]) + "</tr>")
    rows.append("</tbody></table>")
    return "\n".join(rows)


def _duplicate_summary(d):
    search = d["search"] + (f" ({d['index']}, {d['probes']} probes; recall@1 against exact search "
                            f"{100 * d['recall_at_1']:.1f} % on {d['recall_queries']} sampled rows)"
                            if d["search"] == "ivf" else "")
    items = [("pairs", d["pairs"]), ("groups (each counted once)", d["groups"]),
             ("rows in a group", d["rows_in_groups"]), ("groups across train and val/test (leakage)", d["leak_groups"]),
             ("groups across splits", d["cross_split_groups"]),
             ("groups whose given labels disagree", d["label_disagreeing_groups"])]
    table = "".join(f"<tr>{cell(k)}{cell(v)}</tr>" for k, v in items)
    rule = (f"A pair: centred cosine at least {d['threshold']:g}, each among the other's {d['neighbours']} "
            f"nearest; search {search}, {d['seconds']:.1f} s.")
    return f'<p>{html.escape(rule)}</p><table id="duplicates"><tbody>{table}</tbody></table>'


def _histogram(d):
    buffer = io.BytesIO()
    plot_nearest_similarity(d["nearest_similarity"], d["threshold"], buffer)
    return f'<div class="histogram"><img alt="nearest-neighbour similarity" src="{data_uri(buffer.getvalue())}"></div>'


def _figure(folder, image_id, caption, thumbnails):
    thumb = thumbnail_uri(folder, image_id, thumbnails)
    if thumb is None:
        return None
    return f'<figure><img alt="{html.escape(image_id)}" src="{thumb[1]}"><figcaption>{caption}</figcaption></figure>'


def _issue_galleries(issues, folder, top, thumbnails):
    parts = []
    for name, rows in issues.groupby("attribute", sort=False):
        shown = rows.head(top)
        parts.append(f"<h4>{html.escape(name)}: {len(rows)} flagged, the {len(shown)} least likely given labels</h4>")
        figures = [_suspect(_figure(folder, r.image_id, f"{html.escape(r.image_id)} ({r.split})<br>given "
                                              f"{int(r.given_label)}, p = {r.probability:.3f}", thumbnails), r.image_id, name)
                   for r in shown.itertuples()]
        unreadable = sum(f is None for f in figures)
        if unreadable:
            parts.append(f'<p class="note">{counted(unreadable, "image")} could not be read from '
                         f'{html.escape(str(folder))}.</p>')
        parts.append(f'<div class="gallery issues">{"".join(f for f in figures if f)}</div>')
    return "\n".join(parts) if parts else "<p>No label flagged.</p>"


def _suspect(figure, image_id, attribute):
    """A gallery figure as a reviewable suspect: its image and attribute, and the three marks."""
    if figure is None:
        return None
    buttons = "".join(f'<button type="button" class="{v}" data-value="{v}" title="{v} ({v[0]})">{v}</button>'
                      for v in ("keep", "flip", "unsure"))
    return (f'<div class="suspect" data-image="{html.escape(image_id)}" data-attribute="{html.escape(attribute)}">'
            f'{figure}<div class="marks">{buttons}</div></div>')


def _review(audit_dir, issues, top):
    """The review bar and its data: the audit's key, its attributes, and each shown image's given
    label of every audited attribute (from out_of_fold.csv; null where unknown)."""
    import pandas as pd

    shown = issues.groupby("attribute", sort=False).head(top)
    attributes = list(dict.fromkeys(issues["attribute"]))
    table = pd.read_csv(audit_dir / "out_of_fold.csv", dtype={"image_id": str}).set_index("image_id")
    labels = [c.removesuffix("_label") for c in table.columns if c.endswith("_label")]
    given = {image_id: {a: (None if pd.isna(table.at[image_id, f"{a}_label"]) else int(table.at[image_id, f"{a}_label"]))
                        for a in labels} for image_id in dict.fromkeys(shown["image_id"])}
    key = hashlib.sha256((audit_dir / "label_issues.csv").read_bytes()).hexdigest()[:16]
    data = json.dumps({"key": key, "attributes": labels or attributes, "given": given}).replace("</", "<\\/")
    bar = ('<div id="review"><button type="button" id="review-download">Download corrections.csv</button> '
           '<button type="button" id="review-clear">Clear marks</button> <span id="review-count"></span>'
           '<br><small>Mark each suspect keep, flip or unsure (buttons, or keys: arrows or j/l move, k f u mark, 0 '
           'clears); marks stay in this browser. The file is a labels overlay: <code>--labels corrections.csv'
           '</code>.</small></div>')
    return bar, f'<script type="application/json" id="review-data">{data}</script><script>{REVIEW_JS}</script>'


def _pair_gallery(pairs, folder, top, thumbnails):
    if not len(pairs):
        return "<p>No pair at this threshold.</p>"
    blocks, unreadable = [], 0
    for r in pairs.head(top).itertuples():
        left = _figure(folder, r.image_id, f"{html.escape(r.image_id)}<br>{r.split}", thumbnails)
        right = _figure(folder, r.duplicate_id, f"{html.escape(r.duplicate_id)}<br>{r.duplicate_split}", thumbnails)
        if left is None or right is None:
            unreadable += 1
            continue
        disagree = r.labels_disagree if isinstance(r.labels_disagree, str) and r.labels_disagree else ""
        blocks.append(f'<div class="pair{" leak" if r.leak else ""}"><div class="faces">{left}{right}</div>'
                      f'cosine {r.similarity:.4f}{"; train &harr; " + r.duplicate_split if r.leak else ""}'
                      f'{"<br>labels differ: " + html.escape(disagree) if disagree else ""}</div>')
    note = (f'<p class="note">{counted(unreadable, "pair")} could not be shown: images unreadable in {html.escape(str(folder))}.</p>'
            if unreadable else "")
    return f'{note}<div class="gallery pairs">{"".join(blocks)}</div>'


def build_audit_page(audit_dir, top=AUDIT["top"], images=None):
    """Write audit_dir/audit.html from the audit's files; returns its path."""
    import pandas as pd

    audit_dir = Path(audit_dir)
    summary = json.loads((audit_dir / "summary.json").read_text())
    issues = pd.read_csv(audit_dir / "label_issues.csv", dtype={"image_id": str})
    settings = summary["settings"]
    head = settings["settings"].get("head")
    body = [f"<style>{AUDIT_STYLE}</style><h1>celeba-heads audit</h1>",
            f"<p>{summary['rows']:,} rows of {html.escape(' + '.join(summary.get('caches', [summary['cache']])))} "
            f"({', '.join(summary['splits'])}), "
            f"out-of-fold probabilities from {html.escape(settings['kind'])}{' ' + html.escape(head) if head else ''}, "
            f"{settings['folds']}-fold cross-fitting ({summary['seconds']['folds']:.1f} s).</p>",
            "<h2>Likely label errors</h2>", _label_table(summary)]
    weak = [n for n, s in summary["labels"].items()
            if s["out_of_fold"]["roc_auc"] is None or s["out_of_fold"]["roc_auc"] < AUDIT["weak_auc"]]
    if weak:
        body.append(f'<p class="note">The out-of-fold head barely sees {html.escape(", ".join(weak))} (ROC AUC below '
                    f'{AUDIT["weak_auc"]}): their flags say more about the features than about the labels.</p>')
    folder, why = image_folder(summary["cache"], images)
    duplicates = summary.get("duplicates")
    if duplicates:
        body += ["<h2>Near-duplicates</h2>", _duplicate_summary(duplicates), _histogram(duplicates)]
    thumbnails = {}
    body.append("<h2>Suspected label errors</h2>")
    review = _review(audit_dir, issues, top) if folder and len(issues) and (audit_dir / "out_of_fold.csv").is_file() \
        else None
    if review:
        body.append(review[0])
    body.append(_issue_galleries(issues, folder, top, thumbnails) if folder else
                f'<p class="note">No gallery: {html.escape(why)}</p>')
    if duplicates:
        pairs = pd.read_csv(audit_dir / "duplicates.csv", dtype={"image_id": str, "duplicate_id": str},
                            keep_default_na=False)
        body.append(f"<h2>Duplicate pairs</h2><p>The {min(top, len(pairs))} of {len(pairs)} pairs, train &harr; "
                    "val/test first (red), then other cross-split pairs, then by similarity.</p>")
        body.append(_pair_gallery(pairs, folder, top, thumbnails) if folder else
                    f'<p class="note">No gallery: {html.escape(why)}</p>')
    if review:
        body.append(review[1])
    out = audit_dir / "audit.html"
    write_page(out, "celeba-heads audit", body)
    return out
