"""Defaults of the embedding pass that the command line and the library share (no TensorFlow
import here, so `cli.py --help` stays instant)."""

BATCH_SIZE = 64
LOG_EVERY = 30  # seconds between progress lines when stderr is not a terminal
# Pillow's decompression-bomb limit (1 GiB / 4 / 3 pixels); a decoded RGB image of this size takes
# 256 MB, and a pass holds at most one per decode thread.
MAX_PIXELS = 89_478_485
FEATURE_DTYPE = "float16"  # the cache's feature dtype: half the disk and memory of float32
SAMPLE = {"n": 512, "seed": 0}  # make-sample and the demo
