"""Heads trained on the feature cache, in rooms by job: `kinds` (the head interface, its registry and
every kind), `run` (task, transforms, fit, sweep, scoring, run directories, evaluate, compare),
`serve` (predict, export), `look` (tables, plots, TensorBoard, projector, the HTML page); plus the
metrics table (`metrics`), shared feature arithmetic (`scaling`) and every default (`defaults`)."""
