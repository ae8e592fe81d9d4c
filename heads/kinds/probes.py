"""The probe protocols of the self-supervised and vision-language literature, as head kinds.

logreg-cv    The CLIP paper's linear probe: L-BFGS logistic regression per attribute on
             standardized features, C chosen by val accuracy over a log grid (whole decades, then
             quarter decades around the best; ties go to the smaller C), optionally refitted on
             train + val with the chosen C.
knn-cosine   DINO's k-NN evaluation: L2-normalised features, cosine similarity to every train row,
             the top-k neighbours' labels weighted by exp(similarity / T), T = 0.07; k chosen per
             attribute on val from {10, 20, 100, 200}. Computed blockwise with matrix products.
linear-grid  DINOv2's linear evaluation: one linear head per learning rate (13 from 1e-5 to 1e-1),
             trained together in one pass by the fast Keras trainer (each stopping on its own
             with epochs auto); the best on val (mean accuracy) is kept, every rate's val
             accuracy is reported.
Each records what it chose in `selection_` (metrics.json run.selection).
"""

import copy
import json
from pathlib import Path

import numpy as np

from cache.errors import UserError
from heads.defaults import KNN_COSINE, LINEAR_GRID, LOGREG_CV
from heads.kinds.base import Head, labelled, need_val, register
from heads.kinds.baselines import EstimatorsHead, labelled_rows
from heads.kinds.keras_head import MODEL_FILE, KerasHead
from heads.kinds.trainer import Diverged, fit_together
from heads.scaling import l2_normalised


@register("logreg-cv")
class LogRegCV(EstimatorsHead):
    def __init__(self, C_grid=LOGREG_CV["C_grid"], refine_steps=LOGREG_CV["refine_steps"],
                 refit_train_val=LOGREG_CV["refit_train_val"], max_iter=LOGREG_CV["max_iter"],
                 seed=LOGREG_CV["seed"]):
        self.C_grid = C_grid
        self.refine_steps = refine_steps
        self.refit_train_val = refit_train_val
        self.max_iter = max_iter
        self.seed = seed

    def fit(self, train, val=None, on_epoch=None):
        from sklearn.linear_model import LogisticRegression
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler

        need_val(self.kind, val)
        X, Y, X_val, Y_val, attributes = train.features, train.labels, val.features, val.labels, train.attributes
        scaler = StandardScaler().fit(np.asarray(X, np.float32))
        train_x, val_x = scaler.transform(np.asarray(X, np.float32)), scaler.transform(np.asarray(X_val, np.float32))
        self.estimators_, chosen, curves = [], {}, {}
        for j, name in enumerate(attributes):
            # warm_start: each fit starts from the previous one's coefficients, which is what makes a
            # path of C values affordable (increasing C on the coarse grid; refinement from the best)
            model = LogisticRegression(max_iter=self.max_iter, random_state=self.seed, warm_start=True)
            fitted = {}
            attribute_scaler, fit_x, fit_y, score_x, score_y = scaler, *labelled_rows(train_x, Y, j), *labelled_rows(
                val_x, Y_val, j)
            if len(fit_y) < len(Y):  # partly labelled: standardized by its own labelled rows, as if they were all
                raw_x, fit_y = labelled_rows(np.asarray(X, np.float32), Y, j)
                attribute_scaler = StandardScaler().fit(raw_x)
                fit_x = attribute_scaler.transform(raw_x)
                raw_val, score_y = labelled_rows(np.asarray(X_val, np.float32), Y_val, j)
                score_x = attribute_scaler.transform(raw_val)

            def score(C):
                model.set_params(C=C).fit(fit_x, fit_y)
                fitted[C] = (float(model.score(score_x, score_y)), copy.deepcopy(model))

            for C in sorted(float(c) for c in self.C_grid):
                score(C)
            best = max(sorted(fitted), key=lambda c: fitted[c][0])
            model = copy.deepcopy(fitted[best][1])
            for step in self.refine_steps:
                C = float(f"{best * 10.0 ** step:.6g}")
                if C not in fitted:
                    score(C)
            best = max(sorted(fitted), key=lambda c: fitted[c][0])  # ties: the smallest C wins
            if self.refit_train_val:
                estimator = make_pipeline(StandardScaler(), LogisticRegression(
                    C=best, max_iter=self.max_iter, random_state=self.seed))
                refit_x, refit_y = labelled_rows(np.concatenate([X, X_val]).astype(np.float32),
                                                 np.concatenate([Y, Y_val]), j)
                estimator.fit(refit_x, refit_y)
            else:
                estimator = make_pipeline(attribute_scaler, fitted[best][1])
            chosen[name], curves[name] = best, {f"{c:g}": a for c, (a, _) in sorted(fitted.items())}
            self.estimators_.append(estimator)
        self.attributes_, self.n_features_in_ = list(attributes), np.asarray(X).shape[1]
        self.selection_ = {"C": chosen, "val_accuracy_by_C": curves, "refit_train_val": self.refit_train_val}
        return self


MATMULS = ("tensorflow", "numpy")


class _Neighbours:
    """Blockwise cosine k-NN over L2-normalised train features (float32 [N, D]) and labels [N, k].

    Each block of queries is one matrix product with every train row, then the top k. The product
    runs on `matmul` ("tensorflow": its CPU kernel, or "numpy": numpy's BLAS, whichever is faster on
    this machine; `choose_matmul` measures both). Both read the same train matrix (TensorFlow views
    numpy's memory), and the top-k and votes are the same TensorFlow graph after either.
    """

    def __init__(self, train, labels, ks, temperature, block_rows, matmul="tensorflow"):
        import tensorflow as tf

        from heads.kinds.trainer import aligned, as_tensor
        self.train_np = aligned(np.asarray(train, np.float32))
        self.train = as_tensor(self.train_np)
        known = labelled(labels)
        self.labels = tf.constant(np.where(known, labels, 0).astype(np.float32))
        # attributes some train rows are unlabelled for: each votes among its own labelled rows
        self.partial = [(j, tf.constant(known[:, j])) for j in np.flatnonzero(~known.all(axis=0))]
        self.ks, self.temperature, self.block_rows, self.matmul = sorted(ks), temperature, block_rows, matmul
        # one trace each, whatever the block's rows (the last block is smaller; choose_matmul times 128)
        queries = tf.TensorSpec([None, self.train_np.shape[1]], tf.float32)
        similarities = tf.TensorSpec([None, len(self.train_np)], tf.float32)
        self._tf_block = tf.function(lambda q: self._votes(tf.matmul(q, self.train, transpose_b=True)),
                                     input_signature=[queries], autograph=False)
        self._votes_of = tf.function(self._votes, input_signature=[similarities], autograph=False)

    def _votes(self, similarity):
        """Vote shares [len(ks), B, k] from similarities [B, N]: for each k, sum of exp(sim / T) *
        label over the top k neighbours divided by the sum of their weights; for an attribute with
        unlabelled train rows, the top k among the rows labelled for it."""
        import tensorflow as tf
        top, index = tf.math.top_k(similarity, k=max(self.ks), sorted=True)
        weights = tf.exp(top / self.temperature)
        votes = tf.gather(self.labels, index) * weights[..., None]  # [B, kmax, attributes]
        cumulative_votes, cumulative_weights = tf.cumsum(votes, axis=1), tf.cumsum(weights, axis=1)
        shares = tf.stack([cumulative_votes[:, k - 1] / cumulative_weights[:, k - 1, None] for k in self.ks])
        if not self.partial:
            return shares
        columns = tf.unstack(shares, num=self.labels.shape[1], axis=2)
        for j, known in self.partial:
            top, index = tf.math.top_k(tf.where(known[None, :], similarity, -np.inf), k=max(self.ks), sorted=True)
            weights = tf.exp(top / self.temperature)  # 0 for an unlabelled row
            votes = tf.cumsum(tf.gather(self.labels[:, j], index) * weights, axis=1)
            weights = tf.cumsum(weights, axis=1)
            columns[j] = tf.stack([votes[:, k - 1] / weights[:, k - 1] for k in self.ks])
        return tf.stack(columns, axis=2)

    def _numpy_product(self, queries, out):
        """queries [B, D] @ train.T into `out` (64-byte aligned [>= B, N]), as a tensor over it."""
        from heads.kinds.trainer import as_tensor
        np.matmul(queries, self.train_np.T, out=out[:len(queries)])
        return as_tensor(out[:len(queries)])

    def choose_matmul(self, queries, rows=64, margin=1.15):
        """Time a block of `rows` queries on each matmul (after a warm-up call each: tracing, threads)
        and keep numpy's if it is at least `margin` times faster (a near tie keeps TensorFlow, so the
        choice does not flip with the machine's noise); returns {"numpy": s, "tensorflow": s}. Too
        few queries to time: TensorFlow, {}."""
        import time

        from cache.reader import aligned_empty
        if len(queries) < 4 * rows:
            return {}
        block = np.ascontiguousarray(queries[:rows], np.float32)
        out = aligned_empty((rows, len(self.train_np)), np.float32)
        timed = {}
        for name, scored in (("tensorflow", lambda: self._tf_block(block).numpy()),
                             ("numpy", lambda: self._votes_of(self._numpy_product(block, out)).numpy())):
            scored()
            began = time.perf_counter()
            scored()
            timed[name] = time.perf_counter() - began
        self.matmul = "numpy" if timed["numpy"] * margin < timed["tensorflow"] else "tensorflow"
        return timed

    def vote_shares(self, queries):
        """float32 [len(ks), n, k] for L2-normalised queries [n, D]."""
        from cache.reader import aligned_empty
        queries = np.asarray(queries, np.float32)
        blocks, out = [], None
        for i in range(0, len(queries), self.block_rows):
            block = queries[i:i + self.block_rows]
            if self.matmul == "numpy":
                out = out if out is not None else aligned_empty((self.block_rows, len(self.train_np)), np.float32)
                blocks.append(self._votes_of(self._numpy_product(block, out)).numpy())
            else:
                blocks.append(self._tf_block(block).numpy())
        return np.concatenate(blocks, axis=1) if blocks else np.zeros((len(self.ks), 0, self.labels.shape[1]), np.float32)


@register("knn-cosine")
class KnnCosine(Head):
    """Stores the normalised train features (float16: the values it scores with) and labels in the
    run: about 0.4 GB for CelebA's 162,770 train rows of 1280-d features."""
    files = ("knn_features.npy", "knn_labels.npy", "knn_k.json")

    def __init__(self, ks=KNN_COSINE["ks"], temperature=KNN_COSINE["temperature"],
                 block_rows=KNN_COSINE["block_rows"]):
        self.ks = ks
        self.temperature = temperature
        self.block_rows = block_rows

    def _index(self, train, labels, matmul="tensorflow"):
        """Index L2-normalised train features, rounded to float16 as the run stores them (so a
        loaded run scores exactly as the fitted one), products on `matmul`."""
        train = np.asarray(train, np.float16).astype(np.float32)
        if max(self.ks) > len(train):
            raise UserError(f"knn-cosine: k up to {max(self.ks)} needs at least that many train rows, "
                            f"there are {len(train)}")
        counts = labelled(labels).sum(axis=0)
        if counts.min() < max(self.ks):
            j = int(np.argmin(counts))
            raise UserError(f"knn-cosine: k up to {max(self.ks)} needs at least that many train rows labelled for "
                            f"each attribute; {self.attributes_[j]} has {int(counts[j])}")
        self.train_, self.labels_ = train, np.asarray(labels, np.uint8)
        self._neighbours = _Neighbours(train, self.labels_, self.ks, self.temperature, self.block_rows, matmul)

    def fit(self, train, val=None, on_epoch=None):
        need_val(self.kind, val)
        attributes = self.attributes_ = list(train.attributes)
        self._index(l2_normalised(train.features), train.labels)
        queries = l2_normalised(val.features)
        timed = self._neighbours.choose_matmul(queries)
        self.matmul_ = self._neighbours.matmul
        shares = self._neighbours.vote_shares(queries)
        known = labelled(val.labels)
        accuracy = {k: (((shares[i] >= 0.5) == (np.asarray(val.labels) == 1)) & known).sum(axis=0)
                    / np.maximum(known.sum(axis=0), 1) for i, k in enumerate(sorted(self.ks))}
        self.k_ = {}
        for j, name in enumerate(attributes):
            self.k_[name] = max(sorted(self.ks), key=lambda k: accuracy[k][j])  # ties: the smallest k
        self.attributes_, self.n_features_in_ = list(attributes), np.asarray(train.features).shape[1]
        self.selection_ = {"k": self.k_, "temperature": self.temperature,
                           "val_accuracy_by_k": {a: {str(k): float(accuracy[k][j]) for k in sorted(self.ks)}
                                                 for j, a in enumerate(attributes)},
                           "matmul": self.matmul_, "matmul_seconds": {k: round(v, 4) for k, v in timed.items()}}
        self.val_proba_ = self._chosen(shares)  # scoring val again would repeat the whole search
        return self

    def _chosen(self, shares):
        """float32 [n, k]: each attribute's vote shares at its chosen k, from shares [len(ks), n, k]."""
        column = {k: i for i, k in enumerate(sorted(self.ks))}
        return np.stack([shares[column[self.k_[a]], :, j] for j, a in enumerate(self.attributes_)], axis=1)

    def predict_proba(self, X):
        X = np.asarray(X)
        self.check_width(X)
        return self._chosen(self._neighbours.vote_shares(l2_normalised(X)))

    def save(self, directory):
        directory = Path(directory)
        np.save(directory / "knn_features.npy", self.train_.astype(np.float16))
        np.save(directory / "knn_labels.npy", self.labels_)
        (directory / "knn_k.json").write_text(json.dumps({"k": self.k_, "matmul": self.matmul_}) + "\n")

    @classmethod
    def load(cls, directory, settings, attributes, trust_model=False):
        directory = Path(directory)
        head = cls.from_record(settings)
        path = directory / "knn_k.json"
        chosen = json.loads(path.read_text())
        if isinstance(chosen, dict) and not isinstance(chosen.get("k"), dict):  # before the matmul was chosen
            chosen = {"k": chosen, "matmul": "tensorflow"}
        if not isinstance(chosen, dict) or chosen.get("matmul") not in MATMULS or not isinstance(chosen.get("k"), dict):
            raise UserError(f"{path}: expected {{\"k\": {{attribute: k}}, \"matmul\": {' or '.join(MATMULS)}}}")
        head.k_, head.matmul_, head.attributes_ = chosen["k"], chosen["matmul"], list(attributes)
        head._index(np.load(directory / "knn_features.npy").astype(np.float32), np.load(directory / "knn_labels.npy"),
                    head.matmul_)
        head.attributes_, head.n_features_in_ = list(attributes), head.train_.shape[1]
        return head


@register("linear-grid")
class LinearGrid(Head):
    files = (MODEL_FILE,)

    def __init__(self, lrs=LINEAR_GRID["lrs"], epochs=LINEAR_GRID["epochs"], patience=LINEAR_GRID["patience"],
                 max_epochs=LINEAR_GRID["max_epochs"], batch_size=LINEAR_GRID["batch_size"],
                 class_weight=LINEAR_GRID["class_weight"], seed=LINEAR_GRID["seed"]):
        self.lrs = lrs
        self.epochs = epochs
        self.patience = patience
        self.max_epochs = max_epochs
        self.batch_size = batch_size
        self.class_weight = class_weight
        self.seed = seed

    def _linear(self, lr):
        return KerasHead(head="linear", dropout=0.0, l2=0.0, lr=lr, epochs=self.epochs, patience=self.patience,
                         max_epochs=self.max_epochs, batch_size=self.batch_size, class_weight=self.class_weight,
                         seed=self.seed)

    def fit(self, train, val=None, on_epoch=None):
        need_val(self.kind, val)
        attributes = train.attributes
        heads = [self._linear(lr) for lr in self.lrs]
        fit_together(heads, train, val, diverged="keep")
        # each head's val accuracy at the epoch whose weights it keeps (the last, or with epochs auto the best);
        # a rate whose training diverged scores nothing
        scores = [-np.inf if h.diverged_ else np.mean([h.history_[h.best_epoch_ - 1][f"val_{a}_accuracy"]
                                                         for a in attributes]) for h in heads]
        if all(h.diverged_ for h in heads):
            raise Diverged(f"linear-grid: the training loss became NaN or inf at every rate of its grid "
                           f"({min(self.lrs):g} to {max(self.lrs):g}): the features' scale is likely too large; "
                           "use --features standardize")
        best = int(np.argmax(scores))  # ties: the first (smallest) rate
        self.best_ = heads[best]
        self.history_, self.best_epoch_ = self.best_.history_, self.best_.best_epoch_
        self.attributes_, self.n_features_in_ = list(attributes), self.best_.n_features_in_
        self.selection_ = {"lr": float(self.lrs[best]),
                           "val_accuracy_by_lr": {f"{lr:g}": None if h.diverged_ else float(s)
                                                  for lr, s, h in zip(self.lrs, scores, heads)},
                           "epochs_by_lr": {f"{lr:g}": len(h.history_) for lr, h in zip(self.lrs, heads)}}
        return self

    def predict_proba(self, X):
        return self.best_.predict_proba(X)

    def save(self, directory):
        self.best_.save(directory)

    @classmethod
    def load(cls, directory, settings, attributes, trust_model=False):
        head = cls.from_record(settings)
        head.best_ = KerasHead.load(directory, {"head": "linear"}, attributes, trust_model)
        head.attributes_, head.n_features_in_ = list(attributes), head.best_.n_features_in_
        return head

    def export_model(self):
        return self.best_.model_
