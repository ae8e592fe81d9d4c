"""The embedding pass in one call, for notebooks and scripts: what `cli.py embed` does, returning
its summary instead of printing it. The command line composes the same stages itself
(`embed.dataset.open_dataset`, `embed.placement.build`, `embed.runner.embed`) so it can speak
between them."""

from embed.backbones import BackboneSpec
from embed.placement import Placement
from embed.runner import EmbedSpec


def embed_images(out, backbone=BackboneSpec(), *, data_dir=None, labels=None, partition=None, images=None,
                 official_split=False, run=EmbedSpec(), placement=Placement(), on_progress=None):
    """Run the frozen backbone once over a labelled image folder into the HDF5 cache `out`
    (resumable: the same call continues an unfinished cache; `run.overwrite` starts afresh).

    backbone: an `embed.BackboneSpec`, or a model string (TF-Hub handle, SavedModel folder,
    keras:<Name>, .keras/.h5 file) for its defaults. data_dir, labels, partition, images,
    official_split: where the images and labels are, as `embed`'s options say (`data_dir`: a
    CelebA folder in the original or the Kaggle layout; `images` alone: every image of a folder,
    unlabelled). on_progress(embed.runner.Progress) after each batch.
    Returns an `embed.runner.EmbedSummary` (rows done, failed rows with their errors); failed images
    are rows marked failed in the cache, not exceptions. Bad input raises `cache.errors.UserError`
    or `UsageError` with a one-line message."""
    from embed.dataset import open_dataset
    from embed.placement import build
    from embed.runner import embed

    spec = BackboneSpec(model=backbone) if isinstance(backbone, str) else backbone
    dataset = open_dataset(data_dir, labels, partition, images, official_split)
    model, engine = build(spec, placement)
    return embed(dataset, model, str(out), run, engine=engine, on_progress=on_progress)
