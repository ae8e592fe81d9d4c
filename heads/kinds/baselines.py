"""scikit-learn baselines on the cached features, one binary classifier per attribute.

Kinds: majority (DummyClassifier, most frequent class), logreg (StandardScaler +
LogisticRegression, C), linear_svm (StandardScaler + LinearSVC, C; its score is
sigmoid(decision_function), not a calibrated probability, so its threshold 0.5 is the SVM's own
decision), knn (StandardScaler + KNeighborsClassifier, k; slow on a full-size cache).
The fitted estimators are saved with joblib (a pickle: load only files you made); the run directory
records their sha256 and `heads.run.rundir` checks it before loading.
"""

from pathlib import Path

import numpy as np

from cache.errors import UserError
from heads.defaults import SKLEARN
from heads.kinds.base import Head, labelled, register

ESTIMATORS_FILE = "estimators.joblib"


def positive_scores(estimator, X):
    """Positive-class score in [0, 1] per row (probability, or sigmoid of an SVM's margin)."""
    if hasattr(estimator, "predict_proba"):
        return estimator.predict_proba(X)[:, list(estimator.classes_).index(1)]
    return 1.0 / (1.0 + np.exp(-estimator.decision_function(X)))


class EstimatorsHead(Head):
    """A head made of one fitted scikit-learn estimator per attribute (estimators_), pickled."""
    files = code_files = (ESTIMATORS_FILE,)

    def predict_proba(self, X):
        X = np.asarray(X, np.float32)
        self.check_width(X)
        return np.stack([positive_scores(e, X) for e in self.estimators_], axis=1).astype(np.float32)

    def save(self, directory):
        import joblib
        joblib.dump(self.estimators_, Path(directory) / ESTIMATORS_FILE)

    @classmethod
    def load(cls, directory, settings, attributes, trust_model=False):
        """Unpickle the estimators; the caller (`heads.run.rundir.Run.load`) has checked their sha256."""
        import joblib
        head = cls.from_record(settings)
        head.estimators_ = joblib.load(Path(directory) / ESTIMATORS_FILE)
        head.attributes_, head.n_features_in_ = list(attributes), int(head.estimators_[0].n_features_in_)
        return head


def labelled_rows(X, labels, j):
    """(X, labels of attribute j) on the rows whose label j is known (X itself when all are)."""
    known = labelled(labels[:, j])
    return (X, labels[:, j]) if known.all() else (X[known], labels[known, j])


class SklearnBaseline(EstimatorsHead):
    """fit: one `make_estimator()` per attribute on the train split's rows labelled for it (val is
    not used)."""

    def fit(self, train, val=None, on_epoch=None):
        X = np.asarray(train.features, np.float32)
        self.estimators_ = [self.make_estimator().fit(*labelled_rows(X, train.labels, j))
                            for j in range(len(train.attributes))]
        self.attributes_, self.n_features_in_ = list(train.attributes), X.shape[1]
        return self


@register("majority")
class Majority(SklearnBaseline):
    def __init__(self):
        pass

    def make_estimator(self):
        from sklearn.dummy import DummyClassifier
        return DummyClassifier(strategy="most_frequent")


@register("logreg")
class LogReg(SklearnBaseline):
    def __init__(self, C=SKLEARN["C"], seed=SKLEARN["seed"]):
        self.C = C
        self.seed = seed

    def make_estimator(self):
        from sklearn.linear_model import LogisticRegression
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler
        return make_pipeline(StandardScaler(), LogisticRegression(C=self.C, max_iter=1000, random_state=self.seed))


@register("linear_svm")
class LinearSVM(SklearnBaseline):
    def __init__(self, C=SKLEARN["C"], seed=SKLEARN["seed"]):
        self.C = C
        self.seed = seed

    def make_estimator(self):
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler
        from sklearn.svm import LinearSVC
        return make_pipeline(StandardScaler(), LinearSVC(C=self.C, random_state=self.seed))


@register("knn")
class KNN(SklearnBaseline):
    def __init__(self, k=SKLEARN["k"]):
        self.k = k

    def fit(self, train, val=None, on_epoch=None):
        counts = labelled(train.labels).sum(axis=0)
        if counts.min() < self.k:
            j = int(np.argmin(counts))
            raise UserError(f"knn: --k {self.k} needs at least that many train rows labelled for each attribute; "
                            f"{train.attributes[j]} has {int(counts[j])}: give --k {int(counts[j])} or less")
        return super().fit(train, val, on_epoch)

    def make_estimator(self):
        from sklearn.neighbors import KNeighborsClassifier
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler
        return make_pipeline(StandardScaler(), KNeighborsClassifier(n_neighbors=self.k))
