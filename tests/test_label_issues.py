"""Tests of `clidmu_tf.label_issues` and the `TrainingDynamicsRecorder` it reads."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from clidmu_tf import CLIDMUModel, backbones
from clidmu_tf.callbacks import TrainingDynamicsRecorder, load_dynamics
from clidmu_tf.label_issue_ranking import (
    SCORES,
    label_issues,
    count_label_issues,
    label_quality,
    ranking_metrics,
    suggested_num_issues,
)

NUM_SAMPLES = 40
NUM_CLASSES = 3


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny CLIDMUModel trained 3 epochs with the recorder, and what it recorded."""
    rng = np.random.default_rng(0)
    x = rng.random((NUM_SAMPLES, 8)).astype("float32")
    y = rng.integers(0, NUM_CLASSES, NUM_SAMPLES).astype("int32")
    keras.utils.set_random_seed(0)
    model = CLIDMUModel(backbones.mlp((8,), NUM_CLASSES, hidden_units=(16,)), seed=0)
    model.compile(optimizer=keras.optimizers.SGD(0.1))
    train = tf.data.Dataset.from_tensor_slices((x, y)).batch(20)
    meta = tf.data.Dataset.from_tensor_slices(x[:20]).batch(10).repeat()
    path = tmp_path_factory.mktemp("dynamics") / "dynamics.npz"
    recorder = TrainingDynamicsRecorder(x, y, path=path, batch_size=16)
    model.fit(tf.data.Dataset.zip((train, meta)), epochs=3, callbacks=[recorder], verbose=0)
    return model, x, y, recorder, path


def _softmax(logits):
    shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
    return shifted / shifted.sum(axis=1, keepdims=True)


def test_recorder_keeps_every_epoch_and_writes_them(trained):
    model, x, y, recorder, path = trained
    dynamics = recorder.dynamics()
    assert dynamics["epochs"].tolist() == [1, 2, 3]
    for name in ("given_probability", "margin", "weight"):
        assert dynamics[name].shape == (3, NUM_SAMPLES)
    # The last record is the trained model's view of each label.
    logits = model.predict(x, verbose=0).astype("float64")
    rows = np.arange(NUM_SAMPLES)
    np.testing.assert_allclose(
        dynamics["given_probability"][-1], _softmax(logits)[rows, y], rtol=1e-4
    )
    others = logits.copy()
    others[rows, y] = -np.inf
    np.testing.assert_allclose(
        dynamics["margin"][-1], logits[rows, y] - others.max(axis=1), rtol=1e-4, atol=1e-5
    )
    np.testing.assert_allclose(dynamics["weight"][-1], model.per_sample_weights(x, y), rtol=1e-5)
    assert dynamics["num_label_issues"].shape == (3,)
    assert dynamics["num_label_issues"][-1] == count_label_issues(y, _softmax(logits))
    written = load_dynamics(path)
    assert sorted(written) == sorted(dynamics)
    np.testing.assert_array_equal(written["margin"], dynamics["margin"])


@pytest.mark.parametrize("score", sorted(SCORES))
def test_every_score_ranks_from_least_to_most_trusted(trained, score):
    model, x, y, recorder, _ = trained
    issues = label_issues(model, x, y, score=score, dynamics=recorder.dynamics())
    assert sorted(issues["ranking"].tolist()) == list(range(NUM_SAMPLES))
    assert np.all(np.diff(issues["quality"][issues["ranking"]]) >= 0)
    # A third of 3 epochs: the first epoch's count.
    assert issues["num_issues"] == recorder.dynamics()["num_label_issues"][0]
    assert issues["score"] == score
    expected = {
        "ensemble": issues["probabilities"][np.arange(NUM_SAMPLES), y],
        "final_weight": model.per_sample_weights(x, y),
        "mean_weight": recorder.dynamics()["weight"].mean(axis=0),
        "margin": recorder.dynamics()["margin"].mean(axis=0),
        # A third of 3 epochs: the first one.
        "early_loss": np.log(recorder.dynamics()["given_probability"][0]),
    }[score]
    np.testing.assert_allclose(issues["quality"], expected, rtol=1e-5)


def test_the_flipped_labels_of_a_model_that_knows_the_truth_come_first():
    true = np.repeat(np.arange(NUM_CLASSES), 10)
    x = np.eye(NUM_CLASSES, dtype="float32")[true]
    model = keras.Sequential([keras.Input((NUM_CLASSES,)), keras.layers.Dense(NUM_CLASSES)])
    model.set_weights([8 * np.eye(NUM_CLASSES, dtype="float32"), np.zeros(NUM_CLASSES, "float32")])
    given = true.copy()
    flipped = np.zeros(len(true), dtype=bool)
    flipped[[2, 13, 25, 27]] = True
    given[flipped] = (true[flipped] + 1) % NUM_CLASSES
    issues = label_issues(model, x, given, score="ensemble")
    assert set(issues["ranking"][:4].tolist()) == {2, 13, 25, 27}
    # No training dynamics: no early-epoch probabilities to estimate the count from.
    assert issues["num_issues"] is None
    assert issues["weights"] is None
    assert ranking_metrics(issues["quality"], flipped) == {
        "roc_auc": 1.0,
        "precision_at_noise_count": 1.0,
    }


def test_bad_arguments_are_refused_with_what_was_received(trained):
    model, x, y, recorder, _ = trained
    with pytest.raises(ValueError, match="score='loss'"):
        label_issues(model, x, y, score="loss")
    with pytest.raises(ValueError, match="dynamics=None"):
        label_issues(model, x, y, score="margin")
    with pytest.raises(ValueError, match="other samples or labels"):
        label_issues(model, x, (y + 1) % NUM_CLASSES, score="margin",
                     dynamics=recorder.dynamics())
    with pytest.raises(ValueError, match="same length"):
        label_issues(model, x[:10], y, score="ensemble")
    with pytest.raises(ValueError, match=r"\[0, 3\)"):
        label_issues(model, x, y + NUM_CLASSES, score="ensemble")
    plain = keras.Sequential([keras.Input((8,)), keras.layers.Dense(NUM_CLASSES)])
    with pytest.raises(ValueError, match="final_weight"):
        label_issues(plain, x, y, score="final_weight")
    with pytest.raises(ValueError, match="batch_size"):
        label_issues(model, x, y, batch_size=0)


def test_early_loss_averages_the_first_third_of_the_epochs():
    given_probability = np.array([[0.5, 0.1], [0.5, 0.1], [0.9, 0.9], [0.9, 0.9], [1, 1], [1, 1]])
    dynamics = {"epochs": np.arange(1, 7), "given_probability": given_probability}
    quality = label_quality("early_loss", np.array([0, 1]), None, dynamics=dynamics)
    np.testing.assert_allclose(quality, np.log([0.5, 0.1]))


def test_the_suggested_number_of_wrong_labels_comes_from_before_they_were_memorised():
    # 90 samples in 120 dimensions: a linear model separates any labelling, so it memorises
    # the flipped labels by the last epoch, after learning the three clusters first.
    rng = np.random.default_rng(0)
    true = np.repeat(np.arange(3), 30)
    x = (rng.normal(size=(3, 120))[true] + rng.normal(size=(90, 120))).astype("float32")
    flipped = rng.random(90) < 0.3
    given = np.where(flipped, (true + rng.integers(1, 3, 90)) % 3, true).astype("int32")
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((120,)), keras.layers.Dense(3)])
    model.compile(
        optimizer=keras.optimizers.SGD(0.02),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    recorder = TrainingDynamicsRecorder(x, given)
    model.fit(x, given, epochs=30, batch_size=10, callbacks=[recorder], verbose=0)
    counts = recorder.dynamics()["num_label_issues"]
    num_flipped = int(flipped.sum())
    issues = label_issues(model, x, given, score="early_loss", dynamics=recorder.dynamics())
    assert issues["num_issues"] == counts[:10].max()
    assert abs(issues["num_issues"] - num_flipped) <= 0.2 * num_flipped
    # The same count on the trained model's probabilities finds almost none.
    assert counts[-1] == count_label_issues(given, issues["probabilities"])
    assert counts[-1] < num_flipped / 3


def test_the_suggestion_is_the_largest_count_of_the_first_third_of_the_epochs():
    counts = np.array([10, 30, 20, 5, 5, 5, 40, 40, 40])
    assert suggested_num_issues({"num_label_issues": counts}) == 30
    assert suggested_num_issues({"num_label_issues": np.array([7])}) == 7


def test_ranking_metrics():
    flipped = np.array([True, False, True, False, False])
    quality = np.array([0.1, 0.2, 0.9, 0.8, 0.7])
    scores = ranking_metrics(quality, flipped)
    # Pairs (flipped, clean) ordered right: 3 of 3 for sample 0, 0 of 3 for sample 2.
    assert scores["roc_auc"] == pytest.approx(0.5)
    assert scores["precision_at_noise_count"] == pytest.approx(0.5)
    assert ranking_metrics(quality, np.zeros(5, dtype=bool)) is None


def test_a_resumed_recorder_starts_from_the_records_on_disk(trained):
    _, x, y, recorder, path = trained
    resumed = TrainingDynamicsRecorder(x, y, path=path, resume=True).dynamics()
    for name, values in recorder.dynamics().items():
        np.testing.assert_array_equal(resumed[name], values)
    assert TrainingDynamicsRecorder(x, y, path=path).dynamics()["epochs"].tolist() == []
    with pytest.raises(ValueError, match="other labels"):
        TrainingDynamicsRecorder(x, (y + 1) % NUM_CLASSES, path=path, resume=True)


def test_a_stream_of_batches_gives_the_records_and_ranking_of_the_array(trained):
    model, x, y, recorder, _ = trained
    # Batches like the array's slices (16, 16 and 8), so the float32 sums are the same.
    stream = tf.data.Dataset.from_tensor_slices(x).batch(16)
    streamed = TrainingDynamicsRecorder(stream, y, batch_size=16)
    in_memory = TrainingDynamicsRecorder(x, y, batch_size=16)
    for callback in (streamed, in_memory):
        callback.set_model(model)
        callback.on_epoch_end(0)
    for name, values in in_memory.dynamics().items():
        np.testing.assert_allclose(streamed.dynamics()[name], values, rtol=1e-6, err_msg=name)
    dynamics = recorder.dynamics()
    for score in ("final_weight", "early_loss"):
        expected = label_issues(model, x, y, score=score, dynamics=dynamics)
        got = label_issues(model, stream, y, score=score, dynamics=dynamics)
        np.testing.assert_array_equal(got["ranking"], expected["ranking"])
        np.testing.assert_allclose(got["probabilities"], expected["probabilities"], rtol=1e-6)
        np.testing.assert_allclose(got["weights"], expected["weights"], rtol=1e-6)
        assert got["num_issues"] == expected["num_issues"]


def test_a_stream_of_another_length_than_the_labels_is_refused(trained):
    model, x, y, _, _ = trained
    for short, name in ((x[:-3], "len\\(x\\)=37"), (np.concatenate([x, x[:3]]), "more than 40")):
        stream = tf.data.Dataset.from_tensor_slices(short).batch(16)
        recorder = TrainingDynamicsRecorder(stream, y)
        recorder.set_model(model)
        with pytest.raises(ValueError, match=f"same length.*{name}"):
            recorder.on_epoch_end(0)
        with pytest.raises(ValueError, match=f"same length.*{name}"):
            label_issues(model, stream, y, score="ensemble")
    with pytest.raises(ValueError, match="infinite"):
        TrainingDynamicsRecorder(tf.data.Dataset.from_tensor_slices(x).batch(8).repeat(), y)
