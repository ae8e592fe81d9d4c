"""Runs back to images: `predict` image files, `export` a SavedModel for TF Serving."""
