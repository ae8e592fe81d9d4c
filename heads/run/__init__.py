"""The training workflow on cached features: the task spec and its splits (`task`), feature
transforms, fitting and writing runs (`fit`, `sweep`), scoring (`scoring`), the run directory's
files (`rundir`), and reading runs back (`evaluate`, `compare`)."""
