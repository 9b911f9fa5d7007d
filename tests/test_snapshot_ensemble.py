"""CLIDSnapshotEnsemble: the top-k lowest-CLID epochs on disk, and their logit average."""

import csv
import json
import os
import shutil

import keras
import numpy as np
import pytest
import tensorflow as tf

from clidmu_tf import CLIDMUModel, backbones, clid_loss
from clidmu_tf.callbacks import (
    CLIDSnapshotEnsemble,
    load_snapshot_ensemble,
    read_snapshot_manifest,
)

TOP_K = 2
META_BATCH = 16


def clustered_data(seed=0, num_samples=60):
    """Three well separated clusters: CLID falls while the model learns them."""
    rng = np.random.default_rng(seed)
    centers = 2.0 * rng.normal(size=(3, 8))
    labels = rng.integers(0, 3, num_samples).astype("int32")
    inputs = (centers[labels] + rng.normal(size=(num_samples, 8))).astype("float32")
    return inputs, labels, rng.integers(0, 3, num_samples).astype("int32")


def fit_data(x, labels):
    train = tf.data.Dataset.from_tensor_slices((x, labels)).batch(20)
    meta = tf.data.Dataset.from_tensor_slices(x[:40]).batch(20).repeat()
    return tf.data.Dataset.zip((train, meta))


def new_model():
    keras.utils.set_random_seed(0)
    model = CLIDMUModel(backbones.mlp((8,), 3, hidden_units=(16,)), seed=0)
    model.compile(optimizer=keras.optimizers.SGD(0.2))
    return model


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """Three epochs on the clusters (CLID falls), then three on random labels (it rises).

    The same callback serves both `fit` calls, so the record spans six epochs: early ones
    are evicted by better later ones, and the last ones are never kept.
    """
    directory = tmp_path_factory.mktemp("run") / "snapshots"
    directory.mkdir()
    (directory / "notes.txt").write_text("the user's file")
    (directory / "other.weights.h5").write_bytes(b"the user's weights")
    x, labels, random_labels = clustered_data()
    model = new_model()
    callback = CLIDSnapshotEnsemble(
        x[:40], top_k=TOP_K, directory=directory, batch_size=META_BATCH
    )
    first = model.fit(fit_data(x, labels), epochs=3, callbacks=[callback], verbose=0)
    second = model.fit(
        fit_data(x, random_labels), epochs=6, initial_epoch=3, callbacks=[callback], verbose=0
    )
    logged = first.history["meta_clid"] + second.history["meta_clid"]
    return {"directory": directory, "callback": callback, "model": model, "x": x, "logged": logged}


def test_keeps_exactly_the_lowest_clid_epochs(run):
    logged = run["logged"]
    assert len(logged) == 6
    by_clid = sorted(range(1, 7), key=lambda epoch: (logged[epoch - 1], epoch))
    kept = [entry["epoch"] for entry in run["callback"].snapshots]
    assert kept == by_clid[:TOP_K]
    assert [entry["clid"] for entry in run["callback"].snapshots] == sorted(
        logged[epoch - 1] for epoch in kept
    )
    # The run was built so that both eviction and rejection happen.
    assert max(kept) > TOP_K
    assert max(kept) < 6


def test_history_csv_and_manifest_agree(run):
    directory, logged = run["directory"], run["logged"]
    manifest = read_snapshot_manifest(directory)
    assert [(e["epoch"], e["clid"]) for e in manifest["history"]] == list(
        zip(range(1, 7), logged)
    )
    assert run["callback"].clid_history == dict(zip(range(1, 7), logged))
    with open(directory / "meta_clid.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [int(row["epoch"]) for row in rows] == list(range(1, 7))
    np.testing.assert_array_equal([float(row["meta_clid"]) for row in rows], logged)
    assert manifest["top_k"] == TOP_K
    assert manifest["temperature"] == run["model"].temperature
    assert manifest["snapshots"] == run["callback"].snapshots


def test_files_on_disk_match_the_manifest(run):
    directory = run["directory"]
    manifest = read_snapshot_manifest(directory)
    snapshot_files = sorted(name for name in os.listdir(directory) if "clid_snapshot_" in name)
    assert snapshot_files == sorted(entry["file"] for entry in manifest["snapshots"])
    assert sorted(os.listdir(directory)) == sorted(
        snapshot_files
        + ["clid_snapshots.json", "meta_clid.csv", "notes.txt", "other.weights.h5"]
    )
    assert (directory / "notes.txt").read_text() == "the user's file"
    assert (directory / "other.weights.h5").read_bytes() == b"the user's weights"


def test_meta_clid_is_the_batch_weighted_clid_in_inference_mode(run):
    backbone, meta = run["model"].backbone, run["x"][:40]
    values, sizes = [], []
    for start in range(0, len(meta), META_BATCH):
        outputs = backbone(meta[start : start + META_BATCH], training=False)
        values.append(float(clid_loss(outputs["features"], outputs["logits"], 0.5)))
        sizes.append(len(meta[start : start + META_BATCH]))
    assert sizes == [16, 16, 8]
    np.testing.assert_allclose(run["logged"][-1], np.average(values, weights=sizes), rtol=1e-6)


def test_ensemble_is_the_mean_of_the_members_logits(run):
    directory, x = run["directory"], run["x"]
    ensemble = run["callback"].build_ensemble()
    member_logits = []
    for entry in read_snapshot_manifest(directory)["snapshots"]:
        member = keras.models.clone_model(run["model"].backbone)
        member.load_weights(directory / entry["file"])
        member_logits.append(member(x, training=False)["logits"].numpy())
    expected = np.mean(member_logits, axis=0)
    np.testing.assert_allclose(ensemble.predict(x, verbose=0), expected, atol=1e-6)
    assert ensemble(x[:5]).shape == (5, 3)
    # Built again from disk alone, as a later process (the CLI's export) does.
    np.testing.assert_allclose(
        load_snapshot_ensemble(directory).predict(x, verbose=0), expected, atol=1e-6
    )


def test_ensemble_keras_file_round_trip(run, tmp_path):
    ensemble = run["callback"].build_ensemble()
    ensemble.save(tmp_path / "ensemble.keras")
    reloaded = keras.models.load_model(tmp_path / "ensemble.keras")
    np.testing.assert_allclose(
        reloaded.predict(run["x"], verbose=0), ensemble.predict(run["x"], verbose=0), atol=1e-6
    )


def test_resume_continues_the_run_from_disk(run, tmp_path):
    directory = tmp_path / "snapshots"
    shutil.copytree(run["directory"], directory)
    model = run["model"]
    with pytest.raises(ValueError, match="already holds CLID snapshots"):
        CLIDSnapshotEnsemble(run["x"][:40], top_k=TOP_K, directory=directory)
    callback = CLIDSnapshotEnsemble(
        run["x"][:40], top_k=TOP_K, directory=directory, batch_size=META_BATCH, resume=True
    )
    history = model.fit(
        fit_data(run["x"], clustered_data()[1]),
        epochs=7,
        initial_epoch=6,
        callbacks=[callback],
        verbose=0,
    )
    logged = run["logged"] + history.history["meta_clid"]
    assert list(callback.clid_history) == list(range(1, 8))
    by_clid = sorted(range(1, 8), key=lambda epoch: (logged[epoch - 1], epoch))
    assert [entry["epoch"] for entry in callback.snapshots] == by_clid[:TOP_K]


def test_plain_dict_output_model_and_dataset_meta_data(tmp_path):
    x, labels, _ = clustered_data()
    keras.utils.set_random_seed(0)
    backbone = backbones.mlp((8,), 3, hidden_units=(16,))
    backbone.compile(
        optimizer="sgd",
        loss={"logits": keras.losses.SparseCategoricalCrossentropy(from_logits=True)},
    )
    meta = tf.data.Dataset.from_tensor_slices(x[:40]).batch(META_BATCH)
    callback = CLIDSnapshotEnsemble(meta, top_k=1, directory=tmp_path)
    history = backbone.fit(x, {"logits": labels}, epochs=2, callbacks=[callback], verbose=0)
    # A dataset batched like the array is scored exactly like the array.
    from_array = CLIDSnapshotEnsemble(x[:40], top_k=1, directory=tmp_path / "a", batch_size=16)
    from_array.set_model(backbone)
    np.testing.assert_allclose(
        history.history["meta_clid"][-1], from_array.score(backbone), rtol=1e-6
    )
    assert len(callback.snapshots) == 1
    assert callback.build_ensemble()(x[:4]).shape == (4, 3)


def test_monitor_names_the_logged_clid_and_is_kept_on_resume(run, tmp_path):
    """Held-out inputs (`monitor="held_out_clid"`) rank the snapshots under their own name,
    and a manifest ranked by one score is not continued with another."""
    x, labels, _ = clustered_data()
    model = new_model()
    held_out = x[40:]
    callback = CLIDSnapshotEnsemble(
        held_out, top_k=1, directory=tmp_path / "held_out", batch_size=10,
        monitor="held_out_clid",
    )
    history = model.fit(fit_data(x, labels), epochs=2, callbacks=[callback], verbose=0)
    assert "meta_clid" not in history.history
    np.testing.assert_allclose(
        history.history["held_out_clid"][-1], callback.score(model.backbone), rtol=1e-6
    )
    assert read_snapshot_manifest(tmp_path / "held_out")["monitor"] == "held_out_clid"
    with open(tmp_path / "held_out" / "meta_clid.csv", newline="") as handle:
        assert list(next(csv.reader(handle))) == ["epoch", "held_out_clid"]
    for directory, monitor, trained in ((tmp_path / "held_out", "meta_clid", model),
                                        (run["directory"], "held_out_clid", run["model"])):
        resumed = CLIDSnapshotEnsemble(
            held_out, directory=directory, resume=True, monitor=monitor, batch_size=10
        )
        resumed.set_model(trained)
        with pytest.raises(ValueError, match=f"not comparable with monitor='{monitor}'"):
            resumed.on_train_begin()


@pytest.mark.parametrize("monitor", ["", "meta clid", 3, None, "loss", "val_clid"])
def test_invalid_monitor(monitor, tmp_path):
    with pytest.raises(ValueError, match=f"`monitor`.*Received: monitor={monitor!r}"):
        CLIDSnapshotEnsemble(np.zeros((4, 8), "float32"), monitor=monitor, directory=tmp_path)


def test_a_monitor_the_model_logs_itself_is_refused(tmp_path):
    x, labels, _ = clustered_data()
    callback = CLIDSnapshotEnsemble(x[:40], directory=tmp_path, monitor="clid", batch_size=20)
    with pytest.raises(ValueError, match="monitor='clid', the name of a value the model"):
        new_model().fit(fit_data(x, labels), epochs=1, callbacks=[callback], verbose=0)


@pytest.mark.parametrize("top_k", [0, -1, 1.5, True, "5"])
def test_invalid_top_k(top_k, tmp_path):
    with pytest.raises(
        ValueError,
        match=f"Received an invalid value for `top_k`, expected a positive integer. "
        f"Received: top_k={top_k!r}",
    ):
        CLIDSnapshotEnsemble(np.zeros((4, 8), "float32"), top_k=top_k, directory=tmp_path)


def test_invalid_arguments(tmp_path):
    meta = np.zeros((4, 8), "float32")
    with pytest.raises(ValueError, match="`batch_size`, expected a positive integer"):
        CLIDSnapshotEnsemble(meta, batch_size=0, directory=tmp_path)
    with pytest.raises(ValueError, match="`temperature`, expected a positive float"):
        CLIDSnapshotEnsemble(meta, temperature=-1.0, directory=tmp_path)
    with pytest.raises(ValueError, match=r"at least 2 samples.*meta_data.shape=\(1, 8\)"):
        CLIDSnapshotEnsemble(meta[:1], directory=tmp_path)
    infinite = tf.data.Dataset.from_tensor_slices(meta).batch(2).repeat()
    with pytest.raises(ValueError, match="expected a finite dataset"):
        CLIDSnapshotEnsemble(infinite, directory=tmp_path)
    assert os.listdir(tmp_path) == []


def test_building_before_any_snapshot(tmp_path):
    callback = CLIDSnapshotEnsemble(np.zeros((4, 8), "float32"), directory=tmp_path / "s")
    with pytest.raises(FileNotFoundError, match="No CLID snapshot exists"):
        callback.build_ensemble()
    with pytest.raises(FileNotFoundError, match="No CLID snapshot exists"):
        load_snapshot_ensemble(tmp_path)


def test_missing_or_corrupt_files(run, tmp_path):
    directory = tmp_path / "snapshots"
    shutil.copytree(run["directory"], directory)
    first, second = read_snapshot_manifest(directory)["snapshots"]

    os.remove(directory / second["file"])
    with pytest.raises(FileNotFoundError, match=f"epoch {second['epoch']} is missing"):
        load_snapshot_ensemble(directory)
    (directory / first["file"]).write_bytes(b"not an HDF5 file")
    with pytest.raises(ValueError, match=f"epoch {first['epoch']} cannot be loaded"):
        load_snapshot_ensemble(directory)
    (directory / "clid_snapshots.json").write_text("{ not json")
    with pytest.raises(ValueError, match="cannot be read"):
        load_snapshot_ensemble(directory)
    (directory / "clid_snapshots.json").write_text(json.dumps({"snapshots": []}))
    with pytest.raises(ValueError, match="is not a CLIDSnapshotEnsemble manifest"):
        load_snapshot_ensemble(directory)
    # Failing to load deletes nothing.
    assert (directory / first["file"]).read_bytes() == b"not an HDF5 file"
    assert (directory / "notes.txt").exists()


def test_refuses_a_directory_of_another_backbone(run, tmp_path):
    directory = tmp_path / "snapshots"
    shutil.copytree(run["directory"], directory)
    other = CLIDMUModel(backbones.mlp((8,), 3, hidden_units=(32,)), seed=0)
    other.compile(optimizer=keras.optimizers.SGD(0.1))
    callback = CLIDSnapshotEnsemble(run["x"][:40], directory=directory, resume=True)
    with pytest.raises(ValueError, match="different backbone"):
        other.fit(fit_data(run["x"], clustered_data()[1]), epochs=1, callbacks=[callback],
                  verbose=0)
    assert sorted(os.listdir(directory)) == sorted(os.listdir(run["directory"]))
