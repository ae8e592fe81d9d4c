"""audit.html: one self-contained page of an audit folder (heads.audit.run's files), in the style
of `report`.

It holds: what was audited and how; per attribute the rows, flagged label issues, cleanlab's
noise estimate and how well the out-of-fold head sees the attribute; the near-duplicate summary
and the histogram of nearest-neighbour similarities with the threshold; per attribute a gallery of
its `top` likeliest label errors (thumbnail, id, split, given label, out-of-fold probability); and
the `top` duplicate pairs side by side, train <-> val/test pairs first. Images come from the folder
the cache records (or `images`); when they cannot be read the page says so in place of a gallery.
"""

import html
import io
import json
from pathlib import Path

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
    uri = thumbnail_uri(folder, image_id, thumbnails)
    if uri is None:
        return None
    return f'<figure><img alt="{html.escape(image_id)}" src="{uri}"><figcaption>{caption}</figcaption></figure>'


def _issue_galleries(issues, folder, top, thumbnails):
    parts = []
    for name, rows in issues.groupby("attribute", sort=False):
        shown = rows.head(top)
        parts.append(f"<h4>{html.escape(name)}: {len(rows)} flagged, the {len(shown)} least likely given labels</h4>")
        figures = [_figure(folder, r.image_id, f"{html.escape(r.image_id)} ({r.split})<br>given {int(r.given_label)}, "
                           f"p = {r.probability:.3f}", thumbnails) for r in shown.itertuples()]
        unreadable = sum(f is None for f in figures)
        if unreadable:
            parts.append(f'<p class="note">{unreadable} image(s) could not be read from {html.escape(str(folder))}.</p>')
        parts.append(f'<div class="gallery issues">{"".join(f for f in figures if f)}</div>')
    return "\n".join(parts) if parts else "<p>No label flagged.</p>"


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
    note = (f'<p class="note">{unreadable} pair(s) could not be shown: images unreadable in {html.escape(str(folder))}.</p>'
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
    body.append(_issue_galleries(issues, folder, top, thumbnails) if folder else
                f'<p class="note">No gallery: {html.escape(why)}</p>')
    if duplicates:
        pairs = pd.read_csv(audit_dir / "duplicates.csv", dtype={"image_id": str, "duplicate_id": str},
                            keep_default_na=False)
        body.append(f"<h2>Duplicate pairs</h2><p>The {min(top, len(pairs))} of {len(pairs)} pairs, train &harr; "
                    "val/test first (red), then other cross-split pairs, then by similarity.</p>")
        body.append(_pair_gallery(pairs, folder, top, thumbnails) if folder else
                    f'<p class="note">No gallery: {html.escape(why)}</p>')
    out = audit_dir / "audit.html"
    write_page(out, "celeba-heads audit", body)
    return out
