"""Terminal text: every table and summary line the command line shows, as strings (it echoes them).

Metric columns come from `heads.metrics.METRICS`: the scores and the majority baseline, percentages
for rates, 0..1 for AUC.
"""

import json
from pathlib import Path

import pandas as pd

from cache.units import counted, plural, size_text
from embed.defaults import FACE_CHOICES, FIT_CHOICES
from heads.metrics import BY_NAME, METRICS

TABLE_METRICS = [m for m in METRICS if m.table and (m.score or m.name == "majority_accuracy")]


def run_table(metrics, title=None, splits=("val", "test"), rows=False):
    """Rows = attributes, columns = each split x metric (a run's metrics.json, or `evaluate`'s
    result); rows: also each split's labelled rows (n) and the decision threshold when any is not 0.5."""
    width = 9
    thresholds = rows and any(by_split[s]["threshold"] != 0.5 for by_split in metrics["attributes"].values()
                              for s in splits)
    extra = [("n", "n", lambda v: f"{v:,}")] if rows else []
    extra += [("threshold", "thresh", lambda v: f"{v:.3f}")] if thresholds else []
    group = (len(TABLE_METRICS) + len(extra)) * width
    lines = [title] if title else []
    lines.append(f"{'':<22}" + "".join(f"  {split:-^{group - 2}}" for split in splits))
    shorts = [m.short for m in TABLE_METRICS] + [short for _, short, _ in extra]
    lines.append(f"{'attribute':<22}" + "".join(f"{short:>{width}}" for _ in splits for short in shorts))
    for name, by_split in metrics["attributes"].items():
        cells = ["".join(f"{m.format(by_split[split][m.name]):>{width}}" for m in TABLE_METRICS)
                 + "".join(f"{show(by_split[split][key]):>{width}}" for key, _, show in extra) for split in splits]
        lines.append(f"{name:<22}" + "".join(cells))
    lines.append("(accuracy, balanced accuracy, F1 and majority-class accuracy in %; AUC 0..1; ece: expected "
                 "calibration error 0..1, lower is better" + ("; n: labelled rows" if rows else "") + ")")
    return "\n".join(lines)


def groups_table(metrics, split):
    """Per-group table of a metrics dict with a "groups" section: one line per group, then the worst
    and the mean group accuracy per attribute."""
    section = metrics["groups"]
    lines = [f"per group on {split} (groups by {', '.join(section['by'])}):"]
    for name, by_split in section["attributes"].items():
        result = by_split[split]
        for group in result["groups"]:
            keys = [k for k in group if k not in ("n", "accuracy", "positive_rate")]
            label = ", ".join(f"{k}={group[k]}" for k in keys)
            accuracy = "-" if group["accuracy"] is None else f"{100 * group['accuracy']:.1f}%"
            lines.append(f"  {label:<40} n {group['n']:>7}  accuracy {accuracy:>7}")
        worst, mean = result["worst_group_accuracy"], result["mean_group_accuracy"]
        lines.append(f"  {name}: worst-group accuracy {'-' if worst is None else f'{100 * worst:.1f}%'}, "
                     f"mean over groups {'-' if mean is None else f'{100 * mean:.1f}%'}")
    return "\n".join(lines)


def trained(metrics, name):
    """What a training command shows for one run: its table titled with its name, training time and
    what it chose on val, then its group table (test) if any."""
    chosen = metrics["run"].get("selection")
    note = "" if not chosen else "; chose " + json.dumps({k: v for k, v in chosen.items()
                                                          if not k.startswith("val_") and "_by_" not in k})
    text = run_table(metrics, title=f"{name} ({metrics['run']['train_seconds']:.1f} s training{note})")
    labels = metrics["run"].get("labels")
    lines = [line for line in (epochs_line(metrics), excluded_line(metrics), masked_line(metrics),
                               labels and labels_line(labels)) if line]
    groups = "\n" + groups_table(metrics, "test") if "groups" in metrics else ""
    return text + "".join("\n" + line for line in lines) + groups


def epochs_line(metrics):
    """How long a run trained with --epochs auto, and which epoch's weights it kept (else None)."""
    run = metrics.get("run")
    epochs = run.get("epochs") if isinstance(run, dict) else None
    if not isinstance(epochs, dict) or not epochs.get("auto"):
        return None
    return (f"epochs auto: trained {counted(epochs['trained'], 'epoch')}; the val loss was lowest after epoch "
            f"{epochs['best']}, whose weights the head keeps")


def excluded_line(metrics):
    """What --exclude left out of a run's train split (else None)."""
    excluded = metrics["run"].get("excluded")
    if not excluded:
        return None
    return (f"excluded: {counted(excluded['train_rows'], 'train row')} listed in {excluded['file']} "
            f"({counted(excluded['ids'], 'id')} listed; {excluded['val_test_ids']} of them in val or test, which "
            "are scored as usual)")


def masked_line(metrics):
    """What --mask-labels made unknown in a run's train split (else None)."""
    masked = metrics["run"].get("masked")
    if not masked:
        return None
    counts = ", ".join(f"{k} {v}" for k, v in masked["masked"].items()) or "none"
    return (f"masked: {counted(sum(masked['masked'].values()), 'train label')} listed in {masked['file']} made unknown "
            f"({counts}; each row stays for its other attributes); {counted(masked['val_test_pairs'], 'listed label')} "
            "in val or test, which are scored as given")


def evaluated(result, split, run_dir):
    """`evaluate`'s table: the training commands' table for one split, with its labelled rows."""
    lines = [groups_table(result, split)] if "groups" in result else []
    if result.get("labels"):
        lines.append(labels_line(result["labels"]))
    lines.append(run_table(result, f"{run_dir} ({result['run']['kind']}) on {split} of {result['run']['cache']}",
                           splits=(split,), rows=True))
    return "\n".join(lines)


def labels_line(record):
    """Which label files a run or score used (`heads.run.overlay` record), and how many labels they
    changed; other labels than the run's are said so."""
    files = [f"{Path(f['file']).name} ({counted(f['changed'], 'label')} changed)" for f in record.get("files") or []]
    partition = record.get("partition")
    parts = ([f"labels {' then '.join(files)}"] if files else []) + (
        [f"partition {Path(partition['file']).name} ({counted(partition['left_out'], 'cache row')} left out)"]
        if partition else [])
    scored = "scored against other labels than the run's: " if record.get("other_labels") else "label overlay: "
    return scored + ", ".join(parts)


def overlay_lines(record, cache):
    """`info --labels`: what the files change in a cache, one line per file and per attribute."""
    lines = []
    for entry in record["files"]:
        lines.append(f"{entry['file']}: {counted(entry['rows'], 'row')} listed, {entry['not_in_cache']:,} not in "
                     f"{cache}")
    partition = record.get("partition")
    if partition:
        lines.append(f"{partition['file']}: {counted(partition['rows'], 'row')} listed, "
                     f"{partition['not_in_cache']:,} not "
                     f"in the cache; {counted(partition['left_out'], 'cache row')} not in it, left out of a run")
    lines.append(f"{'attribute':<22}{'set':>10}{'changed':>10}{'unknown':>10}")
    for name, counts in record["attributes"].items():
        lines.append(f"{name:<22}{counts['set']:>10,}{counts['changed']:>10,}{counts['unknown']:>10,}"
                     + ("  (new)" if counts["new"] else ""))
    return lines


def epoch_line(record):
    """One epoch of a Keras head: train loss, val loss and val accuracy per attribute (a grid of
    tails: how many train, and the best member's best epoch so far)."""
    accuracies = "  ".join(f"{k.removeprefix('val_').removesuffix('_accuracy')} {100 * v:.1f}%"
                           for k, v in record.items() if k.startswith("val_") and k.endswith("_accuracy"))
    val_loss = f", val loss {record['val_loss']:.4f}" if "val_loss" in record else ""
    if "training" in record:  # a grid of tails (`heads.kinds.trainer.fit_together`)
        def spread(key):
            low, high = record[key]
            return f"{low:.4f}" if low == high else f"{low:.4f}-{high:.4f}"
        now = "".join(f", {name} {spread(key)}" for key, name in (("epoch_loss", "loss"),
                                                                   ("epoch_val_loss", "val loss")) if key in record)
        kept = (f"; kept so far: {record['member']} after its epoch {record['member_epoch']} (loss "
                f"{record['loss']:.4f}{val_loss}  val: {accuracies})") if "member" in record else ""
        return f"epoch {record['epoch']}: {record['training']} tails training{now}{kept}"
    return f"epoch {record['epoch']}: loss {record['loss']:.4f}{val_loss}  val: {accuracies}"


def variant_line(i, total, name, metrics):
    """A sweep's progress: variant i of total, its training time and val accuracy per attribute."""
    def accuracy(value):
        return "-" if value is None else f"{100 * value:.1f}%"
    return (f"[{i}/{total}] {name}: {metrics['run']['train_seconds']:.1f} s, val accuracy "
            + ", ".join(f"{a} {accuracy(m['val']['accuracy'])}" for a, m in metrics["attributes"].items()))


def leaderboard_text(table, split=None):
    """A leaderboard DataFrame (`heads.run.compare.leaderboard`) as aligned text, each metric shown
    as the training commands' tables show it (`Metric.format`: rates in %, AUC 0..1), with the
    same note of units."""
    shown = table.astype(object)
    for column in table.columns:
        metric = BY_NAME.get(column[1]) if isinstance(column, tuple) else None
        if metric is not None:
            shown[column] = [metric.format(None if pd.isna(v) else v) for v in table[column]]
    with pd.option_context("display.width", 200, "display.max_columns", 50):
        text = shown.to_string(na_rep="-")
    forms = {BY_NAME[c[1]].form for c in table.columns if isinstance(c, tuple) and c[1] in BY_NAME}
    units = "; ".join(note for form, note in (("percent", "accuracy, F1 and other rates in %"),
                                              ("score", "AUC, ece and brier 0..1")) if form in forms)
    text = f"{text}\n({units})" if units else text
    return f"{split} split\n{text}" if split else text


def dataset_lines(dataset):
    """What `embed` says of the labelled images it found (or of a folder embedded without labels)."""
    if dataset.sources["labels"] is None:
        lines = [f"dataset: {len(dataset.image_ids)} images in {dataset.sources['images']} (sorted by path), no labels: "
                 f"give them at training time with --labels FILE; partition: {dataset.sources['partition']}"]
    else:
        lines = [f"dataset: {len(dataset.image_ids)} labelled images, {len(dataset.attribute_names)} attributes, "
                 f"from {dataset.sources['labels']}"]
    if dataset.missing:
        n = len(dataset.missing)
        lines.append(f"note: {counted(n, 'labelled id')} {plural('has', n)} no image file (recorded as failed rows), "
                     f"e.g. {dataset.missing[0]}")
    if dataset.unlabelled:
        n = len(dataset.unlabelled)
        lines.append(f"note: {counted(n, 'image file')} {plural('has', n)} no label row and {plural('is', n)} not "
                     f"embedded, e.g. {dataset.unlabelled[0]}")
    if dataset.unused_partition_rows:
        n = dataset.unused_partition_rows
        lines.append(f"note: the partition file lists {counted(n, 'id')} "
                     + ("without a label row" if dataset.sources["labels"] else f"that {plural('is', n)} not images of "
                                                                                  "the folder"))
    return lines


def backbone_line(model, backbone):
    prep = backbone.preprocessing
    stored = "".join(f"; layer {layer['name']} {layer['pool']} {layer['shape']}" for layer in backbone.layers)
    line = (f"backbone: {model} -> {backbone.feature_dim}-d; input {prep.image_size}x{prep.image_size} {prep.color}, "
            f"values in [{prep.value_range[0]:g}, {prep.value_range[1]:g}]{stored}")
    return line + (f"\n{aligned_line(prep.align)}" if prep.align else "")


def aligned_line(align):
    """How a cache of aligned faces found and aligned each face (preprocessing["align"])."""
    from embed.faces import complete_record
    align = complete_record(align)
    detector = align["detector"]
    refined = " (refined on the aligned crop)" if align.get("refine") else ""
    mirrored = f", mirrored at least {detector['mirror_score']:g}" if detector["mirror_score"] else ""
    return (f"faces: {detector['detector']} (smallest face {detector['min_face']} px, score at least "
            f"{detector['min_score']:g}{mirrored}), the {align['face']} face of each photo aligned by "
            f"{FIT_CHOICES[align['fit']]} (--landmark-fit {align['fit']}){refined} into CelebA's "
            f"{align['frame'][0]}x{align['frame'][1]} frame, EXIF orientation applied, pixels outside the photo "
            "repeat its edge")


def embed_lines(summary, info, out, retried, shown_failures=20):
    """What `embed` says when it is done: retries (retried: --retry-failed was given), resume point,
    failures, the cache's row counts."""
    lines = []
    still_failed = summary.retried - summary.retried_ok
    if retried:
        lines.append(f"retried {counted(summary.retried, 'failed row')}: {summary.retried_ok} now ok, {still_failed} "
                     "still failed")
    if summary.started_at_row >= summary.n_rows:
        lines.append(f"{out}: every row had been embedded before; only its failed rows were tried again" if retried
                     else f"{out} is already complete; nothing to embed")
    elif summary.started_at_row:
        lines.append(f"resumed at row {summary.started_at_row} of {summary.n_rows}")
    lines += [f"failed: {image_id}: {error}" for image_id, error in summary.failures[:shown_failures]]
    if len(summary.failures) > shown_failures:
        lines.append(f"... and {len(summary.failures) - shown_failures} more (see `cli.py info {out}`)")
    counts = (f"{summary.rows_ok + summary.retried_ok} ok, {summary.rows_failed + still_failed} failed "
              f"({summary.retried} of the rows retried)" if retried
              else f"{summary.rows_ok} ok, {summary.rows_failed} failed")
    lines.append(f"done: {counts} in {summary.seconds:.1f} s, {summary.images_per_second:.1f} images/s; cache {out}: "
                 f"{info['rows']['ok']} ok, {info['rows']['failed']} failed, {info['rows']['not_done']} not done")
    return lines


def progress_line(label, done, total, rate, eta):
    """A progress line for logs (stderr not a terminal): rows done/total, images/s, ETA."""
    import datetime
    return (f"{label}: {done}/{total} rows ({100 * done / max(total, 1):.1f} %), {rate:.1f} images/s, "
            f"ETA {datetime.timedelta(seconds=round(eta))}")


def info_text(summary):
    """`info`'s summary of a cache (`cache.reader.cache_info`)."""
    rows, prep, backbone = summary["rows"], summary["preprocessing"], summary["backbone"]
    weights = f", weights {backbone['weights']}" if backbone.get("weights") else ""
    lines = [f"cache: {summary['path']} (format {summary['format_version']}, "
             f"celeba-heads {summary['tool_version']}, created {summary['created']})",
             f"features: {summary['shape'][0]} x {summary['shape'][1]} {summary['dtype']}",
             f"backbone: {backbone.get('model', '?')} ({backbone.get('kind', '?')}{weights})"
             + ("  RANDOM WEIGHTS" if backbone.get("random_weights") else "")]
    if "image_size" in prep:
        lo, hi = (f"{v:g}" if isinstance(v, (int, float)) else str(v) for v in prep.get("value_range") or "??")
        lines.append(f"preprocessing: {prep['image_size']}x{prep['image_size']} {prep.get('color', '?')}, values in "
                     f"[{lo}, {hi}], {prep.get('resize', '?')}" + (" antialiased" if prep.get("antialias") else ""))
    if summary.get("faces"):
        faces = summary["faces"]
        lines.append(aligned_line(prep["align"]))
        lines.append(f"faces: {counted(faces['no_face_rows'], 'row')} failed with no face found, "
                     f"{counted(faces['several_faces_rows'], 'photo')} held more than one face (the {faces['face']} "
                     "one embedded)")
    if summary["views"]:
        lines.append(f"views: orig, {', '.join(summary['views'])} (features_{summary['views'][0]} holds the "
                     "mirrored images)")
    for layer in summary.get("layers", []):
        lines.append(f"layer: {layer['name']} pooled {layer['pool']}, {summary['shape'][0]} x "
                     f"{' x '.join(map(str, layer['shape']))} {summary['dtype']}, {size_text(layer['bytes'])}")
    lines.append(f"rows: {rows['ok']} ok, {rows['failed']} failed, {rows['not_done']} not done")
    if summary["shard"]:
        shard = summary["shard"]
        lines.append(f"SHARD {shard['index']}/{shard['count']}: rows {shard['start']:,} to {shard['stop'] - 1:,} of "
                     f"{shard['total_rows']:,}, not a whole cache (join the shards with `cli.py merge`)")
    splits = summary["splits"]
    overlaid = "overlay" in summary  # info --labels/--partition: the splits and rates a run sees
    left_out = f", {summary['left_out']:,} left out by --partition" if summary.get("left_out") else ""
    lines.append(("splits with --labels/--partition applied: " if overlaid else "splits: ")
                 + ", ".join(f"{name} {s['ok']}/{s['rows']} ok" for name, s in splits.items()) + left_out)
    lines.append(f"{'attribute':<22}" + "".join(f"{name:>8}" for name in splits)
                 + ("   (positive rate, ok rows with a known label)" if overlaid else "   (positive rate, ok rows)"))
    for attribute in summary["attributes"]:
        rates = [splits[name]["positive_rate"][attribute] for name in splits]
        lines.append(f"{attribute:<22}" + "".join(f"{r:8.3f}" if r is not None else f"{'-':>8}" for r in rates))
    lines += [f"failed row {f['row']}: {f['image_id']}: {f['error']}" for f in summary["failures"]]
    if rows["failed"] > len(summary["failures"]):
        lines.append(f"... {rows['failed'] - len(summary['failures'])} more failed rows (see --json or the cache)")
    return "\n".join(lines)


def check_line(cache, check):
    """`info --check`'s verdict: (ok, line)."""
    bad = check["nonfinite_rows"]
    if bad:
        return False, (f"{cache}: check FAILED: {len(bad)} of {check['ok_rows']} ok rows hold non-finite features "
                       f"(NaN or inf), e.g. rows {', '.join(map(str, bad[:5]))}")
    return True, (f"check: OK: structure, labels, partition and status valid; all {check['ok_rows']} ok rows "
                  "have finite features")


ONE_LINE_ATTRIBUTES = 4  # predict: up to this many attributes share the image's line, more get a line each


def _decided(a, v):
    """An attribute's probability and decision, with its threshold when it is not 0.5 (tuned on val)."""
    threshold = v.get("threshold", 0.5)
    return f"{a} {v['probability']:.3f} ({v['decision']}" + (f", threshold {threshold:.3f})" if threshold != 0.5
                                                            else ")")


def predictions(results):
    """`predict`'s lines: each image's probability and decision per attribute (its threshold when
    tuned), on the image's line for a few attributes, else one attribute a line; or why it failed."""
    lines = []
    for r in results:
        if not r["ok"]:
            lines.append(f"{r['image']}  failed: {r['error']}")
        elif len(r["attributes"]) <= ONE_LINE_ATTRIBUTES:
            lines.append(f"{r['image']}  " + "  ".join(_decided(a, v) for a, v in r["attributes"].items()))
        else:
            lines.append(r["image"])
            lines.extend(f"  {_decided(f'{a:<22}', v)}" for a, v in r["attributes"].items())
    return lines


def face_predictions(results):
    """`predict --faces`'s lines: per photo a line with its size and face count (or why it failed),
    then per face its box, score and, one attribute a line, probability and decision."""
    lines = []
    for r in results:
        if r["size"] is None:
            lines.append(f"{r['image']}  failed: {r['error']}")
            continue
        width, height = r["size"]
        if not r["ok"]:
            lines.append(f"{r['image']}  {width}x{height}  failed: {r['error']}")
            continue
        count = len(r["faces"])
        lines.append(f"{r['image']}  {width}x{height}  {count} face{'s' if count != 1 else ''}"
                     + (f", numbered by the {r['order']} rule ({FACE_CHOICES[r['order']]})" if count > 1 else ""))
        for number, face in enumerate(r["faces"], 1):
            x, y, w, h = face["box"]
            outside = ("  (landmarks outside the photo: the crop repeats its edge)" if face.get("landmarks_outside")
                       else "")
            flagged = f"  FLAGGED, its prediction means little: {face['implausible']}" if face.get("implausible") else ""
            lines.append(f"  face {number}  box x={x:.0f} y={y:.0f} w={w:.0f} h={h:.0f}  score {face['score']:.3f}"
                         + outside + flagged)
            lines.extend(f"    {_decided(f'{a:<22}', v)}" for a, v in face["attributes"].items())
    return lines


def video_line(result):
    """`predict --video`'s summary."""
    return (f"{result['frames']} frames, {result['frames_with_faces']} with faces, {result['faces']} faces in "
            f"{result['seconds']:.1f} s ({result['frames_per_second']:.1f} frames/s); wrote {result['video']} and "
            f"{result['csv']}")


def tflite_line(out, sidecar):
    """What `export --format tflite` wrote."""
    put = sidecar["input"]
    return (f"wrote {out} ({size_text(sidecar['bytes'])}, quantize {sidecar['quantize']}) and its sidecar "
            f"{Path(out).with_suffix('.json')}: signature {sidecar['signature']}, input {put['name']} float32 "
            f"{put['shape']} ({put['color']}, values in {put['value_range']})"
            + (", a face aligned into CelebA's frame (the sidecar's alignment)" if sidecar["alignment"] else "")
            + f"; outputs {', '.join(sidecar['attributes'])} and each _decision")


def projector_lines(out, result):
    """(stdout lines, note or None) of `projector`."""
    sprite = f", sprite {result['sprite'][0]}x{result['sprite'][1]}" if result["sprite"] else ", no sprite"
    return ([f"wrote {out}: {result['rows']} rows, metadata.tsv{sprite}",
             f"view it: tensorboard --logdir {out}  (Projector tab)"], result["note"])


def audit_lines(summary, weak_auc):
    """What `audit` shows: per attribute the rows audited, flagged, cleanlab's noise estimate and how
    well the out-of-fold head sees it (accuracy, ROC AUC, the majority class), then a note for each
    attribute whose AUC is below weak_auc."""
    settings = summary["settings"]
    head = settings["settings"].get("head")
    lines = [f"audit of {summary['rows']} rows ({', '.join(summary['splits'])}) with {settings['kind']}"
             f"{' ' + head if head else ''}, {settings['folds']}-fold cross-fitting ({summary['seconds']['folds']:.1f} s)",
             f"{'attribute':<22}{'rows':>9}{'flagged':>9}{'flagged %':>11}{'noise est. %':>14}{'oof acc %':>11}"
             f"{'majority %':>12}{'oof auc':>9}"]
    weak = []
    for name, s in summary["labels"].items():
        oof = s["out_of_fold"]
        auc = "-" if oof["roc_auc"] is None else f"{oof['roc_auc']:.3f}"
        lines.append(f"{name:<22}{s['rows']:>9}{s['flagged']:>9}{100 * s['flagged_rate']:>11.2f}"
                     f"{100 * s['noise_rate']:>14.2f}{100 * oof['accuracy']:>11.1f}{100 * oof['majority_accuracy']:>12.1f}"
                     f"{auc:>9}")
        if oof["roc_auc"] is None or oof["roc_auc"] < weak_auc:
            weak.append(name)
    if weak:
        lines.append(f"note: the out-of-fold head barely sees {', '.join(weak)} (ROC AUC below {weak_auc}): their "
                     "flags say more about the features than about the labels")
    d = summary.get("duplicates")
    if d:
        recall = f", recall@1 {100 * d['recall_at_1']:.1f} % against exact" if d["search"] == "ivf" else ""
        lines.append(f"near-duplicates (centred cosine >= {d['threshold']:g}, mutual {d['neighbours']}-NN; "
                     f"{d['search']} search {d['seconds']:.1f} s{recall}): {counted(d['pairs'], 'pair')} in "
                     f"{counted(d['groups'], 'group')}, {d['leak_groups']} across train and val/test, {d['label_disagreeing_groups']} with "
                     "disagreeing labels")
        quantiles = d["nearest_similarity"]["quantiles"]
        if d["pairs"] == 0:
            lines.append(f"note: no pair reaches --dup-threshold {d['threshold']:g}; the nearest neighbours' "
                         f"similarity is {quantiles['0.5']:.3f} at the median and {quantiles['0.999']:.3f} at the "
                         "99.9th percentile (a backbone trained for a task spreads copies apart: audit.html's "
                         "histogram shows where a lower --dup-threshold would cut)")
    return lines
