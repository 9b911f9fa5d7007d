"""make_training_data: element structure per meta objective, meta-set placement, alignment
of noisy labels with samples, seeding, and fit on the streams."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import clidmu_tf
from clidmu_tf.pipelines import Augmentation
from clidmu_tf.pipelines import META_OBJECTIVES
from clidmu_tf.pipelines import corrupt_labels
from clidmu_tf.pipelines import from_arrays
from clidmu_tf.pipelines import make_training_data

NUM_SAMPLES = 600


@pytest.fixture(scope="module")
def tagged():
    """A dataset whose every input carries its own index, so batches can be traced back."""
    index = np.arange(NUM_SAMPLES, dtype=np.float32)
    x = np.stack([index, index % 7], axis=1)
    y = np.arange(NUM_SAMPLES) % 5
    return from_arrays(
        x, y, x_test=x[:50], y_test=y[:50], num_classes=5, name="tagged"
    )


def spec_of(element):
    return tf.nest.map_structure(lambda t: (tuple(t.shape), t.dtype.name), element)


@pytest.mark.parametrize("meta_objective", META_OBJECTIVES)
def test_element_structure_follows_the_model_contract(meta_objective):
    data = make_training_data(
        "digits", meta_objective=meta_objective, noise="symmetric", noise_rate=0.4, seed=0
    )
    image = ((100, 8, 8, 1), "float32")
    labels = ((100,), "int32")
    expected = {
        "clid": ((image, labels), image),
        "ce_clean": ((image, labels), (image, labels)),
        "ce_noisy": ((image, labels), (image, labels)),
        "mae_noisy": ((image, labels), (image, labels)),
        "none": (image, labels),
    }[meta_objective]
    assert spec_of(next(iter(data.train))) == expected
    # The zipped stream is as long as the training stream, and that length is known.
    steps = int(data.train.cardinality())
    assert steps == data.steps_per_epoch == -(-len(data.train_indices) // 100)
    assert sum(1 for _ in data.train) == steps
    x_eval, y_eval = next(iter(data.evaluation))
    assert x_eval.dtype == tf.float32 and y_eval.dtype == tf.int32


def test_clid_meta_set_stays_in_training_and_drops_labels(tagged):
    data = make_training_data(tagged, meta_objective="clid", meta_size=100, batch_size=50)
    assert len(data.meta_indices) == 100
    assert set(data.meta_indices) <= set(data.train_indices)
    assert len(data.train_indices) == NUM_SAMPLES
    assert data.meta_labels is None
    (_, _), x_meta = next(iter(data.train))
    assert isinstance(x_meta, tf.Tensor) and x_meta.shape == (50, 2)
    # Meta batches come from the meta set only, and cycle beyond one pass over it.
    seen = set()
    for (_, _), x_meta in data.train:
        seen.update(x_meta.numpy()[:, 0].astype(int))
    assert seen == set(data.meta_indices)
    np.testing.assert_array_equal(data.meta_inputs[:, 0], data.meta_indices)


@pytest.mark.parametrize("meta_objective", ["ce_clean", "ce_noisy", "mae_noisy"])
def test_labelled_meta_sets_are_removed_from_training_and_balanced(tagged, meta_objective):
    data = make_training_data(
        tagged,
        meta_objective=meta_objective,
        noise="symmetric_exclusive",
        noise_rate=0.5,
        meta_size=100,
        batch_size=50,
        seed=3,
    )
    assert not set(data.meta_indices) & set(data.train_indices)
    assert len(data.meta_indices) + len(data.train_indices) == NUM_SAMPLES
    clean = tagged.y_train
    noisy, _ = corrupt_labels(
        clean, kind="symmetric_exclusive", rate=0.5, num_classes=5, seed=3
    )
    expected = clean if meta_objective == "ce_clean" else noisy
    np.testing.assert_array_equal(data.meta_labels, expected[data.meta_indices])
    np.testing.assert_array_equal(np.bincount(data.meta_labels, minlength=5), 20)
    for (_, _), (x_meta, y_meta) in data.train.take(3):
        np.testing.assert_array_equal(y_meta, expected[x_meta.numpy()[:, 0].astype(int)])


def test_training_labels_are_the_seeded_noise_aligned_with_each_sample(tagged):
    data = make_training_data(
        tagged, meta_objective="none", noise="pair", noise_rate=0.3, batch_size=64, seed=5
    )
    noisy, _ = corrupt_labels(tagged.y_train, kind="pair", rate=0.3, num_classes=5, seed=5)
    for epoch in range(2):
        seen = []
        for x, y in data.train:
            index = x.numpy()[:, 0].astype(int)
            np.testing.assert_array_equal(y.numpy(), noisy[index])
            seen.extend(index)
        assert sorted(seen) == list(range(NUM_SAMPLES))
    np.testing.assert_array_equal(data.train_noisy_labels, noisy[data.train_indices])
    np.testing.assert_array_equal(data.train_clean_labels, tagged.y_train[data.train_indices])
    np.testing.assert_array_equal(data.flipped, noisy != tagged.y_train)
    assert data.noise_report.flip_rate == pytest.approx(np.mean(noisy != tagged.y_train))
    assert data.noise_report.expected_flip_rate == pytest.approx(0.3)


def test_semi_supervised_mode_keeps_a_fraction_and_feeds_the_rest_to_the_meta_set(tagged):
    data = make_training_data(
        tagged, labeled_fraction=0.25, noise="symmetric", noise_rate=0.2, batch_size=30
    )
    assert len(data.train_indices) == 150
    np.testing.assert_array_equal(np.bincount(data.train_clean_labels), 30)  # stratified
    assert not set(data.meta_indices) & set(data.train_indices)
    assert len(data.meta_indices) == NUM_SAMPLES // 5
    assert data.steps_per_epoch == 5
    inputs, labels = ((30, 2), "float32"), ((30,), "int32")
    assert spec_of(next(iter(data.train))) == ((inputs, labels), inputs)
    trained_on = set()
    for (x, _), _ in data.train:
        trained_on.update(x.numpy()[:, 0].astype(int))
    assert trained_on == set(data.train_indices)
    with pytest.raises(ValueError, match="needs a meta objective that reads no labels"):
        make_training_data(tagged, meta_objective="ce_clean", labeled_fraction=0.5)


def test_unlabeled_inputs_form_the_meta_set_and_never_enter_training(tagged):
    # Unlabelled samples carry indices from 10_000 on, so each one can be traced.
    extra = np.stack([np.arange(10_000, 10_040), np.zeros(40)], axis=1).astype(np.float32)
    data = make_training_data(
        tagged, unlabeled_inputs=extra, meta_size=30, batch_size=60, augment=None, seed=3
    )
    assert len(data.train_indices) == NUM_SAMPLES
    assert len(data.meta_indices) == 30 and (data.meta_indices >= NUM_SAMPLES).all()
    np.testing.assert_array_equal(data.meta_inputs, extra[data.meta_indices - NUM_SAMPLES])
    met = set()
    for (x, _), x_meta in data.train:
        assert (x.numpy()[:, 0] < NUM_SAMPLES).all()
        met.update(x_meta.numpy()[:, 0].astype(int))
    assert met <= set(range(10_000, 10_040)) and len(met) > 1
    # With a labelled fraction, the unlabelled rest and the extra inputs are both candidates.
    both = make_training_data(tagged, labeled_fraction=0.5, unlabeled_inputs=extra, seed=3)
    assert not set(both.meta_indices) & set(both.train_indices)
    assert len(both.train_indices) == NUM_SAMPLES // 2
    # A fraction of 1 keeps every label: the plain setting.
    whole = make_training_data(tagged, labeled_fraction=1.0, seed=3)
    plain = make_training_data(tagged, seed=3)
    np.testing.assert_array_equal(whole.meta_indices, plain.meta_indices)
    np.testing.assert_array_equal(whole.train_indices, plain.train_indices)


def batches_of(dataset):
    return [tf.nest.map_structure(lambda t: t.numpy(), element) for element in dataset]


def test_streams_are_seeded_and_reshuffled_each_epoch():
    images = np.random.default_rng(0).integers(0, 256, (300, 16, 16, 3), dtype=np.uint8)
    cifar_like = from_arrays(images, np.arange(300) % 3, augmentation="cifar")
    first = make_training_data(cifar_like, meta_size=60, batch_size=50, seed=1)
    assert first.augmentation == Augmentation.from_recipe("cifar")
    epoch_one, epoch_two = batches_of(first.train), batches_of(first.train)
    replay = batches_of(make_training_data(cifar_like, meta_size=60, batch_size=50, seed=1).train)
    other = batches_of(make_training_data(cifar_like, meta_size=60, batch_size=50, seed=2).train)
    flat = lambda batches: np.concatenate([b[0][0].ravel() for b in batches])  # noqa: E731
    np.testing.assert_array_equal(flat(epoch_one), flat(replay))
    assert not np.array_equal(flat(epoch_one), flat(epoch_two))
    assert not np.array_equal(flat(epoch_one), flat(other))


def test_augmentation_switches(tagged):
    images = np.full((200, 8, 8, 1), 255, dtype=np.uint8)
    bright = from_arrays(images, np.arange(200) % 2, augmentation="cifar")
    plain = make_training_data(bright, augment=None, meta_objective="none", batch_size=40)
    x, _ = next(iter(plain.train))
    assert np.all(x.numpy() == 1.0)  # uint8 pixels scaled to [0, 1], untouched
    padded = make_training_data(bright, meta_objective="none", batch_size=40)
    x, _ = next(iter(padded.train))
    assert np.any(x.numpy() == 0.0)  # the crop's zero padding shows
    assert padded.augmentation.crop_padding == 4
    unaugmented_meta = make_training_data(bright, augment_meta=False, meta_size=40)
    (_, _), x_meta = next(iter(unaugmented_meta.train))
    assert np.all(x_meta.numpy() == 1.0)
    digits = make_training_data("digits", meta_size=100)
    assert digits.augmentation.crop_padding == 1 and not digits.augmentation.flip
    assert make_training_data("digits", meta_size=100, augment=None).augmentation.is_identity
    with pytest.raises(ValueError, match=r"needs samples of shape \(height, width, channels\)"):
        make_training_data(tagged, augment="cifar")


def test_evaluation_stream_is_the_clean_test_split_in_order():
    data = make_training_data(
        "digits", noise="symmetric", noise_rate=0.8, meta_size=100, eval_batch_size=128
    )
    x, y = zip(*[(x.numpy(), y.numpy()) for x, y in data.evaluation])
    np.testing.assert_array_equal(np.concatenate(y), data.dataset.y_test)
    np.testing.assert_array_equal(np.concatenate(x), data.dataset.inputs(split="test"))
    assert len(x[0]) == 128


def test_human_labels_are_reported_as_observed_noise():
    x = np.random.default_rng(0).random((400, 3)).astype(np.float32)
    clean = np.arange(400) % 4
    human = np.where(np.arange(400) % 10 == 0, (clean + 1) % 4, clean)
    observed = from_arrays(x, human, y_clean=clean, x_test=x[:8], y_test=clean[:8])
    data = make_training_data(observed, meta_objective="ce_clean", meta_size=40)
    assert data.noise_report.kind == "observed"
    assert data.noise_report.flip_rate == pytest.approx(np.mean(data.flipped))
    assert 0.05 < data.noise_report.flip_rate < 0.15
    # The clean meta set gets the true labels, not the human ones.
    np.testing.assert_array_equal(data.meta_labels, clean[data.meta_indices])


def test_summary_and_inputs(tagged):
    data = make_training_data(tagged, noise="random_flip", noise_rate=0.2, meta_size=50)
    summary = data.summary()
    assert summary["num_train"] == NUM_SAMPLES and summary["num_meta"] == 50
    assert summary["noise"]["kind"] == "random_flip"
    np.testing.assert_array_equal(data.train_inputs([3, 4])[:, 0], data.train_indices[[3, 4]])
    assert data.input_shape == (2,) and data.num_classes == 5
    # The stream of the training inputs: in order, un-augmented, in batches, finite.
    batches = [batch.numpy() for batch in data.input_stream(data.train_indices, 64)]
    assert [len(batch) for batch in batches[:-1]] == [64] * (len(batches) - 1)
    np.testing.assert_array_equal(np.concatenate(batches), data.train_inputs())
    picked = data.input_stream(np.array([5, 1, 3]), batch_size=2).as_numpy_iterator()
    np.testing.assert_array_equal(np.concatenate(list(picked))[:, 0], [5, 1, 3])
    for bad in ([0, NUM_SAMPLES], [-1, 3], [0.5, 3.0], [[1, 2]]):
        with pytest.raises(ValueError, match=r"`indices`, expected a 1-D array of integer"):
            data.input_stream(np.array(bad), batch_size=2)



def test_input_stream_reads_either_split_with_labels_and_shuffled_on_request(tagged):
    from clidmu_tf.pipelines.streams import input_stream

    every_test = np.arange(len(tagged.y_test))
    batches = list(input_stream(tagged, every_test, batch_size=7, split="test"))
    assert [len(batch) for batch in batches[:-1]] == [7] * (len(batches) - 1)
    np.testing.assert_array_equal(np.concatenate(batches), tagged.inputs(split="test"))
    # With labels: (x, y) pairs, each input with its own label; shuffled, a permutation
    # that changes at every pass and repeats with the seed.
    picked = np.arange(0, NUM_SAMPLES, 3)
    labels = np.arange(NUM_SAMPLES) % tagged.num_classes

    def one_pass(stream):
        x, y = (np.concatenate(part) for part in zip(*stream.as_numpy_iterator()))
        np.testing.assert_array_equal(y, labels[x[:, 0].astype(int)])
        return x[:, 0].astype(int)

    stream = input_stream(tagged, picked, batch_size=16, labels=labels, shuffle_seed=4)
    first, second = one_pass(stream), one_pass(stream)
    assert sorted(first) == sorted(second) == list(picked)
    assert list(first) != list(picked) and list(first) != list(second)
    again = input_stream(tagged, picked, batch_size=16, labels=labels, shuffle_seed=4)
    np.testing.assert_array_equal(one_pass(again), first)
    with pytest.raises(ValueError, match=r"`split`, expected one of \['test', 'train'\]"):
        input_stream(tagged, picked, batch_size=4, split="validation")
    with pytest.raises(ValueError, match=r"in \[0, 50\) of the test split"):
        input_stream(tagged, np.array([50]), batch_size=4, split="test")
    with pytest.raises(ValueError, match="`labels`"):
        input_stream(tagged, picked, batch_size=4, labels=labels[:-1])

def test_held_out_selection_set_is_never_trained_on_nor_in_the_meta_set(tagged):
    noisy = make_training_data(
        tagged, noise="symmetric", noise_rate=0.5, selection_size=60, meta_size=100, seed=3
    )
    selection = set(noisy.selection_indices)
    assert len(selection) == 60
    assert not selection & set(noisy.train_indices) and not selection & set(noisy.meta_indices)
    assert len(noisy.train_indices) == NUM_SAMPLES - 60
    # Stratified by the given labels (the only labels a user has): each class in proportion,
    # within one sample.
    given = np.concatenate([noisy.train_noisy_labels, noisy.selection_noisy_labels])
    expected = 60 * np.bincount(given, minlength=5) / NUM_SAMPLES
    assert np.all(np.abs(np.bincount(noisy.selection_noisy_labels, minlength=5) - expected) <= 1)
    # The noise is drawn over the whole training set, so a sample keeps its noisy label
    # whichever split it lands in, and the training stream never yields a selection sample.
    plain = make_training_data(tagged, noise="symmetric", noise_rate=0.5, seed=3)
    by_index = dict(zip(plain.train_indices, plain.train_noisy_labels))
    assert [by_index[i] for i in noisy.selection_indices] == noisy.selection_noisy_labels.tolist()
    assert [by_index[i] for i in noisy.train_indices] == noisy.train_noisy_labels.tolist()
    trained = {int(i) for (x, _), _ in noisy.train for i in x.numpy()[:, 0]}
    assert trained == set(noisy.train_indices)
    # Served un-augmented, in order, in meta batches.
    served = np.concatenate([batch.numpy()[:, 0] for batch in noisy.selection_stream])
    np.testing.assert_array_equal(served, noisy.selection_indices)
    # Seeded: the same seed gives the same set, another seed another one.
    again = make_training_data(
        tagged, noise="symmetric", noise_rate=0.5, selection_size=60, meta_size=100, seed=3
    )
    np.testing.assert_array_equal(again.selection_indices, noisy.selection_indices)
    other = make_training_data(tagged, selection_size=60, meta_size=100, seed=4)
    assert set(other.selection_indices) != selection
    # Without one (the paper), nothing is held out.
    assert plain.selection_stream is None and len(plain.selection_indices) == 0


def test_held_out_selection_set_is_drawn_from_the_unlabeled_samples_when_there_are_some(tagged):
    options = dict(labeled_fraction=0.5, meta_size=100, noise="symmetric", noise_rate=0.4, seed=3)
    plain = make_training_data(tagged, **options)
    held = make_training_data(tagged, selection_size=60, **options)
    # It costs no labelled sample: training and the meta set are those of a run without it.
    np.testing.assert_array_equal(held.train_indices, plain.train_indices)
    np.testing.assert_array_equal(held.meta_indices, plain.meta_indices)
    selection = set(held.selection_indices)
    unlabeled = set(range(NUM_SAMPLES)) - set(held.train_indices)
    assert len(selection) == 60 and selection <= unlabeled - set(held.meta_indices)
    # Its samples have no given label, so label issues are looked for among the others only.
    assert held.selection_from_unlabeled and len(held.selection_noisy_labels) == 0
    np.testing.assert_array_equal(held.labeled_indices, held.train_indices)
    assert not held.labeled_held_out.any()
    served = np.concatenate([batch.numpy()[:, 0] for batch in held.selection_stream])
    np.testing.assert_array_equal(served, held.selection_indices)
    # Seeded and deterministic.
    again = make_training_data(tagged, selection_size=60, **options)
    np.testing.assert_array_equal(again.selection_indices, held.selection_indices)
    other = make_training_data(tagged, selection_size=60, **{**options, "seed": 4})
    assert set(other.selection_indices) != selection
    # Unlabelled inputs count too (positions from NUM_SAMPLES on).
    extra = np.stack([np.arange(10_000, 10_040), np.zeros(40)], axis=1).astype(np.float32)
    only_extra = make_training_data(
        tagged, unlabeled_inputs=extra, meta_size=20, selection_size=20, seed=3
    )
    assert len(only_extra.train_indices) == NUM_SAMPLES
    assert set(only_extra.selection_indices) == set(range(NUM_SAMPLES, NUM_SAMPLES + 40)) - set(
        only_extra.meta_indices
    )
    # Too few unlabelled samples outside the meta set: refused, saying how many there are.
    with pytest.raises(ValueError) as raised:
        make_training_data(tagged, selection_size=201, **options)
    assert "`selection_size`" in str(raised.value) and "200 of them are left" in str(raised.value)
    assert "Received: selection_size=201" in str(raised.value)


def test_default_selection_size():
    from clidmu_tf.pipelines import default_selection_size

    assert [default_selection_size(n) for n in (10, 19, 20, 1438, 5000, 60_000)] == [
        0, 0, 2, 143, 500, 500,
    ]


@pytest.mark.parametrize(
    "options, message",
    [
        ({"meta_objective": "l2"}, r"`meta_objective`, expected one of"),
        ({"noise": "gaussian"}, r"`noise`, expected one of"),
        ({"noise": "symmetric", "noise_rate": 1.5}, r"Received: rate=1\.5"),
        ({"batch_size": 0}, r"`batch_size`, expected a positive integer"),
        ({"labeled_fraction": 1.5}, r"`labeled_fraction`, expected a float in \(0, 1\]"),
        ({"labeled_fraction": 0.0}, r"Received: labeled_fraction=0\.0"),
        ({"labeled_fraction": float("nan")}, r"Received: labeled_fraction=nan"),
        ({"unlabeled_inputs": np.zeros((5, 8, 8))}, r"`unlabeled_inputs`, expected a non-empty"),
        # An (x, y) pair, ragged for NumPy.
        ({"unlabeled_inputs": (np.zeros((5, 8, 8, 1)), np.zeros(5))},
         r"`unlabeled_inputs`.*of type tuple, not an array"),
        ({"unlabeled_inputs": np.zeros((5, 8, 8, 1), "uint8")}, r"dtype float32"),
        ({"unlabeled_inputs": np.zeros((5, 8, 8, 1), "float32"), "meta_objective": "ce_noisy"},
         r"unlabeled_inputs given"),
        ({"meta_size": 5000}, r"`meta_size`, expected an integer in \[1, 1438\]"),
        ({"meta_size": 50, "meta_batch_size": 60}, r"`meta_batch_size`, expected an integer"),
        ({"augment": "heavy"}, r"`augment`, expected 'auto', None, one of"),
        ({"train_size": 10_000}, r"`train_size`, expected an integer in \[1, 1438\]"),
        ({"selection_size": -3}, r"`selection_size`, expected a positive integer"),
        ({"selection_size": True}, r"Received: selection_size=True"),
        ({"selection_size": 1437}, r"`selection_size`, expected an integer in \[2, 1434\]"),
        ({"selection_size": 1}, r"`selection_size`, expected 0, None or an integer of at least 2"),
        ({"dataset": "cifar11"}, r"Unknown dataset 'cifar11'"),
        ({"dataset": np.zeros(3)}, r"`dataset`, expected a dataset name, an InMemoryDataset or a StreamedDataset"),
        ({"noise": "asymmetric", "noise_rate": 0.2, "dataset": "tagged"}, r"needs `class_map`"),
    ],
)
def test_bad_arguments(options, message, tagged):
    if isinstance(options.get("dataset"), str) and options["dataset"] == "tagged":
        options = {**options, "dataset": tagged}
    with pytest.raises(ValueError, match=message):
        make_training_data(**{"dataset": "digits", **options})


def test_fit_reads_the_streams():
    data = make_training_data(
        "digits", noise="symmetric", noise_rate=0.4, train_size=200, meta_size=40, batch_size=50
    )
    model = clidmu_tf.CLIDMUModel(
        clidmu_tf.backbones.small_cnn(data.input_shape, data.num_classes, widths=(8, 16)),
        meta_objective="clid",
    )
    model.compile(optimizer=keras.optimizers.SGD(0.05))
    history = model.fit(data.train, epochs=1, verbose=0, shuffle=False)
    assert np.isfinite(history.history["loss"][0])
    baseline = make_training_data("digits", meta_objective="none", train_size=200, batch_size=50)
    plain = keras.Sequential(
        [keras.Input(data.input_shape), keras.layers.Flatten(), keras.layers.Dense(10)]
    )
    plain.compile("sgd", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    plain.fit(baseline.train, epochs=1, verbose=0, shuffle=False)
    assert len(plain.evaluate(baseline.evaluation, verbose=0, return_dict=True)) >= 1
