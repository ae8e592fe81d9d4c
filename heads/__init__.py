"""Heads trained on the feature cache, in rooms by job: `kinds` (the head interface, its registry and
every kind), `run` (task, transforms, fit, sweep, scoring, run directories, evaluate, compare),
`serve` (predict, export), `look` (tables, plots, TensorBoard, projector, the HTML page); plus the
metrics table (`metrics`), shared feature arithmetic (`scaling`) and every default (`defaults`)."""

from cache.exports import lazy_exports

# The Python API (heads on a cache): documented in docs/reference/api.md, tested in tests/test_api.py.
PUBLIC = {
    "TaskSpec": "heads.run.task",
    "train_head": "heads.api",
    "run_kinds": "heads.api",
    "evaluate": "heads.api",
    "compare": "heads.api",
    "predict": "heads.api",
    "worst_errors": "heads.api",
    "image_grid": "heads.api",
    "plot_history": "heads.api",
    "metrics_table": "heads.api",
}
__all__ = list(PUBLIC)
__getattr__, __dir__ = lazy_exports(__name__, PUBLIC)
