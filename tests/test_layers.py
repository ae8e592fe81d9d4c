"""Inner layers in the cache (`embed --layers NAME[:POOL]`): stored beside the features from the same
pass, with every guarantee the features have (resume after kill -9, shards + merge, views, retry),
checked on open, shown by `info`; heads train on pooled layers (`--input`, several side by side)
and predict from images agrees; bad usage is one line."""

import json
import re
import shutil
import signal
from pathlib import Path

import h5py
import numpy as np
import pytest
import tensorflow as tf
from click.testing import CliRunner

import cli
from harness.faults import N_IMAGES, embed_args, rows_done, run_cli, start_embed, wait_until
from heads.run.evaluate import split_predictions
from heads.serve.predict import predict_images
from tests.conftest import assert_served_from_images_as_evaluated, copy_dataset

pytestmark = pytest.mark.slow
# the fault setup's tiny.keras: conv2d (15 x 15 x 8) -> global_average_pooling2d (8) -> embedding (256)
LAYERS = ["--layers", "conv2d:none,global_average_pooling2d,embedding"]
STORED = ("layers/conv2d", "layers/global_average_pooling2d", "layers/embedding")


def invoke(*args):
    return CliRunner().invoke(cli.main, [str(a) for a in args])


def datasets(path, names=("features", *STORED, "status", "error")):
    with h5py.File(path, "r") as f:
        return {name: f[name][:] for name in names}


@pytest.fixture(scope="module")
def layered(fault_setup, tmp_path_factory):
    """One uninterrupted embed of the fault setup's 200 images with three layers stored (batch 4)."""
    out = tmp_path_factory.mktemp("layers") / "c.h5"
    result = invoke(*embed_args(fault_setup, out), *LAYERS)
    assert result.exit_code == 0, result.output
    assert "note: the layout predicts" in result.stderr and "conv2d none [15, 15, 8]" in result.stderr
    return out


def test_layers_are_stored_beside_the_features_and_described(layered, fault_setup):
    with h5py.File(layered, "r") as f:
        assert json.loads(f.attrs["layers"]) == [
            {"name": "conv2d", "pool": "none", "shape": [15, 15, 8]},
            {"name": "global_average_pooling2d", "pool": "gap", "shape": [8]},
            {"name": "embedding", "pool": "gap", "shape": [256]}]
        spatial, pooled = f["layers/conv2d"], f["layers/global_average_pooling2d"][:].astype(np.float32)
        assert spatial.shape == (N_IMAGES, 15, 15, 8) and spatial.chunks[1:] == (15, 15, 8)
        np.testing.assert_allclose(spatial[:].astype(np.float32).mean(axis=(1, 2)), pooled, rtol=2e-3, atol=2e-3)
        np.testing.assert_allclose(f["layers/embedding"][:].astype(np.float32), f["features"][:].astype(np.float32),
                                   rtol=2e-3, atol=2e-3)  # the cut layer again, from a graph with more outputs
    info = invoke("info", layered)
    assert "layer: conv2d pooled none, 200 x 15 x 15 x 8 float16, 720 kB" in info.output  # a unit that fits
    assert json.loads(invoke("info", layered, "--json").output)["layers"][1]["bytes"] == N_IMAGES * 8 * 2


def test_grid_pooling_averages_each_cell_as_adaptive_pooling_does():
    from embed.backbones import _pooled
    x = np.random.default_rng(0).standard_normal((2, 7, 5, 3)).astype(np.float32)
    got = _pooled(tf.constant(x), "grid:3").numpy()
    for i in range(3):
        for j in range(3):
            cell = x[:, i * 7 // 3:-(-(i + 1) * 7 // 3), j * 5 // 3:-(-(j + 1) * 5 // 3)]
            np.testing.assert_allclose(got[:, i, j], cell.mean(axis=(1, 2)), rtol=1e-6, atol=1e-6)
    assert _pooled(tf.constant(x), "gap").shape == (2, 3) and _pooled(tf.constant(x), "none").shape == x.shape


def test_kill_9_resume_and_shards_give_the_uninterrupted_cache_bitwise(layered, fault_setup, tmp_path):
    """Same machine, same batches, same graph: bit for bit, layers included."""
    out = tmp_path / "killed.h5"
    proc = start_embed(fault_setup, out, *LAYERS)
    wait_until(lambda: rows_done(out) >= N_IMAGES // 3, proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert 0 < rows_done(out) < N_IMAGES, "the kill did not land mid-run"
    resumed = invoke(*embed_args(fault_setup, out), *LAYERS)
    assert resumed.exit_code == 0 and "resumed at row" in resumed.output, resumed.output
    expected = datasets(layered)
    assert not differences_of(datasets(out), expected)
    shards = []
    for index in range(2):
        shards.append(tmp_path / f"s{index}.h5")
        assert invoke(*embed_args(fault_setup, shards[-1]), *LAYERS, "--shard", f"{index}/2").exit_code == 0
    assert invoke("merge", *shards, "--out", tmp_path / "merged.h5").exit_code == 0
    assert not differences_of(datasets(tmp_path / "merged.h5"), expected)
    other = invoke(*embed_args(fault_setup, out), "--layers", "conv2d:gap")
    assert other.exit_code == 1 and "backbone.layers" in other.output  # resume refuses other layers


def differences_of(a, b):
    return [name for name in b if a[name].dtype != b[name].dtype or a[name].tobytes() != b[name].tobytes()]


def test_views_and_retry_failed_carry_the_layers(fault_setup, tmp_path):
    data = copy_dataset(fault_setup.data, tmp_path / "data")
    good = (data / "img_align_celeba" / "000006.jpg").read_bytes()
    (data / "img_align_celeba" / "000006.jpg").write_bytes(b"not an image")
    args = ["embed", "--data-dir", data, "--out", tmp_path / "c.h5", "--model", fault_setup.model, "--value-range",
            "0,1", "--image-size", "32", "--batch-size", "4", "--layers", "conv2d:grid:3", "--views", "flip"]
    assert invoke(*args).exit_code == cli.EXIT_FAILED_ROWS
    with h5py.File(tmp_path / "c.h5", "r") as f:
        assert f["layers_flip/conv2d"].shape == f["layers/conv2d"].shape == (N_IMAGES, 3, 3, 8)
        assert np.isnan(f["layers/conv2d"][5].astype(np.float32)).all() and f["status"][5] == 2
    (data / "img_align_celeba" / "000006.jpg").write_bytes(good)
    assert invoke(*args, "--retry-failed").exit_code == 0
    plain = tmp_path / "plain.h5"
    assert invoke(*[plain if a == tmp_path / "c.h5" else a for a in args]).exit_code == 0
    with h5py.File(tmp_path / "c.h5", "r") as f, h5py.File(plain, "r") as g:
        for name in ("layers/conv2d", "layers_flip/conv2d", "features"):
            assert f[name][5].tobytes() == g[name][5].tobytes(), name  # its whole window recomputed, as a plain run


def test_heads_train_on_pooled_layers_side_by_side_and_predict_agrees(layered, fault_setup, tmp_path):
    run = tmp_path / "run"
    result = invoke("train-heads", layered, "--out", run, "--input", "global_average_pooling2d,embedding",
                    "--attrs", "Male,Smiling", "--epochs", "2", "--features", "standardize", "--no-plots")
    assert result.exit_code == 0, result.output
    config = json.loads((run / "config.json").read_text())
    assert config["inputs"] == ["global_average_pooling2d", "embedding"]
    run_obj, task, _, probabilities = split_predictions(run, "test")
    assert task.test.features.shape[1] == 8 + 256
    with h5py.File(layered, "r") as f:  # the features a head sees: the two layers side by side
        rows = task.test.rows
        joined = np.concatenate([f["layers/global_average_pooling2d"][:][rows], f["layers/embedding"][:][rows]], 1)
    np.testing.assert_array_equal(task.test.features, joined)
    images = [str(fault_setup.data / "img_align_celeba" / task.test.image_ids[i]) for i in range(8)]
    predicted = predict_images(run, images)
    for k, entry in enumerate(predicted):
        for j, name in enumerate(run_obj.attributes):
            assert entry["attributes"][name]["probability"] == pytest.approx(float(probabilities[k, j]), abs=2e-3)
    logreg = invoke("baselines", layered, "--out", tmp_path / "b", "--models", "logreg", "--input", "embedding",
                    "--attrs", "Male", "--no-plots")
    assert logreg.exit_code == 0, logreg.output


@pytest.mark.parametrize("args, message, code", [
    (["--layers", "conv2x:none"], "--layers conv2x: no such layer in", 2),
    (["--layers", "conv2d:max"], "expected NAME[:POOL] with POOL gap, none or grid:K", 2),
    (["--layers", "conv2d:grid:20"], "the layer is 15x15, smaller than a 20x20 grid", 2),
    (["--layers", "conv2d,conv2d:none"], "a layer is named twice", 2),
])
def test_bad_layers_are_one_line(fault_setup, tmp_path, args, message, code):
    result = invoke(*embed_args(fault_setup, tmp_path / "c.h5"), *args)
    assert result.exit_code == code and message in result.output, result.output
    assert result.output.strip().splitlines()[-1].startswith("Error:") and not (tmp_path / "c.h5").exists()
    if "conv2x" in message:
        assert "the nearest: conv2d" in result.output


def test_a_savedmodel_cannot_be_cut_and_a_full_disk_is_refused_up_front(probe_saved_model, fault_setup, tmp_path,
                                                                       monkeypatch):
    result = invoke("embed", "--data-dir", fault_setup.data, "--out", tmp_path / "c.h5", "--model", probe_saved_model,
                    "--image-size", "32", "--layers", "x")
    assert result.exit_code == 2 and "exposes only its outputs; use the Keras form" in result.output
    import embed.runner
    monkeypatch.setattr(embed.runner.shutil, "disk_usage", lambda path: shutil._ntuple_diskusage(10**9, 10**9, 1000))
    result = invoke(*embed_args(fault_setup, tmp_path / "d.h5"), *LAYERS)
    assert result.exit_code == 1 and "with their layers need about" in result.output and "are free" in result.output


def test_an_attentive_probe_trains_on_a_spatial_layer_and_serves_from_images(layered, fault_setup, tmp_path):
    run = tmp_path / "att"
    result = invoke("train-heads", layered, "--out", run, "--input", "conv2d", "--head", "attentive:16,2,2",
                    "--attrs", "Male,Smiling", "--max-epochs", "8", "--features", "standardize", "--no-plots")
    assert result.exit_code == 0, result.output
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["run"]["settings"]["head"] == "attentive:16,2,2"
    fresh = run_cli("evaluate", run, "--split", "test", "--json")  # a new process loads the saved probe
    assert fresh.returncode == 0, fresh.stderr[-1500:]
    task = assert_served_from_images_as_evaluated(run, fault_setup, tmp_path)
    assert task.test.features.shape[1:] == (15, 15, 8)


def test_the_probes_attention_is_multi_head_attentions_arithmetic_without_broadcast_products():
    """QueryAttention (2-D and equal-batch matmuls only) computes keras.layers.MultiHeadAttention's
    arithmetic plus the residual (written out in numpy here: MultiHeadAttention itself would run the
    oneDNN product the layer avoids); a probe saved before it (LearnedQueries and
    MultiHeadAttention) still finds its layers registered under their saved names."""
    import keras

    from heads.kinds.architectures import attentive_layers
    layers = attentive_layers()
    tokens = np.random.default_rng(0).normal(size=(5, 9, 6)).astype(np.float32)
    ours = layers["QueryAttention"](2, 8, 2)  # 2 queries of width 8, 2 heads of 4
    mine = ours(tokens).numpy()
    w = {v.name: v.numpy().astype(np.float64) for v in ours.weights}
    heads = lambda x: x.reshape(*x.shape[:-1], 2, 4)  # [..., H * D] -> [..., H, D]
    query = heads(w["query"] @ w["query_kernel"] + w["query_bias"])  # [Q, H, D]
    key, value = (heads(tokens @ w[f"{n}_kernel"] + w[f"{n}_bias"]) for n in ("key", "value"))  # [B, T, H, D]
    scores = np.einsum("qhd,bthd->bhqt", query, key) / np.sqrt(4)
    weights = np.exp(scores - scores.max(-1, keepdims=True))
    weights /= weights.sum(-1, keepdims=True)
    attended = np.einsum("bhqt,bthd->bqhd", weights, value).reshape(5, 2, 8)
    expected = w["query"] + attended @ w["output_kernel"] + w["output_bias"]
    np.testing.assert_allclose(mine, expected, rtol=1e-5, atol=1e-5)
    for name in ("LearnedQueries", "QueryAttention"):
        assert keras.saving.get_registered_object(f"celeba_heads>{name}") is layers[name]


def test_inputs_the_cache_lacks_or_of_the_wrong_rank_are_one_line(layered, tmp_path):
    for args, message in ((["baselines", "--input", "conv2d"], "majority trains on vectors, and the input is spatial"),
                          (["baselines", "--input", "embeding"], "stores no such layer; it stores embedding"),
                          (["train-heads", "--input", "embedding", "--head", "attentive"], "attends over a spatial"),
                          (["train-heads", "--input", "conv2d,embedding"], "cannot be joined with other layers"),
                          (["train-heads", "--input", "conv2d", "--head", "attentive", "--features", "pca:4"],
                           "--features pca:4 needs vectors"),
                          (["train-heads", "--input", "conv2d", "--head", "attentive", "--views", "augment"],
                           "its mirrored map is not aligned with it")):
        result = invoke(args[0], layered, "--out", tmp_path / "b", *args[1:])
        assert result.exit_code == 2 and message in result.output, (args, result.output)


def test_damaged_layers_fail_in_one_line(layered, tmp_path):
    for damage, message in ((lambda f: f.attrs.modify("layers", "[{\"name\": 3}]"), "attribute layers is not"),
                            (lambda f: _reshape(f, "layers/embedding"), "dataset layers/embedding has shape")):
        path = tmp_path / "d.h5"
        shutil.copy(layered, path)
        with h5py.File(path, "r+") as f:
            damage(f)
        result = invoke("info", path)
        assert result.exit_code == 1 and message in result.output, result.output
        assert result.output.strip().count("\n") == 0


def _reshape(f, name):
    values = f[name][:]
    del f[name]
    f.create_dataset(name, data=values[:-1])


@pytest.fixture(scope="module")
def face_cache(fault_setup, face_cnns, tmp_path_factory):
    """The fault setup's 200 generated images through the shared gender CNN (64 px grayscale), its
    add_3 stored spatial (the input of the net's last residual block) and separable_conv2d_7 (inside it)."""
    root = tmp_path_factory.mktemp("face")
    model = root / "gender.hdf5"
    shutil.copy(face_cnns / "gender_mini_XCEPTION.hdf5", model)
    out = root / "c.h5"
    result = invoke("embed", "--data-dir", fault_setup.data, "--out", out, "--model", model, "--layer", "add_4",
                    "--image-size", "64", "--color", "grayscale", "--value-range", "-1,1", "--batch-size", "16",
                    "--layers", "add_3:none,separable_conv2d_7:none,add_2:gap")
    assert result.exit_code == 0, result.output
    return out, model


def test_tail_retrains_the_backbones_last_block_from_the_cache(face_cache, fault_setup, face_cnns, tmp_path):
    import keras
    cache, _ = face_cache
    run = tmp_path / "tail"
    result = invoke("train-heads", cache, "--out", run, "--input", "add_3", "--head", "tail", "--attrs", "Male,Smiling",
                    "--epochs", "3", "--tail-lr", "1e-3", "--tail-bn", "frozen", "--no-plots")
    assert result.exit_code == 0, result.output
    assert "selection" not in json.loads((run / "metrics.json").read_text())["run"]  # both fixed: one tail, no grid
    trained = keras.saving.load_model(run / "model.keras", compile=False)
    original = keras.saving.load_model(face_cnns / "gender_mini_XCEPTION.hdf5", compile=False)
    tail = trained.get_layer("tail_after_add_3")
    changed = [not np.array_equal(tail.get_layer(n).get_weights()[0], original.get_layer(n).get_weights()[0])
               for n in ("separable_conv2d_7", "conv2d_6")]
    assert all(changed)  # the block's own weights trained, from the pretrained ones
    for name in ("batch_normalization_13", "batch_normalization_12"):  # frozen: scales and statistics kept
        for got, pretrained in zip(tail.get_layer(name).get_weights(), original.get_layer(name).get_weights()):
            np.testing.assert_array_equal(got, pretrained)
    assert_served_from_images_as_evaluated(run, fault_setup, tmp_path, n=5)


def test_tail_lr_moves_only_the_tail_and_tail_bn_train_trains_the_statistics(face_cache, face_cnns, tmp_path):
    import keras
    cache, _ = face_cache
    original = keras.saving.load_model(face_cnns / "gender_mini_XCEPTION.hdf5", compile=False)
    still = tmp_path / "still"
    assert invoke("train-heads", cache, "--out", still, "--input", "add_3", "--head", "tail", "--attrs", "Male",
                  "--epochs", "2", "--tail-lr", "1e-30", "--tail-bn", "train", "--no-plots").exit_code == 0
    tail = keras.saving.load_model(still / "model.keras", compile=False).get_layer("tail_after_add_3")
    np.testing.assert_allclose(tail.get_layer("conv2d_6").get_weights()[0], original.get_layer("conv2d_6").get_weights()[0],
                               atol=1e-12)  # a learning rate of 1e-30 leaves the tail where it started
    moving_mean = tail.get_layer("batch_normalization_12").get_weights()[2]
    assert not np.array_equal(moving_mean, original.get_layer("batch_normalization_12").get_weights()[2])


def test_tail_auto_trains_its_grid_together_and_keeps_the_best_member_on_val(face_cache, tmp_path):
    """By default --tail-lr and --tail-bn are auto: one tail per point of TAIL_GRID trains in the
    same pass, and the member with the best mean val accuracy is kept, as the same settings fixed
    would train it alone; a fixed value fixes its axis."""
    from heads.defaults import TAIL_GRID
    from heads.kinds.keras_head import KerasHead
    cache, _ = face_cache
    common = ["--input", "add_3", "--head", "tail", "--attrs", "Male,Smiling", "--epochs", "2"]
    result = invoke("train-heads", cache, "--out", tmp_path / "grid", *common, "--no-plots")
    assert result.exit_code == 0, result.output
    members = len(TAIL_GRID["tail_lr"]) * len(TAIL_GRID["tail_bn"])
    lines = [line for line in result.output.splitlines() if line.startswith("epoch ")]
    assert re.match(rf"epoch 1: {members} of {members} tails training, loss [\d.]+(-[\d.]+)?, val loss [\d.]+(-[\d.]+)?; "
                    "kept so far: tail_lr=", lines[0]), lines  # this epoch's losses, then the member kept so far
    run = json.loads((tmp_path / "grid" / "metrics.json").read_text())["run"]
    selection, scores = run["selection"], run["selection"]["val_accuracy_by_member"]
    assert len(scores) == members and set(selection["epochs_by_member"].values()) == {2}
    chosen = f"tail_lr={selection['tail_lr']:g} tail_bn={selection['tail_bn']}"
    assert scores[chosen] == max(scores.values()) and list(scores).index(chosen) == list(scores.values()).index(
        max(scores.values()))  # ties: the first in grid order
    assert f"kept so far: {chosen} after its epoch 2 (" in lines[-1], lines  # the live line follows the kept rule
    assert run["settings"]["tail_lr"] == "auto" and f"chose {{\"tail_lr\": {selection['tail_lr']}" in result.output
    alone = invoke("train-heads", cache, "--out", tmp_path / "alone", *common, "--tail-lr", str(selection["tail_lr"]),
                   "--tail-bn", selection["tail_bn"], "--no-plots")
    assert alone.exit_code == 0, alone.output
    kept = json.loads((tmp_path / "grid" / "metrics.json").read_text())["attributes"]
    single = json.loads((tmp_path / "alone" / "metrics.json").read_text())["attributes"]
    for name in kept:
        for split in ("val", "test"):
            assert kept[name][split]["roc_auc"] == pytest.approx(single[name][split]["roc_auc"], abs=1e-3)
    half = KerasHead(head="tail", tail_bn="train").members()  # one axis fixed: the grid spans the other
    assert [(m.tail_lr, m.tail_bn) for m in half] == [(rate, "train") for rate in TAIL_GRID["tail_lr"]]
    assert [(m.tail_lr, m.tail_bn) for m in KerasHead(head="tail", tail_lr=0.01).members()] == [
        (0.01, bn) for bn in TAIL_GRID["tail_bn"]]
    plain = KerasHead(head="mlp:8")
    assert plain.members() == [plain]  # not a tail: no grid, tail_lr and tail_bn unused
    bad = invoke("train-heads", cache, "--out", tmp_path / "bad", *common, "--tail-lr", "fast")
    assert bad.exit_code == 2 and "'--tail-lr': 'fast': must be auto or a number in (0, inf)" in bad.output, bad.output


def test_tail_auto_halves_its_grid_and_records_where_each_member_stopped(face_cache, tmp_path, monkeypatch):
    """After each epoch of TAIL_HALVING the grid keeps the better half of its members (by mean val
    accuracy at each one's kept epoch) and the rest stop there: 4 -> 2 -> 1 here after epochs 1 and 2,
    on a grid of four."""
    import heads.kinds.keras_head
    import heads.kinds.trainer
    monkeypatch.setattr(heads.kinds.trainer, "TAIL_HALVING", (1, 2))
    monkeypatch.setattr(heads.kinds.keras_head, "TAIL_GRID", {"tail_lr": (1e-3, 3e-3), "tail_bn": ("frozen", "train")})
    cache, _ = face_cache
    result = invoke("train-heads", cache, "--out", tmp_path / "grid", "--input", "add_3", "--head", "tail",
                    "--attrs", "Male,Smiling", "--epochs", "3", "--no-plots")
    assert result.exit_code == 0, result.output
    assert "epoch 2: 2 of 4 tails training" in result.output and "epoch 3: 1 of 4 tails training" in result.output
    selection = json.loads((tmp_path / "grid" / "metrics.json").read_text())["run"]["selection"]
    epochs, halved = selection["epochs_by_member"], selection["halved_after_epoch_by_member"]
    assert sorted(epochs.values()) == [1, 1, 2, 3] and halved == {k: n for k, n in epochs.items() if n < 3}
    chosen = f"tail_lr={selection['tail_lr']:g} tail_bn={selection['tail_bn']}"
    scores = selection["val_accuracy_by_member"]
    assert scores[chosen] == max(scores.values())


def _member(val_accuracy, val_loss, epochs="auto", diverged=None):
    """A stand-in for a trained grid member: one history record per epoch of the two lists."""
    from types import SimpleNamespace
    history = [{"epoch": e + 1, "loss": 1.0, "val_loss": loss, "val_Male_accuracy": acc}
               for e, (acc, loss) in enumerate(zip(val_accuracy, val_loss))]
    return SimpleNamespace(history_=history, diverged_=diverged, epochs=epochs, attributes_=["Male"], halved_=None)


def test_halving_ranks_members_by_the_val_accuracy_of_the_epoch_each_would_keep(monkeypatch):
    import heads.kinds.trainer as trainer
    monkeypatch.setattr(trainer, "TAIL_HALVING", (2, 4))
    assert trainer.val_score(_member([0.6, 0.8, 0.9], [0.5, 0.4, 0.45])) == 0.8  # epochs auto: the lowest val loss
    assert trainer.val_score(_member([0.6, 0.8, 0.9], [0.5, 0.4, 0.45], epochs=3)) == 0.9  # fixed: the last epoch
    assert trainer.val_score(_member([0.9], [0.1], diverged=1)) is None
    a, b, c, d = (_member([0.7, 0.7], [0.5, 0.4]), _member([0.6, 0.9], [0.5, 0.3]), _member([0.9, 0.8], [0.2, 0.3]),
                  _member([0.95], [0.1], diverged=2))
    halve = trainer._halving([[a, b, c, d]])
    assert halve(1, [a, b, c]) == []  # not an epoch of TAIL_HALVING
    assert halve(2, [a, b, c]) == [a] and a.halved_ == 2  # c (0.9 at epoch 1) and b (0.9) stay; d diverged
    assert d.halved_ is None  # out of the race, but it was not training
    c.history_.append({"epoch": 3, "loss": 1.0, "val_loss": 0.1, "val_Male_accuracy": 0.95})
    assert halve(4, [b, c]) == [b] and b.halved_ == 4 and c.halved_ is None


def test_every_cut_is_its_own_copy_of_the_pretrained_weights(face_cache):
    """cut_after makes the cut once per process and clones it: each tail starts from the pretrained
    weights, and training one leaves the next untouched."""
    from embed.backbones import cut_after
    cache, _ = face_cache
    with h5py.File(cache, "r") as f:
        record, preprocessing = json.loads(f.attrs["backbone"]), json.loads(f.attrs["preprocessing"])
    first = cut_after(record, preprocessing, "add_3")
    first.get_layer("separable_conv2d_7").weights[0].assign(tf.zeros_like(first.get_layer("separable_conv2d_7").weights[0]))
    second = cut_after(record, preprocessing, "add_3")
    pretrained = cut_after({**record, "layers": []}, preprocessing, "add_3")  # another key: cut from the file again
    for a, b in zip(second.get_weights(), pretrained.get_weights()):
        np.testing.assert_array_equal(a, b)
    assert np.abs(second.get_layer("separable_conv2d_7").get_weights()[0]).sum() > 0
    assert second.name == "tail_after_add_3" and [l.name for l in second.layers[1:]] == [l.name for l in pretrained.layers[1:]]


def test_a_tail_starts_the_same_whether_its_cut_was_loaded_or_cloned(face_cache):
    """The first tail in a process loads the file, later ones clone the kept cut: a grid member must
    start from the weights it would get alone in a fresh process, so the seed decides them, not that."""
    import keras

    import embed.backbones
    from heads.kinds.architectures import Tail
    cache, _ = face_cache
    with h5py.File(cache, "r") as f:
        source = {"backbone": json.loads(f.attrs["backbone"]), "preprocessing": json.loads(f.attrs["preprocessing"]),
                  "layer": "add_3"}
    built = []
    for _ in range(2):
        keras.utils.set_random_seed(7)
        built.append(Tail().build((8, 8, 64), ["Male"], 0.2, 1e-4, source=source).get_weights())
        if not embed.backbones._cuts:
            raise AssertionError("cut_after keeps the cut it made")
    embed.backbones._cuts.clear()
    keras.utils.set_random_seed(7)
    built.append(Tail().build((8, 8, 64), ["Male"], 0.2, 1e-4, source=source).get_weights())  # loaded from the file
    for cloned, loaded in zip(built[1], built[2]):
        np.testing.assert_array_equal(cloned, loaded)
    for first, second in zip(built[0], built[1]):
        np.testing.assert_array_equal(first, second)


def test_tail_refuses_what_it_cannot_continue_in_one_line(face_cache, tmp_path):
    cache, model = face_cache
    for args, message in ((["--input", "add_2"], "the cache stores [32] (stored pooled? embed --layers add_2:none)"),
                          (["--input", "separable_conv2d_7"], "a connection crosses the cut after separable_conv2d_7"),
                          ([], "--head tail continues the backbone from one stored layer")):
        result = invoke("train-heads", cache, "--out", tmp_path / "r", "--head", "tail", "--attrs", "Male", *args)
        assert result.exit_code == 2 and message in result.output, (args, result.output)
    Path(model).write_bytes(Path(model).read_bytes() + b"changed")
    result = invoke("train-heads", cache, "--out", tmp_path / "r", "--head", "tail", "--attrs", "Male", "--input", "add_3")
    assert result.exit_code == 1 and "the file changed since the cache was made" in result.output, result.output


def test_a_streamed_train_split_trains_as_the_same_split_in_memory(layered, tmp_path, monkeypatch):
    """Spatial inputs train block by block (shuffled blocks, shuffled rows within each), from memory or
    streamed from the cache a block ahead: the same batches, so the same head (float32 rounding)."""
    import heads.kinds.trainer
    monkeypatch.setattr(heads.kinds.trainer, "BLOCK_ROWS", 48)  # several blocks from 160 train rows
    runs = {}
    for stream in ("never", "always"):
        result = invoke("train-heads", layered, "--out", tmp_path / stream, "--input", "conv2d", "--head",
                        "attentive:16,2,1", "--attrs", "Male,Smiling", "--epochs", "3", "--batch-size", "16",
                        "--stream", stream, "--no-plots")
        assert result.exit_code == 0, result.output
        word = "streams from the cache in blocks" if stream == "always" else "loads into memory"
        assert "note: the train split of conv2d (" in result.stderr and word in result.stderr
        runs[stream] = [json.loads((tmp_path / stream / name).read_text()) for name in ("metrics.json", "config.json")]
    (metrics_a, config_a), (metrics_b, config_b) = runs["never"], runs["always"]
    for name, by_split in metrics_a["attributes"].items():
        for split in ("val", "test"):
            for key, value in by_split[split].items():
                assert metrics_b["attributes"][name][split][key] == pytest.approx(value, rel=1e-6, abs=1e-7)
    assert config_a["rows"] == config_b["rows"]
    for args, message in ((["--features", "standardize"], "it streams: use raw"),
                          (["--views", "augment", "--eval-view", "orig"], "it cannot stream")):
        result = invoke("train-heads", layered, "--out", tmp_path / "bad", "--input", "conv2d", "--head", "attentive",
                        "--stream", "always", *args, "--no-plots")
        assert result.exit_code in (1, 2) and message in result.output, (args, result.output)


def test_nonfinite_rows_of_a_spatial_layer_are_found_in_memory_and_streamed(layered, tmp_path):
    path = tmp_path / "nan.h5"
    shutil.copy(layered, path)
    with h5py.File(path, "r+") as f:
        f["layers/conv2d"][7, 3, 4, 2] = np.nan
    for stream in ("never", "always"):
        result = invoke("train-heads", path, "--out", tmp_path / stream, "--input", "conv2d", "--head", "attentive",
                        "--stream", stream)
        assert result.exit_code == 1 and "1 row of the train split marked ok holds non-finite features" in \
            result.output and "rows 7 (000008.jpg)" in result.output, result.output


def test_the_grids_live_line_names_the_member_and_epoch_keep_best_would_keep():
    """Not the best val accuracy of any epoch (A's epoch 1) but each member's kept epoch (lowest val
    loss) scored by mean val accuracy: B after its epoch 1; and this epoch's losses of both."""
    from types import SimpleNamespace

    from heads.kinds.trainer import _leading

    def member(rate, history):
        return SimpleNamespace(tail_lr=rate, tail_bn="frozen", epochs="auto", diverged_=None, attributes_=["Male"],
                               history_=[{"epoch": e, "loss": loss, "val_loss": v, "val_Male_accuracy": a}
                                         for e, (loss, v, a) in enumerate(history, 1)])
    a = member(1e-3, [(0.6, 0.50, 0.90), (0.5, 0.40, 0.80)])
    b = member(3e-3, [(0.7, 0.45, 0.85), (0.4, 0.60, 0.70)])
    record = _leading([a, b], [a, b])
    assert (record["member"], record["member_epoch"], record["val_loss"]) == ("tail_lr=0.003 tail_bn=frozen", 1, 0.45)
    assert record["epoch_loss"] == [0.4, 0.5] and record["epoch_val_loss"] == [0.4, 0.6]
    from heads.look.tables import epoch_line
    assert epoch_line(record) == ("epoch 2: 2 of 2 tails training, loss 0.4000-0.5000, val loss 0.4000-0.6000; kept "
                                  "so far: tail_lr=0.003 tail_bn=frozen after its epoch 1 (loss 0.7000, val loss "
                                  "0.4500  val: Male 85.0%)")
