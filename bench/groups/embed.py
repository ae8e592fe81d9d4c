"""embed: the embed pipeline end to end against the bare backbone, in paired rounds."""

import dataclasses
import os
import time
from pathlib import Path

import numpy as np

from bench.common import SAMPLE, group, row


def sample_and_backbone(workdir, size, placement=None):
    """(ids, Dataset, Backbone, engine): the first size["images"] real sample JPEGs, labelled train,
    and a random-weight EfficientNetV2B0 at size["image_size"] with its engine (`embed.placement.build`;
    default: this machine)."""
    from embed.backbones import BackboneSpec
    from embed.dataset import load_dataset
    from embed.placement import Placement, build

    ids = sorted(os.listdir(SAMPLE / "img_align_celeba"))[:size["images"]]
    labels = Path(workdir) / "labels.csv"
    labels.write_text("image_id,Male,partition\n" + "".join(f"{i},1,0\n" for i in ids))
    dataset = load_dataset(labels, SAMPLE / "img_align_celeba")
    spec = BackboneSpec("keras:EfficientNetV2B0", weights="none", image_size=size["image_size"])
    backbone, engine = build(spec, placement or Placement())
    return ids, dataset, backbone, engine


def bench_embed(workdir, size):
    """Embed pipeline efficiency: end-to-end embed images/s / bare backbone images/s (same batches)."""
    from embed.pipeline import ImageBatches
    from embed.runner import EmbedSpec, embed

    ids, dataset, backbone, _ = sample_and_backbone(workdir, size)
    batches = [b["image"] for b in ImageBatches(dataset.paths, np.arange(len(ids)), backbone.preprocessing,
                                                 size["embed_batch"])]
    backbone.extract(batches[0])

    def bare():
        began = time.perf_counter()
        for images in batches:
            backbone.extract(images).numpy()
        return len(ids) / (time.perf_counter() - began)

    in_backbone = []  # seconds per end-to-end call spent inside the backbone

    def timed_extract(images):
        began = time.perf_counter()
        features = backbone.extract(images)
        features.numpy()  # wait for the result
        in_backbone[-1] += time.perf_counter() - began
        return features

    def end_to_end():
        in_backbone.append(0.0)
        began = time.perf_counter()
        embed(dataset, dataclasses.replace(backbone, extract=timed_extract), Path(workdir) / "embed.h5",
              EmbedSpec(batch_size=size["embed_batch"], overwrite=True))
        seconds = time.perf_counter() - began
        in_backbone[-1] /= seconds
        return len(ids) / seconds

    cold = end_to_end()  # the process's first embed: tf.data and thread start-up included
    # Paired rounds, each a bare pass then an end-to-end pass over the same images: the ratio of a
    # pair cancels the machine's slow drifts, and the median of the pairs ignores a burst of noise.
    rounds = [(bare(), end_to_end()) for _ in range(size["rounds"])]
    bare_rate, pipeline = (float(np.median([r[k] for r in rounds])) for k in (0, 1))
    ratio = float(np.median([e / b for b, e in rounds]))
    spread = ", ".join(f"{b:.1f}/{e:.1f}" for b, e in rounds)
    return [row("embed: bare backbone (EfficientNetV2B0, random weights)", round(bare_rate, 1), "images/s",
                note=f"{len(ids)} real CelebA JPEGs 178x218 -> {size['image_size']}px, batch {size['embed_batch']}; "
                     f"median of {size['rounds']} paired rounds (bare/end-to-end: {spread})"),
            row("embed: end to end (decode, resize, backbone, HDF5)", round(pipeline, 1), "images/s",
                note=f"first call in the process, with start-up: {cold:.1f} images/s"),
            row("embed: pipeline efficiency", round(ratio, 3), "ratio", ">= 0.97", ratio >= 0.97,
                note="median of the rounds' end-to-end / bare ratios"),
            row("embed: share of end-to-end time inside the backbone", round(float(np.median(in_backbone[1:])), 3),
                "ratio", note="median over the rounds; the rest is decoding the first batch, opening the "
                              "cache and the writes. Measured within each call, so immune to drift between calls")]


@group("embed", order=1)
def run(ctx):
    return bench_embed(ctx.workdir, ctx.size)
