"""`python -m bench.audit_peak CACHE OUT [SEARCH]`: run `audit` (Male, Smiling, Young; default
settings) on CACHE in this fresh process and print one JSON line: the summary's seconds and
duplicates record, and the process's resident memory in MB before (every library the audit uses
imported and TensorFlow started) and at its peak (the kernel's VmHWM)."""

import json
import sys


def memory():
    """{"VmRSS": MB, "VmHWM": MB} of this process."""
    fields = dict(line.split(":", 1) for line in open("/proc/self/status").read().splitlines()
                  if line.startswith(("VmRSS", "VmHWM")))
    return {k: int(v.split()[0]) // 1024 for k, v in fields.items()}


def main(cache, out, search="auto"):
    import cleanlab.filter  # noqa: F401  (the baseline holds every library the audit loads)
    import faiss  # noqa: F401
    import keras  # noqa: F401
    import sklearn.model_selection  # noqa: F401
    import tensorflow as tf

    from heads.audit.run import AuditSpec, run_audit
    from heads.run.task import TaskSpec
    tf.constant(1.0) + 1
    before = memory()["VmRSS"]
    summary = run_audit(TaskSpec(caches=[cache], attributes="Male,Smiling,Young", stream="never"),
                        AuditSpec(duplicates={"search": search}), out)
    print(json.dumps({"seconds": summary["seconds"], "duplicates": {k: v for k, v in summary["duplicates"].items()
                                                                    if k != "nearest_similarity"},
                      "labels": {a: s["out_of_fold"]["accuracy"] for a, s in summary["labels"].items()},
                      "before_mb": before, "peak_mb": memory()["VmHWM"]}))


if __name__ == "__main__":
    main(*sys.argv[1:])
