"""A folder streamed from disk (`stream_image_folder`) gives what the in-memory path gives:
the same images, splits, noisy labels, meta set and batches."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

import clidmu_tf
from clidmu_tf.callbacks import CLIDSnapshotEnsemble, TrainingDynamicsRecorder
from clidmu_tf.label_issue_ranking import label_issues
from clidmu_tf.pipelines import (
    StreamedDataset,
    load_image_folder,
    make_training_data,
    stream_image_folder,
)

CLASSES = 3
PER_CLASS = 20


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """Three classes of small images of two sizes, some grayscale, some JPEG."""
    root = tmp_path_factory.mktemp("streamed")
    rng = np.random.default_rng(0)
    for label in range(CLASSES):
        (root / f"class_{label}").mkdir()
        for index in range(PER_CLASS):
            size = 10 if index % 2 else 13
            pixels = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
            pixels[..., label] //= 4
            image = Image.fromarray(pixels)
            if index % 5 == 0:
                image = image.convert("L")
            suffix = ".jpg" if index % 3 == 0 else ".png"
            image.save(root / f"class_{label}" / f"{index:02d}{suffix}")
    return root


@pytest.fixture(scope="module")
def both(folder):
    return (
        load_image_folder(folder, image_size=(8, 8), seed=1),
        stream_image_folder(folder, image_size=(8, 8), seed=1),
    )


def test_the_streamed_folder_has_the_same_classes_splits_and_pixels(both):
    memory, streamed = both
    assert isinstance(streamed, StreamedDataset)
    assert streamed.class_names == memory.class_names
    assert streamed.input_shape == memory.input_shape == (8, 8, 3)
    np.testing.assert_array_equal(streamed.y_train, memory.y_train)
    np.testing.assert_array_equal(streamed.y_test, memory.y_test)
    np.testing.assert_array_equal(streamed.pixels(), memory.x_train)
    np.testing.assert_array_equal(streamed.pixels(split="test"), memory.x_test)
    np.testing.assert_array_equal(streamed.inputs([4, 2]), memory.inputs([4, 2]))


@pytest.mark.parametrize(
    "noise, meta_objective, augment",
    [("instance", "clid", "cifar"), ("symmetric", "ce_noisy", None), ("pair", "none", None)],
)
def test_noisy_labels_meta_set_and_batches_are_identical_both_ways(both, noise, meta_objective, augment):
    memory, streamed = both
    options = {
        "noise": noise, "noise_rate": 0.4, "meta_objective": meta_objective, "meta_size": 9,
        "batch_size": 10, "augment": augment, "seed": 3,
    }  # fmt: skip
    expected = make_training_data(memory, **options)
    got = make_training_data(streamed, **options)
    for name in ("train_indices", "meta_indices", "train_noisy_labels", "train_clean_labels",
                 "meta_inputs"):  # fmt: skip
        np.testing.assert_array_equal(getattr(got, name), getattr(expected, name), err_msg=name)
    assert got.noise_report.num_flipped == expected.noise_report.num_flipped > 0
    for got_batch, expected_batch in zip(got.train.take(4), expected.train.take(4), strict=True):
        tf.nest.map_structure(
            lambda a, b: np.testing.assert_array_equal(a.numpy(), b.numpy()),
            got_batch,
            expected_batch,
        )
    for (x, y), (x_expected, y_expected) in zip(got.evaluation, expected.evaluation, strict=True):
        np.testing.assert_array_equal(x.numpy(), x_expected.numpy())
        np.testing.assert_array_equal(y.numpy(), y_expected.numpy())


def test_fit_and_the_snapshot_callback_read_a_streamed_folder(both, tmp_path):
    _, streamed = both
    data = make_training_data(streamed, noise="symmetric", noise_rate=0.4, meta_size=9, batch_size=12)
    model = clidmu_tf.CLIDMUModel(clidmu_tf.backbones.mlp(data.input_shape, CLASSES), seed=0)
    model.compile(optimizer=keras.optimizers.SGD(0.05))
    snapshots = CLIDSnapshotEnsemble(data.meta_stream, top_k=1, directory=tmp_path / "snapshots")
    # The training dynamics, read from disk batch by batch, and from the split held whole.
    recorders = [
        TrainingDynamicsRecorder(inputs, data.train_noisy_labels, batch_size=12)
        for inputs in (data.input_stream(data.train_indices, 12), data.train_inputs())
    ]
    history = model.fit(data.train, epochs=2, callbacks=[snapshots, *recorders], verbose=0)
    assert np.all(np.isfinite(history.history["meta_clid"]))
    assert len(snapshots.snapshots) == 1
    # Scored from disk batch by batch, CLID equals the score over the meta set in memory.
    in_memory = CLIDSnapshotEnsemble(data.meta_inputs, directory=tmp_path / "other", batch_size=9)
    in_memory.set_model(model)
    assert snapshots.score(model.backbone) == pytest.approx(in_memory.score(model.backbone), rel=1e-6)
    scores = model.evaluate(data.evaluation, return_dict=True, verbose=0)
    assert 0.0 <= scores["accuracy"] <= 1.0
    streamed, in_memory = (recorder.dynamics() for recorder in recorders)
    for name, values in in_memory.items():
        np.testing.assert_array_equal(streamed[name], values, err_msg=name)
    # The label-issue ranking of the streamed split is the one of the split in memory.
    for score in ("early_loss", "final_weight"):
        got = label_issues(model, data.input_stream(data.train_indices, 12), data.train_noisy_labels,
                           score=score, dynamics=streamed)  # fmt: skip
        expected = label_issues(model, data.train_inputs(), data.train_noisy_labels,
                                score=score, dynamics=in_memory, batch_size=12)  # fmt: skip
        np.testing.assert_array_equal(got["ranking"], expected["ranking"])
        np.testing.assert_array_equal(got["weights"], expected["weights"])


def test_mixed_sizes_without_image_size_are_refused_before_decoding(folder):
    with pytest.raises(ValueError, match="mixed sizes"):
        stream_image_folder(folder)
    with pytest.raises(ValueError, match="not a folder"):
        stream_image_folder(folder / "missing")
