"""Near-duplicates among the audited rows, with faiss: cosine similarity (inner product of the
L2-normalised features, centred first) of each row to its nearest neighbours.

Centred: the mean feature of the audited rows is subtracted before normalising. Pooled features
after a ReLU all point into one orthant, so raw cosines crowd near 1 (measured on the tiny test
backbone: every nearest neighbour above 0.9999); centred, a copy stands out from its look-alikes.

Search. Exact (faiss.knn over blocks, merged by faiss.ResultHeap) up to AUDIT["dup_exact_max"]
rows; above, an IVF index (AUDIT["dup_index"], built with faiss.index_factory on L2 distance,
which ranks normalised vectors as cosine does) gives candidates whose cosines are then computed
exactly. Its recall@1 against exact search is measured on AUDIT["dup_recall_queries"] sampled rows.
The features are normalised block by block into float32: no full float32 copy is held (the index's
own storage is the one copy, 8 bits a dimension after its PCA).

Pairs. Rows i and j are a duplicate pair when their cosine is at least the threshold and each is
among the other's `neighbours` nearest (1: mutual nearest neighbours). A copy and its original are
mutual nearest neighbours even where many unrelated faces pass the threshold. Pairs join into
groups (connected components); a group counts once in the summary.
"""

import logging
import time

import numpy as np

from cache.errors import UsageError
from cache.layout import UNKNOWN_LABEL
from heads.defaults import AUDIT

log = logging.getLogger(__name__)
PAIR_COLUMNS = ("image_id", "duplicate_id", "similarity", "split", "duplicate_split", "cross_split", "leak",
                "labels_disagree", "group")
BLOCK = 4096  # rows normalised and searched at a time (the search's temporary float32 blocks: 21 MB at 1280-d)


def check_threshold(threshold):
    if not (isinstance(threshold, (int, float)) and 0.0 < threshold <= 1.0):
        raise UsageError(f"--dup-threshold {threshold}: give a cosine similarity in (0, 1]")
    return float(threshold)


class Centred:
    """features [n, ...] (any float dtype, an array or h5py dataset) seen as centred, L2-normalised
    float32 rows [n, D], made block by block: rows(index) -> [len(index), D]."""

    def __init__(self, features):
        self.features = features
        self.n = len(features)
        self.dim = int(np.prod(features.shape[1:]))
        total = np.zeros(self.dim, np.float64)
        for start in range(0, self.n, BLOCK):
            total += np.asarray(features[start:start + BLOCK]).reshape(-1, self.dim).sum(axis=0, dtype=np.float64)
        self.mean = (total / max(self.n, 1)).astype(np.float32)
        self.norms = np.empty(self.n, np.float32)  # of the centred rows
        for start in range(0, self.n, BLOCK):
            block = np.asarray(features[start:start + BLOCK], np.float32).reshape(-1, self.dim) - self.mean
            self.norms[start:start + len(block)] = np.linalg.norm(block, axis=1)

    def rows(self, index):
        import faiss

        block = np.asarray(self.features[index], dtype=np.float32).reshape(-1, self.dim) - self.mean
        block = np.ascontiguousarray(block)
        faiss.normalize_L2(block)
        return block

    def blocks(self):
        for start in range(0, self.n, BLOCK):
            yield start, self.rows(slice(start, min(start + BLOCK, self.n)))


def exact_neighbours(centred, k, queries=None):
    """(similarity float32 [q, k], index int64 [q, k]): the k highest cosines of each query row
    (queries: row indices, default all) among all rows of a Centred, itself included, highest first."""
    import faiss

    queries = np.arange(centred.n) if queries is None else np.asarray(queries)
    similarity = np.empty((len(queries), k), np.float32)
    index = np.empty((len(queries), k), np.int64)
    for q0 in range(0, len(queries), BLOCK):
        rows = queries[q0:q0 + BLOCK]
        query = centred.rows(rows)
        heap = faiss.ResultHeap(len(rows), k, keep_max=True)
        for start, block in centred.blocks():
            found_similarity, found = faiss.knn(query, block, min(k, len(block)), metric=faiss.METRIC_INNER_PRODUCT)
            if found.shape[1] < k:
                pad = k - found.shape[1]
                found_similarity = np.pad(found_similarity, ((0, 0), (0, pad)), constant_values=-np.inf)
                found = np.pad(found, ((0, 0), (0, pad)), constant_values=-1 - start)
            heap.add_result(np.ascontiguousarray(found_similarity), np.ascontiguousarray(found + start))
        heap.finalize()
        similarity[q0:q0 + len(rows)], index[q0:q0 + len(rows)] = heap.D, heap.I
    return similarity, index


def ivf_neighbours(centred, k, probes, seed):
    """(similarity, index, the faiss index_factory spec) as exact_neighbours, from AUDIT["dup_index"]
    with `probes` lists probed: the index's k + AUDIT["dup_rerank"] candidates per row, their cosines
    computed exactly. The PCA is trained on AUDIT["dup_pca_train"] sampled rows, the IVF lists on
    AUDIT["dup_train_per_list"] per list after the PCA, block by block: no float32 copy of the
    training sample at full width (at CelebA size it was the audit's peak)."""
    import faiss

    n, dim = centred.n, centred.dim
    lists = max(1, int(round(AUDIT["dup_lists_per_sqrt"] * np.sqrt(n))))
    width = min(AUDIT["dup_pca"], dim)
    spec = AUDIT["dup_index"].format(lists=lists, pca=width)
    index = faiss.index_factory(dim, spec, faiss.METRIC_L2)
    pca = faiss.downcast_VectorTransform(index.chain.at(0))
    ivf = faiss.downcast_index(index.index)
    rng = np.random.default_rng(seed)
    pca.train(centred.rows(np.sort(rng.choice(n, min(n, AUDIT["dup_pca_train"]), replace=False))))
    sample = np.sort(rng.choice(n, min(n, AUDIT["dup_train_per_list"] * lists), replace=False))
    ivf.train(np.concatenate([pca.apply(centred.rows(sample[start:start + BLOCK]))
                              for start in range(0, len(sample), BLOCK)]))
    index.is_trained = True
    for _, block in centred.blocks():
        index.add(block)
    faiss.extract_index_ivf(index).nprobe = probes
    wanted = min(n, k + AUDIT["dup_rerank"])
    similarity = np.empty((n, k), np.float32)
    found = np.empty((n, k), np.int64)
    for start, block in centred.blocks():
        _, candidates = index.search(block, wanted)
        exact = _cosines(centred, block, candidates)
        order = np.argsort(-exact, axis=1, kind="stable")[:, :k]
        similarity[start:start + len(block)] = np.take_along_axis(exact, order, axis=1)
        found[start:start + len(block)] = np.take_along_axis(candidates, order, axis=1)
    return similarity, found, spec


def _cosines(centred, queries, candidates, block=1024):
    """float32 [q, c]: cosine of each centred, normalised query row with its candidate rows (-inf
    for the index's -1: no candidate). q . (x - mean) / |x - mean| = (q . x - q . mean) / |x - mean|:
    the candidates' stored rows are gathered once, without centring or normalising them."""
    out = np.full(candidates.shape, -np.inf, np.float32)
    for start in range(0, len(candidates), block):
        found = candidates[start:start + block]
        query = queries[start:start + block]
        rows = np.asarray(centred.features[np.maximum(found, 0).ravel()], np.float32)
        rows = rows.reshape(*found.shape, centred.dim)
        dots = np.matmul(rows, query[:, :, None])[..., 0] - (query @ centred.mean)[:, None]
        cosines = dots / np.maximum(centred.norms[np.maximum(found, 0)], 1e-30)
        out[start:start + block] = np.where(found >= 0, cosines, -np.inf)
    return out


def _without_self(similarity, index, k, own=None):
    """Drop each row's own index (own: the rows' indices, default 0..q-1) from its neighbour list
    (or the last, when a tie pushed it out)."""
    rows = (np.arange(len(index)) if own is None else np.asarray(own))[:, None]
    is_self = index == rows
    missing = ~is_self.any(axis=1)
    is_self[missing, -1] = True
    keep = ~is_self
    return similarity[keep].reshape(len(index), k), index[keep].reshape(len(index), k)


def nearest_neighbours(features, k, search, probes, seed):
    """(similarity [n, k], index [n, k], record): each row's k nearest other rows, highest cosine
    first; search "exact", "ivf" or "auto" (exact up to AUDIT["dup_exact_max"] rows); record says
    how: {"search", "seconds", and for ivf "index", "probes", "recall_at_1", "recall_queries"}."""
    centred = Centred(features)
    n = centred.n
    if search == "auto":
        search = "exact" if n <= AUDIT["dup_exact_max"] else "ivf"
    began = time.perf_counter()
    if search == "exact":
        similarity, index = exact_neighbours(centred, k + 1)
        record = {"search": "exact"}
    else:
        similarity, index, spec = ivf_neighbours(centred, k + 1, probes, seed)
        record = {"search": "ivf", "index": spec, "probes": probes}
    record["seconds"] = round(time.perf_counter() - began, 3)
    similarity, index = _without_self(similarity, index, k)
    if search == "ivf":
        queries = np.sort(np.random.default_rng([seed, 1]).choice(n, min(n, AUDIT["dup_recall_queries"]),
                                                                  replace=False))
        truth_similarity, truth = _without_self(*exact_neighbours(centred, k + 1, queries), k, own=queries)
        agree = (index[queries, 0] == truth[:, 0]) | (similarity[queries, 0] >= truth_similarity[:, 0] - 1e-6)
        record.update(recall_at_1=float(agree.mean()), recall_queries=int(len(queries)))
    log.info("nearest neighbours of %d rows: %s search, %.1f s", n, record["search"], record["seconds"])
    return similarity, index, record


def duplicate_pairs(rows, similarity, index, threshold, neighbours):
    """DataFrame of PAIR_COLUMNS: pairs with cosine >= threshold, each among the other's
    `neighbours` nearest. image_id is the member --exclude would leave out: the train row of a
    cross-split pair, else the later row. cross_split: the splits differ; leak: one is train and the
    other val or test; labels_disagree: the audited attributes whose given labels differ
    (space-separated, "" when none); group: connected component of the pairs, numbered from 1."""
    import pandas as pd
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    n = len(index)
    near = index[:, :neighbours]
    i = np.repeat(np.arange(n), near.shape[1])
    j = near.ravel()
    sim = similarity[:, :neighbours].ravel()
    chosen = (sim >= threshold) & (j >= 0) & (i < j)
    i, j, sim = i[chosen], j[chosen], sim[chosen]
    mutual = (index[j, :neighbours] == i[:, None]).any(axis=1)
    i, j, sim = i[mutual], j[mutual], sim[mutual]
    _, component = connected_components(coo_matrix((np.ones(len(i)), (i, j)), shape=(n, n)), directed=False)
    in_pair = np.unique(np.concatenate([i, j]))
    group_number = {c: g + 1 for g, c in enumerate(dict.fromkeys(component[np.sort(in_pair)]))}
    splits = rows.splits
    train_first = (splits[i] == "train") & (splits[j] != "train")
    first, second = np.where(train_first, i, j), np.where(train_first, j, i)
    known = (rows.labels[first] != UNKNOWN_LABEL) & (rows.labels[second] != UNKNOWN_LABEL)
    differ = (rows.labels[first] != rows.labels[second]) & known  # both labelled, and differently
    frame = pd.DataFrame({
        "image_id": [rows.image_ids[a] for a in first], "duplicate_id": [rows.image_ids[b] for b in second],
        "similarity": sim.astype(float), "split": splits[first], "duplicate_split": splits[second],
        "cross_split": splits[first] != splits[second],
        "leak": (splits[first] == "train") != (splits[second] == "train"),
        "labels_disagree": [" ".join(a for a, d in zip(rows.attributes, row) if d) for row in differ],
        "group": [group_number[component[a]] for a in first]})
    frame = frame.sort_values(["leak", "cross_split", "similarity"], ascending=[False, False, False], kind="stable")
    return frame[list(PAIR_COLUMNS)].reset_index(drop=True)


def duplicate_summary(pairs, similarity, threshold, neighbours, record):
    """summary.json's "duplicates": counts (groups once), the rule, the search record and the
    histogram of nearest-neighbour cosines (AUDIT["dup_bins"] bins over [-1, 1])."""
    groups = pairs.groupby("group")
    counts, edges = np.histogram(np.clip(similarity[:, 0], -1.0, 1.0), bins=AUDIT["dup_bins"], range=(-1.0, 1.0))
    return {"threshold": threshold, "neighbours": neighbours, **record,
            "pairs": int(len(pairs)), "groups": int(pairs.group.nunique()),
            "rows_in_groups": int(len(set(pairs.image_id) | set(pairs.duplicate_id))),
            "leak_groups": int(groups.leak.any().sum()) if len(pairs) else 0,
            "cross_split_groups": int(groups.cross_split.any().sum()) if len(pairs) else 0,
            "label_disagreeing_groups": int(groups.labels_disagree.apply(lambda s: (s != "").any()).sum())
            if len(pairs) else 0,
            "nearest_similarity": {"edges": [round(float(e), 6) for e in edges], "counts": counts.tolist(),
                                   "quantiles": {str(q): float(np.quantile(similarity[:, 0], q))
                                                 for q in (0.5, 0.9, 0.99, 0.999)}}}


def find_duplicates(rows, threshold=AUDIT["dup_threshold"], neighbours=AUDIT["dup_neighbours"],
                    search=AUDIT["dup_search"], probes=AUDIT["dup_probes"], seed=0):
    """(pairs DataFrame, summary dict) for the audited rows (module docstring)."""
    threshold = check_threshold(threshold)
    if neighbours < 1:
        raise UsageError(f"--dup-neighbours {neighbours}: give 1 or more")
    if search not in ("auto", "exact", "ivf"):
        raise UsageError(f"--dup-search {search}: give auto, exact or ivf")
    k = min(max(neighbours, AUDIT["dup_k"]), len(rows) - 1)
    if k < 1:
        raise UsageError("near-duplicate search needs at least 2 rows")
    similarity, index, record = nearest_neighbours(rows.features, k, search, probes, seed)
    pairs = duplicate_pairs(rows, similarity, index, threshold, min(neighbours, k))
    return pairs, duplicate_summary(pairs, similarity, threshold, neighbours, record)
