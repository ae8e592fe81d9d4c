"""baselines: logistic regression on the CelebA-size planted cache."""

import time

from bench.common import HEAD_ATTRIBUTES, group, machine_name, row


def bench_baselines(features, labels, splits):
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from embed.sample import CELEBA_ATTRIBUTES
    names = list(CELEBA_ATTRIBUTES)
    n_train, n_val = splits[0], splits[1]
    X, Xv = features[:n_train], features[n_train:n_train + n_val]
    began = time.perf_counter()
    accuracies = []
    for a in HEAD_ATTRIBUTES:
        j = names.index(a)
        model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000)).fit(X, labels[:n_train, j])
        accuracies.append(f"{a} {100 * model.score(Xv, labels[n_train:n_train + n_val, j]):.2f}")
    seconds = time.perf_counter() - began
    return [row("baselines: logistic regression, 3 attrs", round(seconds, 2), "s",
                note="val %: " + ", ".join(accuracies) + f"; on {machine_name()}")]


@group("baselines", order=4)
def run(ctx):
    features, labels = ctx.planted
    return bench_baselines(features, labels, ctx.size["splits"])
