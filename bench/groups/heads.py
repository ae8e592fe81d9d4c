"""heads: every Keras head spec against a naive keras Model.fit, paired over seeds, on the CelebA-size planted cache."""

import time

import numpy as np

from bench.common import HEAD_ATTRIBUTES, group, machine_name, matmul_limit, mlp_training_flops, row


def _naive_fit(train, val, attributes, head="mlp:128", seed=0):
    """A plain keras Model.fit of the same model (the reference notebook's way), timed."""
    import keras

    from heads.defaults import KERAS, REFERENCE_EPOCHS
    from heads.kinds.architectures import parse_head
    keras.utils.set_random_seed(seed)
    model = parse_head(head).build(train[0].shape[1], attributes, KERAS["dropout"], KERAS["l2"])
    model.compile(optimizer=keras.optimizers.Adam(KERAS["lr"]), loss={a: "binary_crossentropy" for a in attributes},
                  metrics={a: ["accuracy"] for a in attributes})
    began = time.perf_counter()
    history = model.fit(train[0], {a: train[1][:, j] for j, a in enumerate(attributes)}, batch_size=KERAS["batch_size"],
                        epochs=REFERENCE_EPOCHS, verbose=0,
                        validation_data=(val[0], {a: val[1][:, j] for j, a in enumerate(attributes)}))
    seconds = time.perf_counter() - began
    return seconds, {a: history.history[f"val_{a}_accuracy"][-1] for a in attributes}


def _ours(train, val, attributes, head="mlp:128", seed=0):
    from heads.defaults import REFERENCE_EPOCHS
    from heads.kinds.base import Data
    from heads.kinds.keras_head import KerasHead
    began = time.perf_counter()
    fitted = KerasHead(head=head, seed=seed, epochs=REFERENCE_EPOCHS).fit(Data(*train, tuple(attributes)), Data(*val, tuple(attributes)))
    seconds = time.perf_counter() - began
    return seconds, {a: fitted.history_[-1][f"val_{a}_accuracy"] for a in attributes}


def bench_heads(features, labels, splits, seeds):
    """The reference head against a naive model.fit over `seeds` (paired, alternating order), then
    the linear and the two-layer head, and all 40 attributes."""
    import keras

    from embed.sample import CELEBA_ATTRIBUTES
    from heads.kinds.trainer import aligned
    keras.ops.zeros(1)  # both fits are timed with TensorFlow and Keras imported and started (about 5 s here)
    names = list(CELEBA_ATTRIBUTES)
    n_train, n_val = splits[0], splits[1]
    cols = [names.index(a) for a in HEAD_ATTRIBUTES]
    train_x, val_x = aligned(features[:n_train]), aligned(features[n_train:n_train + n_val])  # as load_split returns them
    train = (train_x, labels[:n_train][:, cols])
    val = (val_x, labels[n_train:n_train + n_val][:, cols])
    ours, naive = [], []
    for i, seed in enumerate(seeds):
        pair = [(ours, _ours), (naive, _naive_fit)]
        for results, fit in pair if i % 2 == 0 else pair[::-1]:
            results.append(fit(train, val, HEAD_ATTRIBUTES, seed=seed))
    ours_s, naive_s = (float(np.median([r[0] for r in results])) for results in (ours, naive))
    # one-sided: how much worse ours is than naive, mean over seeds, worst attribute
    worse = {a: 100 * float(np.mean([n[1][a] - o[1][a] for o, n in zip(ours, naive)])) for a in HEAD_ATTRIBUTES}
    accs = ", ".join(f"{a} {100 * np.mean([o[1][a] for o in ours]):.2f}/{100 * np.mean([n[1][a] for n in naive]):.2f}"
                     for a in HEAD_ATTRIBUTES)
    gap = max(worse.values())
    linear_s, _ = _ours(train, val, HEAD_ATTRIBUTES, head="linear")
    deep = [_ours(train, val, HEAD_ATTRIBUTES, head="mlp:512,128"), _naive_fit(train, val, HEAD_ATTRIBUTES, head="mlp:512,128")]
    deep_speedup = deep[1][0] / deep[0][0]
    all_s, _ = _ours((train_x, labels[:n_train]), (val_x, labels[n_train:n_train + n_val]), names)
    # the machine's limit at the heads' own matmul shapes (a batch of 128 rows through the first layer)
    limit = {width: matmul_limit(128, features.shape[1], width) for width in (128, 512)}
    flops = {spec: mlp_training_flops(n_train, n_val, [features.shape[1], *hidden, len(HEAD_ATTRIBUTES)], 3)
             for spec, hidden in (("mlp:128", [128]), ("mlp:512,128", [512, 128]))}

    def efficiency(spec, seconds, width):
        best = max(limit[width].values())
        achieved = flops[spec] / seconds / 1e9
        return achieved, achieved / best, (f"{flops[spec] / 1e9:.0f} GFLOP (forward, backward, val) in {seconds:.2f} s = "
                                            f"{achieved:.0f} GFLOP/s; limit at [128 x {features.shape[1]}] @ "
                                            f"[{features.shape[1]} x {width}]: numpy {limit[width]['numpy']:.0f}, "
                                            f"TensorFlow {limit[width]['tensorflow']:.0f} GFLOP/s")

    reference, reference_ratio, reference_note = efficiency("mlp:128", ours_s, 128)
    wide, wide_ratio, wide_note = efficiency("mlp:512,128", deep[0][0], 512)
    here = machine_name()
    return [row("heads: naive keras Model.fit (3 attrs, 3 epochs, batch 128)", round(naive_s, 2), "s",
                note=f"{n_train:,} x {features.shape[1]} train rows; median of {len(seeds)} seeds "
                     f"({', '.join(f'{r[0]:.1f}' for r in naive)}); on {here}"),
            row("heads: ours, reference head mlp:128 (3 attrs)", round(ours_s, 2), "s",
                note=f"median of {len(seeds)} seeds ({', '.join(f'{r[0]:.2f}' for r in ours)}); on {here}"),
            row("heads: reference head mlp:128, training FLOP/s / the machine's matmul limit", round(reference_ratio, 3),
                "ratio", note=reference_note),
            row("heads: speed-up over naive fit", round(naive_s / ours_s, 2), "x", ">= 3.5x", naive_s / ours_s >= 3.5),
            row("heads: val accuracy, naive minus ours (mean over seeds, worst attr)", round(gap, 2), "pt",
                "<= 0.5 pt", gap <= 0.5, note=f"val % ours/naive, mean of {len(seeds)} seeds: {accs}"),
            row("heads: ours, linear head (3 attrs)", round(linear_s, 2), "s", note=f"on {here}"),
            row("heads: ours, mlp:512,128 (3 attrs)", round(deep[0][0], 2), "s",
                note=f"naive model.fit of the same model {deep[1][0]:.1f} s; val % ours/naive: "
                     + ", ".join(f"{a} {100 * deep[0][1][a]:.2f}/{100 * deep[1][1][a]:.2f}" for a in HEAD_ATTRIBUTES)
                     + f"; on {here}"),
            row("heads: mlp:512,128, training FLOP/s / the machine's matmul limit", round(wide_ratio, 3), "ratio",
                ">= 0.5", wide_ratio >= 0.5, note=wide_note),
            row("heads: speed-up over naive fit, mlp:512,128", round(deep_speedup, 2), "x", ">= 3x", deep_speedup >= 3),
            row("heads: ours, --attrs all (40 outputs)", round(all_s, 2), "s", note=f"on {here}")]


@group("heads", order=3)
def run(ctx):
    features, labels = ctx.planted
    return bench_heads(features, labels, ctx.size["splits"], ctx.size["seeds"])
