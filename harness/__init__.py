"""What tests and benchmarks share, so neither imports the other: generated caches and models
(`caches`), fault injection for `embed` (`faults`), and how many trials a run makes (`trials`).
Test and benchmark support only: not part of the installed package."""
