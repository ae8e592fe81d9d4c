"""rehearsal: a full-size pass, make-sample with 202,599 images embedded by a tiny backbone, watched from outside."""

import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from bench.common import ROOT, group, row


def bench_rehearsal(workdir, quick):
    """A full-size pass: make-sample with 202,599 images, embedded with a tiny backbone (32 px
    conv), watched from outside: images/s over the first and last 10 % of rows, the process's
    memory at 10 % and 90 % of the rows and at its peak, the file's size against the layout's
    prediction, and `info` and `load_split` at full size."""
    import h5py

    from cache.reader import load_split
    from embed.sample import make_sample
    from harness.faults import prepare_model, rows_done

    n = 4000 if quick else 202_599
    work = Path(workdir)
    began = time.perf_counter()
    make_sample(work / "full", n=n, seed=0)
    sample_s = time.perf_counter() - began
    os.sync()  # the sample's ~2 GB of new files would otherwise be written back during the embed
    model = prepare_model(work / "tiny.keras")
    out = work / "full.h5"
    command = [sys.executable, str(ROOT / "cli.py"), "embed", "--data-dir", str(work / "full"), "--out", str(out),
               "--model", str(model), "--value-range", "0,1", "--image-size", "32", "--batch-size", "256"]
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    trace, peak_kb = [], 0  # (seconds, rows done, RSS kB)
    started = time.perf_counter()
    while proc.poll() is None:
        status = Path(f"/proc/{proc.pid}/status")
        try:
            fields = dict(line.split(":", 1) for line in status.read_text().splitlines() if ":" in line)
            rss, peak_kb = int(fields["VmRSS"].split()[0]), max(peak_kb, int(fields["VmHWM"].split()[0]))
        except (OSError, KeyError, ValueError):
            rss = 0
        trace.append((time.perf_counter() - started, max(rows_done(out), 0), rss))
        time.sleep(0.1)
    stderr = proc.communicate()[1]
    if proc.returncode != 0:
        raise RuntimeError(f"rehearsal embed failed: {stderr[-500:]}")
    exited = time.perf_counter() - started
    if trace[-1][1] < n:  # the process exited before a poll saw the last rows saved
        trace.append((exited, n, trace[-1][2]))
    times, done = np.array([t for t, _, _ in trace]), np.array([r for _, r, _ in trace])

    def reached(rows):
        """When rows_done first reached `rows`: interpolated between the two polls around it. (Not
        np.interp over the whole trace: rows_done stays at n while the process exits, and a flat
        stretch made the last 10 % look a quarter slower than it ran.)"""
        k = int(np.argmax(done >= rows))
        if k == 0 or done[k] == done[k - 1]:
            return float(times[k])
        return float(times[k - 1] + (rows - done[k - 1]) / (done[k] - done[k - 1]) * (times[k] - times[k - 1]))

    # start-up (imports, model, cache creation) is not pace: count from the first batch seen saved
    first_rows, first_write = int(done[done > 0][0]), float(times[done > 0][0])

    def rate_between(lo, hi):
        """Rows per second between the moments rows_done reached lo * n and hi * n."""
        r0 = max(lo * n, first_rows)
        t0 = first_write if r0 == first_rows else reached(r0)
        t1 = reached(hi * n)
        return (hi * n - r0) / (t1 - t0) if t1 > t0 else float("nan")

    def rss_at(fraction):
        return next((m for _, r, m in trace if r >= fraction * n and m), 0) / 1e6

    deciles = [rate_between(k / 10, (k + 1) / 10) for k in range(10)]
    first, last = deciles[0], deciles[-1]
    size_bytes = out.stat().st_size
    with h5py.File(out, "r") as f:
        dim = f["features"].shape[1]
    predicted = n * (dim * 2 + 256) + n * (40 + 1 + 1) + sum(len(i) + 16 for i in os.listdir(work / "full" / "img_align_celeba"))
    began = time.perf_counter()
    info = subprocess.run([sys.executable, str(ROOT / "cli.py"), "info", str(out)], capture_output=True)
    info_s = time.perf_counter() - began
    began = time.perf_counter()
    load_split(out, "train", dtype=None)
    load_s = time.perf_counter() - began
    return [row(f"rehearsal: make-sample --n {n:,}", round(sample_s, 1), "s", "<= 300 s", sample_s <= 300,
                note=f"{n / sample_s:.0f} images/s"),
            row("rehearsal: embed images/s, first 10 % of rows", round(first) if np.isfinite(first) else "n/a", "images/s",
                note="tiny conv backbone at 32 px, batch 256: the input pipeline's pace"),
            row("rehearsal: embed images/s, last 10 % of rows", round(last) if np.isfinite(last) else "n/a", "images/s",
                note=f"last / first = {last / first:.2f}; every tenth of the rows: "
                     + ", ".join(f"{r:.0f}" for r in deciles) + f"; the process exited {exited - reached(n):.1f} s after "
                     f"the last row was saved (not counted as pace)"),
            row("rehearsal: embed memory at 10 % / 90 % of rows, peak", round(rss_at(0.9), 2), "GB RSS at 90 %",
                note=f"{rss_at(0.1):.2f} GB at 10 %, peak {peak_kb / 1e6:.2f} GB"),
            row("rehearsal: cache file size / layout's prediction", round(size_bytes / predicted, 3), "ratio",
                note=f"{size_bytes / 1e6:.0f} MB on disk; predicted {predicted / 1e6:.0f} MB (features float16 "
                     "+ 256-byte error texts + ids, labels, partition, status)"),
            row(f"rehearsal: `cli.py info` at {n:,} rows", round(info_s, 2), "s", "<= 1 s",
                info_s <= 1 and info.returncode == 0, note="whole command incl. Python start-up"),
            row(f"rehearsal: load_split(train) at {n:,} rows", round(load_s, 2), "s",
                note="stored dtype, non-finite check included")]


@group("rehearsal", order=12)
def run(ctx):
    return bench_rehearsal(ctx.workdir, ctx.quick)
