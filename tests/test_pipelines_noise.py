"""Label-noise recipes: realised rates, exact structures, seeding, errors, tf.data wrapper."""

import json

import numpy as np
import pytest
import tensorflow as tf

from clidmu_tf.pipelines import apply_label_noise
from clidmu_tf.pipelines import corrupt_labels
from clidmu_tf.pipelines import noise_report
from clidmu_tf.pipelines import transition_matrix
from clidmu_tf.pipelines.noise import CIFAR100_COARSE_LABELS

NUM_LABELS = 20_000
RATE = 0.4


def balanced_labels(num_classes, count=NUM_LABELS):
    return np.random.default_rng(123).permutation(np.arange(count) % num_classes)


def features_for(labels, dim=16):
    return np.random.default_rng(7).random((len(labels), dim), dtype=np.float32)


def assert_binomial(observed, p, n, sigmas=4.5):
    tolerance = sigmas * np.sqrt(p * (1 - p) / n) + 1e-12
    assert abs(observed - p) <= tolerance, (observed, p, tolerance)


TEN_CLASS_CASES = [
    ("symmetric", {}, RATE * 9 / 10),
    ("symmetric_exclusive", {}, RATE),
    # Five of the ten CIFAR-10 classes have a semantic confusion.
    ("asymmetric", {"class_map": "cifar10"}, RATE * 5 / 10),
    ("asymmetric", {"class_map": "mnist"}, RATE * 5 / 10),
    ("pair", {}, RATE),
    ("random_flip", {}, RATE),
    ("instance", {"features": True}, RATE),
]


@pytest.mark.parametrize("kind, options, expected_rate", TEN_CLASS_CASES)
def test_realised_rate_within_binomial_tolerance(kind, options, expected_rate):
    labels = balanced_labels(10)
    if options.get("features"):
        options = {"features": features_for(labels)}
    noisy, report = corrupt_labels(
        labels, kind=kind, rate=RATE, num_classes=10, seed=3, **options
    )
    assert_binomial(np.mean(noisy != labels), expected_rate, len(labels))
    assert report.flip_rate == pytest.approx(np.mean(noisy != labels))
    np.testing.assert_array_equal(report.flipped, noisy != labels)
    if report.expected_transition is not None:
        assert report.expected_flip_rate == pytest.approx(expected_rate, abs=1e-9)
        # Every row of the empirical matrix matches the nominal one (2,000 samples a row).
        scale = np.sqrt(np.maximum(report.expected_transition * 0.5, 1e-4) / 2000)
        assert np.all(np.abs(report.transition - report.expected_transition) < 5 * scale + 1e-9)


def test_cifar100_superclass_rate_and_structure():
    labels = balanced_labels(100)
    noisy, report = corrupt_labels(
        labels, kind="cifar100_superclass", rate=RATE, num_classes=100, seed=0
    )
    assert_binomial(np.mean(noisy != labels), RATE, len(labels))
    np.testing.assert_array_equal(CIFAR100_COARSE_LABELS[noisy], CIFAR100_COARSE_LABELS[labels])
    # The nominal matrix spreads `rate` evenly over the 4 other classes of the superclass.
    expected = report.expected_transition
    np.testing.assert_allclose(np.diag(expected), 1 - RATE)
    np.testing.assert_allclose(np.sort(expected, axis=1)[:, -5:-1], RATE / 4)
    np.testing.assert_array_equal(np.count_nonzero(expected, axis=1), 5)


CIFAR100_FINE = (
    "apple aquarium_fish baby bear beaver bed bee beetle bicycle bottle bowl boy bridge bus "
    "butterfly camel can castle caterpillar cattle chair chimpanzee clock cloud cockroach "
    "couch crab crocodile cup dinosaur dolphin elephant flatfish forest fox girl hamster house "
    "kangaroo keyboard lamp lawn_mower leopard lion lizard lobster man maple_tree motorcycle "
    "mountain mouse mushroom oak_tree orange orchid otter palm_tree pear pickup_truck "
    "pine_tree plain plate poppy porcupine possum rabbit raccoon ray road rocket rose sea seal "
    "shark shrew skunk skyscraper snail snake spider squirrel streetcar sunflower "
    "sweet_pepper table tank telephone television tiger tractor train trout tulip turtle "
    "wardrobe whale willow_tree wolf woman worm"
).split()
CIFAR100_SUPERCLASSES = [  # in coarse-label order
    "beaver dolphin otter seal whale",
    "aquarium_fish flatfish ray shark trout",
    "orchid poppy rose sunflower tulip",
    "bottle bowl can cup plate",
    "apple mushroom orange pear sweet_pepper",
    "clock keyboard lamp telephone television",
    "bed chair couch table wardrobe",
    "bee beetle butterfly caterpillar cockroach",
    "bear leopard lion tiger wolf",
    "bridge castle house road skyscraper",
    "cloud forest mountain plain sea",
    "camel cattle chimpanzee elephant kangaroo",
    "fox porcupine possum raccoon skunk",
    "crab lobster snail spider worm",
    "baby boy girl man woman",
    "crocodile dinosaur lizard snake turtle",
    "hamster mouse rabbit shrew squirrel",
    "maple_tree oak_tree palm_tree pine_tree willow_tree",
    "bicycle bus motorcycle pickup_truck train",
    "lawn_mower rocket streetcar tank tractor",
]


def test_cifar100_superclass_table_matches_the_named_superclasses():
    assert len(CIFAR100_FINE) == 100
    for coarse, members in enumerate(CIFAR100_SUPERCLASSES):
        fine_ids = [CIFAR100_FINE.index(name) for name in members.split()]
        np.testing.assert_array_equal(CIFAR100_COARSE_LABELS[fine_ids], coarse)


def test_pair_structure_is_exact():
    labels = balanced_labels(7)
    noisy, report = corrupt_labels(labels, kind="pair", rate=0.3, num_classes=7, seed=1)
    assert np.all((noisy == labels) | (noisy == (labels + 1) % 7))
    # Every class loses samples to its successor and only to it.
    for source in range(7):
        targets = set(noisy[(labels == source) & (noisy != labels)])
        assert targets == {(source + 1) % 7}


@pytest.mark.parametrize(
    "class_map, pairs",
    [
        # truck->automobile, bird->airplane, deer->horse, cat<->dog.
        ("cifar10", {9: 1, 2: 0, 4: 7, 3: 5, 5: 3}),
        ("mnist", {7: 1, 2: 7, 5: 6, 6: 5, 3: 8}),
        ({0: 4, 8: 2}, {0: 4, 8: 2}),
    ],
)
def test_asymmetric_maps_are_exact(class_map, pairs):
    labels = balanced_labels(10)
    noisy, _ = corrupt_labels(
        labels, kind="asymmetric", rate=RATE, num_classes=10, seed=2, class_map=class_map
    )
    for source in range(10):
        flipped_to = set(noisy[(labels == source) & (noisy != labels)])
        assert flipped_to == ({pairs[source]} if source in pairs else set())


def test_random_flip_has_one_target_per_class_fixed_by_the_seed():
    labels = balanced_labels(10)
    noisy, report = corrupt_labels(labels, kind="random_flip", rate=RATE, num_classes=10, seed=4)
    targets = {}
    for source in range(10):
        flipped_to = set(noisy[(labels == source) & (noisy != labels)])
        assert len(flipped_to) == 1 and source not in flipped_to
        targets[source] = flipped_to.pop()
    nominal = transition_matrix("random_flip", rate=RATE, num_classes=10, seed=4)
    assert {i: int(np.argmax(nominal[i] * (1 - np.eye(10)[i]))) for i in range(10)} == targets
    other = transition_matrix("random_flip", rate=RATE, num_classes=10, seed=5)
    assert not np.array_equal(nominal, other)


def test_symmetric_kinds_spread_flips_over_the_classes():
    labels = balanced_labels(5)
    mixed, _ = corrupt_labels(labels, kind="symmetric", rate=1.0, num_classes=5, seed=0)
    # Uniform mix at rate 1: the noisy label is uniform, the true class included.
    assert_binomial(np.mean(mixed == labels), 1 / 5, len(labels))
    exclusive, _ = corrupt_labels(
        labels, kind="symmetric_exclusive", rate=1.0, num_classes=5, seed=0
    )
    assert np.all(exclusive != labels)
    offsets = np.bincount((exclusive - labels) % 5, minlength=5)[1:] / len(labels)
    for share in offsets:
        assert_binomial(share, 1 / 4, len(labels))


def test_instance_noise_depends_on_the_features():
    labels = balanced_labels(10, 4000)
    features = features_for(labels, dim=32)
    noisy, report = corrupt_labels(
        labels, kind="instance", rate=RATE, num_classes=10, seed=0, features=features
    )
    assert report.expected_transition is None
    # Other features, same seed: other samples flip.
    shuffled, _ = corrupt_labels(
        labels, kind="instance", rate=RATE, num_classes=10, seed=0, features=features[::-1]
    )
    assert np.mean(noisy != shuffled) > 0.1
    # Xia et al.'s projection concentrates a class's flips on a few targets, unlike
    # symmetric noise.
    off_diagonal = report.transition * (1 - np.eye(10))
    assert np.mean(np.max(off_diagonal, axis=1) / np.sum(off_diagonal, axis=1)) > 0.2


def test_instance_noise_reads_large_features_in_chunks_of_bounded_bytes(monkeypatch):
    from clidmu_tf.pipelines import noise

    labels = balanced_labels(4, 600)
    features = features_for(labels, dim=64)
    expected, _ = corrupt_labels(
        labels, kind="instance", rate=RATE, num_classes=4, seed=1, features=features
    )
    read_sizes = []

    def read(indices):
        read_sizes.append(len(indices))
        return features[indices]

    # 64 float64 values per sample: 10 samples per chunk under a 5,120-byte bound.
    monkeypatch.setattr(noise, "FEATURE_CHUNK_BYTES", 10 * 64 * 8)
    chunked, _ = corrupt_labels(
        labels, kind="instance", rate=RATE, num_classes=4, seed=1, features=read
    )
    np.testing.assert_array_equal(chunked, expected)
    assert max(read_sizes) == 10 and sum(read_sizes) == len(labels) + 1


def test_transition_kind_uses_the_given_matrix():
    matrix = np.array([[0.5, 0.5, 0.0], [0.0, 1.0, 0.0], [0.1, 0.2, 0.7]])
    labels = balanced_labels(3, 30_000)
    noisy, report = corrupt_labels(
        labels, kind="transition", rate=None, num_classes=3, seed=0, transition=matrix
    )
    np.testing.assert_array_equal(report.expected_transition, matrix)
    np.testing.assert_allclose(report.transition, matrix, atol=0.02)
    assert np.all(noisy[labels == 1] == 1)


@pytest.mark.parametrize(
    "kind, options",
    [("symmetric", {}), ("pair", {}), ("random_flip", {}), ("instance", {"features": True})],
)
def test_same_seed_same_labels_other_seed_other_labels(kind, options):
    labels = balanced_labels(10, 5000)
    if options:
        options = {"features": features_for(labels)}
    first, _ = corrupt_labels(labels, kind=kind, rate=0.3, num_classes=10, seed=11, **options)
    again, _ = corrupt_labels(labels, kind=kind, rate=0.3, num_classes=10, seed=11, **options)
    other, _ = corrupt_labels(labels, kind=kind, rate=0.3, num_classes=10, seed=12, **options)
    np.testing.assert_array_equal(first, again)
    assert np.mean(first != other) > 0.1


def test_extreme_rates():
    labels = balanced_labels(4, 1000)
    same, report = corrupt_labels(labels, kind="pair", rate=0.0, num_classes=4, seed=0)
    np.testing.assert_array_equal(same, labels)
    assert report.flip_rate == 0.0
    shifted, _ = corrupt_labels(labels, kind="pair", rate=1.0, num_classes=4, seed=0)
    np.testing.assert_array_equal(shifted, (labels + 1) % 4)


def test_report_matrices_and_serialisation():
    labels = balanced_labels(10, 3000)
    noisy, report = corrupt_labels(labels, kind="symmetric", rate=0.5, num_classes=10, seed=0)
    assert noisy.dtype == np.int32 and noisy.shape == labels.shape
    assert report.counts.sum() == len(labels)
    np.testing.assert_allclose(report.transition.sum(axis=1), 1.0)
    np.testing.assert_array_equal(np.diag(report.counts), np.bincount(labels[noisy == labels]))
    summary = json.loads(json.dumps(report.to_dict()))
    assert summary["num_flipped"] == int(np.sum(noisy != labels))
    assert "flip_rate=" in repr(report)
    observed = noise_report([0, 0, 1, 1], [0, 1, 1, 1], num_classes=3)
    assert observed.flip_rate == 0.25
    np.testing.assert_array_equal(observed.transition[2], 0.0)  # no samples of class 2


def test_transition_matrix_nominal_forms():
    np.testing.assert_allclose(
        transition_matrix("symmetric", rate=0.5, num_classes=2), [[0.75, 0.25], [0.25, 0.75]]
    )
    np.testing.assert_allclose(
        transition_matrix("symmetric_exclusive", rate=0.6, num_classes=3),
        [[0.4, 0.3, 0.3], [0.3, 0.4, 0.3], [0.3, 0.3, 0.4]],
    )
    with pytest.raises(ValueError, match="each sample has its own row"):
        transition_matrix("instance", rate=0.2, num_classes=3)


@pytest.mark.parametrize(
    "options, message",
    [
        (
            {"kind": "symmetric", "rate": 1.5},
            r"Received an invalid value for `rate`, expected a float in \[0, 1\]\. "
            r"Received: rate=1\.5",
        ),
        ({"kind": "symmetric", "rate": -0.1}, r"Received: rate=-0\.1"),
        ({"kind": "symmetric", "rate": None}, r"Received: rate=None"),
        ({"kind": "gaussian", "rate": 0.2}, r"`kind`, expected one of \['symmetric'"),
        (
            {"kind": "symmetric_exclusive", "rate": 0.2, "num_classes": 1, "labels": [0, 0]},
            r"`num_classes`, expected at least 2 for kind='symmetric_exclusive'",
        ),
        (
            {"kind": "asymmetric", "rate": 0.2, "num_classes": 100, "class_map": "cifar10"},
            r"'cifar10' asymmetric map is defined for 10 classes\. Received: num_classes=100",
        ),
        ({"kind": "asymmetric", "rate": 0.2}, r"needs `class_map`"),
        (
            {"kind": "asymmetric", "rate": 0.2, "class_map": {3: 12}},
            r"`class_map`, expected class ids in \[0, 10\)",
        ),
        (
            {"kind": "cifar100_superclass", "rate": 0.2},
            r"`num_classes`, expected 100 for kind='cifar100_superclass'",
        ),
        ({"kind": "instance", "rate": 0.2}, r"kind='instance' needs `features`"),
        (
            {"kind": "transition", "rate": None, "transition": [[0.5] * 10] * 10},
            r"expected a row-stochastic matrix",
        ),
        (
            {"kind": "transition", "rate": None, "transition": np.eye(3)},
            r"expected shape \(10, 10\)",
        ),
        (
            {"kind": "transition", "rate": 0.3, "transition": np.eye(10)},
            r"`rate` must be None for kind='transition'",
        ),
        (
            {"kind": "pair", "rate": 0.2, "labels": [0, 3, 10]},
            r"`labels`, expected class ids in \[0, 10\)\. Received: labels\[2\]=",
        ),
        (
            {"kind": "pair", "rate": 0.2, "labels": [0, -1]},
            r"`labels`, expected class ids in \[0, 10\)",
        ),
        (
            {"kind": "instance", "rate": 0.2, "features": np.zeros((3, 4))},
            r"`features` and `labels` must have the same length",
        ),
        ({"kind": "pair", "rate": 0.2, "seed": -3}, r"`seed`"),
        (
            {"kind": "pair", "rate": 0.2, "transition": np.eye(10)},
            r"only used by kind='transition'",
        ),
    ],
)
def test_bad_input_raises_a_clear_value_error(options, message):
    arguments = {"labels": [0, 1, 2, 3], "num_classes": 10, "seed": 0, **options}
    labels = arguments.pop("labels")
    with pytest.raises(ValueError, match=message):
        corrupt_labels(labels, **arguments)


def test_tf_data_wrapper_matches_corrupt_labels_and_survives_shuffling():
    labels = balanced_labels(10, 2000)
    source = tf.data.Dataset.from_tensor_slices(
        (tf.range(2000, dtype=tf.int64), tf.constant(labels, tf.int64))
    )
    noisy_ds, report = apply_label_noise(
        source, kind="symmetric", rate=0.5, num_classes=10, seed=9
    )
    expected, _ = corrupt_labels(labels, kind="symmetric", rate=0.5, num_classes=10, seed=9)
    assert report.num_flipped == int(np.sum(expected != labels))
    # Shuffled and batched downstream, two epochs: every sample keeps its noisy label.
    pipeline = noisy_ds.shuffle(2000, seed=1).batch(128)
    for _ in range(2):
        seen = np.zeros(2000, dtype=bool)
        for index, label in pipeline.as_numpy_iterator():
            assert label.dtype == np.int64
            np.testing.assert_array_equal(label, expected[index])
            seen[index] = True
        assert seen.all()
    # Sharding also sees the same labels.
    shard = noisy_ds.shard(3, 1)
    for index, label in shard.as_numpy_iterator():
        assert label == expected[index]


def test_tf_data_wrapper_with_dicts_and_instance_noise_from_the_inputs():
    labels = balanced_labels(4, 400)
    images = np.random.default_rng(0).random((400, 4, 4, 1), dtype=np.float32)
    source = tf.data.Dataset.from_tensor_slices({"image": images, "label": labels})
    noisy_ds, report = apply_label_noise(
        source, kind="instance", rate=0.3, num_classes=4, seed=0
    )
    expected, _ = corrupt_labels(
        labels, kind="instance", rate=0.3, num_classes=4, seed=0, features=images
    )
    got = np.array([element["label"] for element in noisy_ds.as_numpy_iterator()])
    np.testing.assert_array_equal(got, expected)
    assert report.flip_rate == pytest.approx(np.mean(expected != labels))


def test_tf_data_wrapper_refuses_what_it_cannot_align():
    finite = tf.data.Dataset.from_tensor_slices((tf.zeros([6, 2]), tf.range(6) % 2))
    with pytest.raises(ValueError, match="infinite"):
        apply_label_noise(finite.repeat(), kind="pair", rate=0.2, num_classes=2, seed=0)
    with pytest.raises(ValueError, match="before `batch\\(\\)`"):
        apply_label_noise(finite.batch(2), kind="pair", rate=0.2, num_classes=2, seed=0)
    # A source whose order changes between passes is caught, not silently misaligned.
    reshuffled = finite.shuffle(6, seed=3, reshuffle_each_iteration=True)
    noisy_ds, _ = apply_label_noise(reshuffled, kind="pair", rate=0.5, num_classes=2, seed=0)
    with pytest.raises(tf.errors.InvalidArgumentError, match="another order"):
        for _ in range(20):
            list(noisy_ds.as_numpy_iterator())
