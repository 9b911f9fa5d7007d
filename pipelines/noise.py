"""Label-noise recipes: pure, seeded NumPy functions.

Every class-conditional recipe is a transition matrix `T` with
`T[i, j] = P(noisy = j | true = i)` (rows sum to 1); one sampler draws the noisy labels from
the rows, so the recipes differ only in how `T` is built. Instance-dependent noise draws one
row per sample instead.
"""

import numbers

import numpy as np

from clidmu_tf.pipelines.noise_report import NoiseReport
from clidmu_tf.validation import check_class_ids, check_fraction, check_seed, invalid_value

NOISE_KINDS = (
    "symmetric",
    "symmetric_exclusive",
    "asymmetric",
    "cifar100_superclass",
    "pair",
    "random_flip",
    "instance",
    "transition",
)

# Semantic confusions, {true class: noisy class}, flipped with probability `rate`.
# CIFAR-10: truck->automobile, bird->airplane, deer->horse, cat<->dog.
CIFAR10_ASYMMETRIC_MAP = {9: 1, 2: 0, 4: 7, 3: 5, 5: 3}
# MNIST: 7->1, 2->7, 5<->6, 3->8.
MNIST_ASYMMETRIC_MAP = {7: 1, 2: 7, 5: 6, 6: 5, 3: 8}
CLASS_MAPS = {"cifar10": CIFAR10_ASYMMETRIC_MAP, "mnist": MNIST_ASYMMETRIC_MAP}

# The superclass (coarse label) of each CIFAR-100 fine label, in the fine labels' order.
CIFAR100_COARSE_LABELS = np.array(
    [
        4, 1, 14, 8, 0, 6, 7, 7, 18, 3, 3, 14, 9, 18, 7, 11, 3, 9, 7, 11,
        6, 11, 5, 10, 7, 6, 13, 15, 3, 15, 0, 11, 1, 10, 12, 14, 16, 9, 11, 5,
        5, 19, 8, 8, 15, 13, 14, 17, 18, 10, 16, 4, 17, 4, 2, 0, 17, 4, 18, 17,
        10, 3, 2, 12, 12, 16, 12, 1, 9, 19, 2, 10, 0, 1, 16, 12, 9, 13, 15, 13,
        16, 19, 2, 4, 6, 19, 5, 5, 8, 19, 18, 1, 2, 15, 6, 0, 17, 8, 14, 13,
    ]
)  # fmt: skip

# Xia et al. (2020) draw each sample's flip rate from N(rate, 0.1^2) truncated to [0, 1].
INSTANCE_RATE_STD = 0.1
# Samples read at once when instance noise scores features, at most FEATURE_CHUNK and at
# most FEATURE_CHUNK_BYTES of float64 features: bounds the memory it takes whatever the
# image size (85 RGB images of 128x128 at a time; 256 CIFAR images).
FEATURE_CHUNK = 256
FEATURE_CHUNK_BYTES = 32 * 2**20


def corrupt_labels(
    labels,
    *,
    kind,
    rate,
    num_classes,
    seed,
    features=None,
    transition=None,
    class_map=None,
):
    """Injects label noise with one of the standard recipes.

    The transition matrix convention is `T[i, j] = P(noisy = j | true = i)`. The noise is a
    pure function of `(labels, seed)`: the same call returns the same labels, aligned with
    `labels` by index, so every epoch and every shard of a pipeline sees the same noise.

    Recipes (`K = num_classes`, `r = rate`):

    - `"symmetric"`: uniform mix, `T = (1 - r) I + (r / K) 11^T` (Meta-Weight-Net and the
      CLID-MU code). A label may be redrawn as itself, so the realised flip rate is about
      `r (K - 1) / K`.
    - `"symmetric_exclusive"`: flip to another class, `T_ii = 1 - r`,
      `T_ij = r / (K - 1)` (Co-teaching). Realised rate about `r`.
    - `"asymmetric"`: semantic confusions from `class_map` (`"cifar10"`: truck->automobile,
      bird->airplane, deer->horse, cat<->dog; `"mnist"`: 7->1, 2->7, 5<->6, 3->8; or a dict
      `{true: noisy}`), each applied with probability `r`.
    - `"cifar100_superclass"`: with probability `r`, a label moves uniformly to one of the
      four other fine classes of its real CIFAR-100 superclass. Needs `K = 100`.
    - `"pair"`: `i -> (i + 1) mod K` with probability `r`.
    - `"random_flip"`: every class gets one other class, drawn once from `seed`, and flips
      to it with probability `r` (Meta-Weight-Net's `flip`).
    - `"instance"`: instance-dependent noise of Xia et al. (2020). Each sample's flip rate
      is `q ~ N(r, 0.1^2)` truncated to [0, 1]; with `W ~ N(0, 1)` of shape `[K, D, K]`,
      `a = x_flat W[y]`, `a_y = -inf`, the sample's row is `q softmax(a)` plus `1 - q` on
      its own class. Needs `features` (`x_flat`, used as given).
    - `"transition"`: any row-stochastic `[K, K]` matrix passed as `transition`; `rate`
      must then be None, the matrix implies it.

    Args:
        labels: 1-D integer array of clean class ids in `[0, num_classes)`.
        kind: one of the recipes above.
        rate: float in [0, 1], the nominal noise rate. None for `kind="transition"`.
        num_classes: int, the number of classes `K`.
        seed: int seed (or None for fresh, unreproducible randomness).
        features: array of shape `[N, ...]` aligned with `labels`, or a callable
            `read(indices)` returning the features of those samples (`[len(indices), ...]`)
            for data read from disk: each sample is read once, in chunks. Required for
            `"instance"`; an array is length-checked otherwise.
        transition: `[K, K]` row-stochastic matrix, for `kind="transition"` only.
        class_map: for `kind="asymmetric"`: `"cifar10"`, `"mnist"` or a dict
            `{true class: noisy class}`.

    Returns:
        A tuple `(noisy_labels, report)`: an int32 array shaped like `labels`, and a
        `NoiseReport` with the realised flip rate, the empirical transition matrix and the
        mask of flipped samples.

    Raises:
        ValueError: for a rate outside [0, 1], labels out of range, features of another
            length, or a recipe that cannot apply to the arguments.

    Example:

    >>> labels = np.repeat(np.arange(10), 100)
    >>> noisy, report = corrupt_labels(
    ...     labels, kind="pair", rate=0.2, num_classes=10, seed=0)
    >>> bool(np.all((noisy == labels) | (noisy == (labels + 1) % 10)))
    True
    >>> 0.1 < report.flip_rate < 0.3
    True

    Reference:
        Xia et al., "Part-dependent Label Noise: Towards Instance-dependent Label Noise",
        NeurIPS 2020 (the instance recipe).
    """
    if kind not in NOISE_KINDS:
        raise invalid_value("kind", f"one of {list(NOISE_KINDS)}", kind)
    num_classes = _check_num_classes(num_classes)
    labels = check_class_ids(labels, "labels", num_classes=num_classes)
    if kind == "transition":
        if rate is not None:
            raise ValueError(
                "`rate` must be None for kind='transition': the matrix sets the rate. "
                f"Received: rate={rate!r}"
            )
    else:
        rate = _check_rate(rate)
    if features is not None and not callable(features):
        features = np.asarray(features)
        if features.ndim == 0 or len(features) != len(labels):
            raise ValueError(
                "`features` and `labels` must have the same length. "
                f"Received: features with shape {features.shape}, len(labels)={len(labels)}"
            )
    if transition is not None and kind != "transition":
        raise ValueError(
            f"`transition` is only used by kind='transition'. Received: kind={kind!r}"
        )
    if class_map is not None and kind != "asymmetric":
        raise ValueError(f"`class_map` is only used by kind='asymmetric'. Received: kind={kind!r}")

    sampling_rng = np.random.default_rng(None if seed is None else [check_seed(seed), 1])
    if kind == "instance":
        if features is None:
            raise ValueError(
                "kind='instance' needs `features`, an array of shape [N, ...] aligned with "
                "`labels` (for images: the pixels). Received: features=None"
            )
        if num_classes < 2:
            raise invalid_value("num_classes", "at least 2 for kind='instance'", num_classes)
        rows = _instance_rows(labels, features, rate=rate, num_classes=num_classes, seed=seed)
        expected = None
    else:
        expected = transition_matrix(
            kind,
            rate=rate,
            num_classes=num_classes,
            seed=seed,
            class_map=class_map,
            transition=transition,
        )
        rows = expected[labels]
    noisy = sample_from_rows(rows, sampling_rng)
    report = noise_report(
        labels,
        noisy,
        num_classes=num_classes,
        kind=kind,
        rate=rate,
        expected_transition=expected,
    )
    return noisy, report


def transition_matrix(
    kind, *, rate, num_classes, seed=None, class_map=None, transition=None
):
    """Builds the nominal transition matrix of a class-conditional noise recipe.

    `T[i, j] = P(noisy = j | true = i)`; rows sum to 1. `corrupt_labels` samples from
    exactly this matrix (for `"random_flip"`, given the same `seed`).

    Args:
        kind: a recipe of `corrupt_labels` other than `"instance"`.
        rate: float in [0, 1] (None for `kind="transition"`).
        num_classes: int, `K`.
        seed: int, used by `"random_flip"` to choose each class's target.
        class_map: for `"asymmetric"`: `"cifar10"`, `"mnist"` or `{true: noisy}`.
        transition: for `"transition"`: the `[K, K]` matrix to validate and return.

    Returns:
        A float64 array of shape `[K, K]`.

    Raises:
        ValueError: when the recipe cannot apply (see `corrupt_labels`).

    Example:

    >>> transition_matrix("pair", rate=0.3, num_classes=3)
    array([[0.7, 0.3, 0. ],
           [0. , 0.7, 0.3],
           [0.3, 0. , 0.7]])
    """
    num_classes = _check_num_classes(num_classes)
    k = num_classes
    if kind == "transition":
        return _check_transition(transition, num_classes)
    if kind == "instance":
        raise ValueError(
            "kind='instance' has no class-level transition matrix: each sample has its own "
            "row. Use `corrupt_labels`."
        )
    if kind not in NOISE_KINDS:
        raise invalid_value("kind", f"one of {list(NOISE_KINDS)}", kind)
    rate = _check_rate(rate)
    eye = np.eye(k)
    if kind == "symmetric":
        return (1.0 - rate) * eye + rate / k
    if kind == "symmetric_exclusive":
        if k < 2:
            raise invalid_value(
                "num_classes", "at least 2 for kind='symmetric_exclusive'", num_classes
            )
        return (1.0 - rate) * eye + rate / (k - 1) * (1.0 - eye)
    if kind == "asymmetric":
        targets = _check_class_map(class_map, num_classes)
    elif kind == "cifar100_superclass":
        if k != 100:
            raise invalid_value(
                "num_classes", "100 for kind='cifar100_superclass'", num_classes
            )
        same_superclass = CIFAR100_COARSE_LABELS[:, None] == CIFAR100_COARSE_LABELS[None, :]
        others = same_superclass & ~eye.astype(bool)
        return (1.0 - rate) * eye + rate * others / others.sum(axis=1, keepdims=True)
    elif kind == "pair":
        if k < 2:
            raise invalid_value("num_classes", "at least 2 for kind='pair'", num_classes)
        targets = {i: (i + 1) % k for i in range(k)}
    else:  # random_flip
        if k < 2:
            raise invalid_value("num_classes", "at least 2 for kind='random_flip'", num_classes)
        rng = np.random.default_rng(None if seed is None else check_seed(seed))
        offsets = rng.integers(1, k, size=k)
        targets = {i: int((i + offsets[i]) % k) for i in range(k)}
    matrix = eye.copy()
    for source, target in targets.items():
        matrix[source, source] = 1.0 - rate
        matrix[source, target] = rate
    return matrix


def noise_report(
    clean_labels,
    noisy_labels,
    *,
    num_classes,
    kind="observed",
    rate=None,
    expected_transition=None,
):
    """Measures the noise between two aligned label arrays.

    Args:
        clean_labels: 1-D integer array, the true classes.
        noisy_labels: 1-D integer array of the same length, the observed classes.
        num_classes: int, `K`.
        kind: str, the recipe's name, recorded in the report.
        rate: the nominal rate, recorded in the report.
        expected_transition: the nominal `[K, K]` matrix, if there is one.

    Returns:
        A `NoiseReport`; its `transition[i, j]` is the fraction of class-`i` samples whose
        noisy label is `j`.

    Example:

    >>> noise_report([0, 0, 1, 1], [0, 1, 1, 1], num_classes=2).flip_rate
    0.25
    """
    num_classes = _check_num_classes(num_classes)
    clean = check_class_ids(clean_labels, "clean_labels", num_classes=num_classes)
    noisy = check_class_ids(noisy_labels, "noisy_labels", num_classes=num_classes)
    if len(clean) != len(noisy):
        raise ValueError(
            "`clean_labels` and `noisy_labels` must have the same length. Received: "
            f"len(clean_labels)={len(clean)}, len(noisy_labels)={len(noisy)}"
        )
    counts = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(counts, (clean, noisy), 1)
    class_counts = counts.sum(axis=1)
    transition = counts / np.maximum(class_counts, 1)[:, None]
    flipped = clean != noisy
    expected_flip_rate = None
    if expected_transition is not None and len(clean):
        prior = class_counts / len(clean)
        expected_flip_rate = float(np.sum(prior * (1.0 - np.diag(expected_transition))))
    return NoiseReport(
        kind=kind,
        rate=rate,
        num_classes=num_classes,
        flip_rate=float(flipped.mean()) if len(clean) else 0.0,
        transition=transition,
        counts=counts,
        flipped=flipped,
        expected_transition=expected_transition,
        expected_flip_rate=expected_flip_rate,
    )


def sample_from_rows(rows, rng):
    """Draws one class per row of a row-stochastic `[N, K]` matrix (inverse-CDF sampling)."""
    cumulative = np.cumsum(rows, axis=1)
    cumulative /= cumulative[:, -1:]
    draws = rng.random(len(rows))
    classes = np.sum(cumulative <= draws[:, None], axis=1)
    return np.minimum(classes, rows.shape[1] - 1).astype(np.int32)


def _instance_rows(labels, features, *, rate, num_classes, seed):
    structure_rng = np.random.default_rng(None if seed is None else check_seed(seed))
    flip_rates = _truncated_normal(
        structure_rng, mean=rate, std=INSTANCE_RATE_STD, size=len(labels)
    )
    if callable(features):
        read = features
    else:
        flat = np.asarray(features).reshape(len(labels), -1)
        read = flat.__getitem__
    dimension = int(np.prod(np.shape(read(np.zeros(1, np.int64)))[1:]))
    chunk_size = max(1, min(FEATURE_CHUNK, FEATURE_CHUNK_BYTES // (8 * dimension)))
    rows = np.zeros((len(labels), num_classes))
    # W[k] is drawn class by class in order, the same stream as one [K, D, K] draw, without
    # holding the whole tensor (100 x 3072 x 100 for CIFAR-100). Features are read a chunk
    # at a time, each sample once, the same way whether they are in memory or on disk.
    for k in range(num_classes):
        projection = structure_rng.standard_normal((dimension, num_classes))
        members = np.flatnonzero(labels == k)
        if not members.size:
            continue
        scores = np.concatenate(
            [
                np.asarray(read(chunk)).reshape(len(chunk), -1).astype(np.float64) @ projection
                for chunk in np.array_split(members, -(-members.size // chunk_size))
            ]
        )
        scores[:, k] = -np.inf
        scores -= scores.max(axis=1, keepdims=True)
        weights = np.exp(scores)
        weights /= weights.sum(axis=1, keepdims=True)
        rows[members] = flip_rates[members, None] * weights
        rows[members, k] += 1.0 - flip_rates[members]
    return rows


def _truncated_normal(rng, *, mean, std, size):
    values = rng.normal(mean, std, size)
    outside = (values < 0.0) | (values > 1.0)
    while outside.any():
        values[outside] = rng.normal(mean, std, outside.sum())
        outside = (values < 0.0) | (values > 1.0)
    return values


def _check_rate(rate):
    return check_fraction("rate", rate, closed=True)


def _check_num_classes(num_classes):
    if (
        isinstance(num_classes, bool)
        or not isinstance(num_classes, numbers.Integral)
        or num_classes < 1
    ):
        raise invalid_value("num_classes", "a positive integer", num_classes)
    return int(num_classes)


def _check_class_map(class_map, num_classes):
    if class_map is None:
        raise ValueError(
            "kind='asymmetric' needs `class_map`: 'cifar10', 'mnist' or a dict "
            "{true class: noisy class}. Received: class_map=None"
        )
    if isinstance(class_map, str):
        if class_map not in CLASS_MAPS:
            raise invalid_value("class_map", f"one of {sorted(CLASS_MAPS)} or a dict", class_map)
        if num_classes != 10:
            raise ValueError(
                f"The '{class_map}' asymmetric map is defined for 10 classes. "
                f"Received: num_classes={num_classes}"
            )
        return CLASS_MAPS[class_map]
    if not isinstance(class_map, dict) or not class_map:
        raise invalid_value("class_map", "'cifar10', 'mnist' or a non-empty dict", class_map)
    for source, target in class_map.items():
        ids = (source, target)
        if not all(isinstance(i, numbers.Integral) and 0 <= i < num_classes for i in ids):
            raise ValueError(
                f"Received an invalid value for `class_map`, expected class ids in "
                f"[0, {num_classes}). Received: class_map has {source!r}: {target!r}"
            )
        if source == target:
            raise ValueError(
                "Received an invalid value for `class_map`, a class cannot flip to itself. "
                f"Received: class_map has {source!r}: {target!r}"
            )
    return {int(s): int(t) for s, t in class_map.items()}


def _check_transition(transition, num_classes):
    if transition is None:
        raise ValueError(
            "kind='transition' needs `transition`, a row-stochastic [K, K] matrix with "
            "T[i, j] = P(noisy = j | true = i). Received: transition=None"
        )
    matrix = np.asarray(transition, dtype=np.float64)
    if matrix.shape != (num_classes, num_classes):
        raise ValueError(
            f"Received an invalid value for `transition`, expected shape "
            f"({num_classes}, {num_classes}). Received: transition with shape {matrix.shape}"
        )
    row_sums = matrix.sum(axis=1)
    if (
        not np.all(np.isfinite(matrix))
        or np.any(matrix < 0)
        or not np.allclose(row_sums, 1.0, atol=1e-6)
    ):
        raise ValueError(
            "Received an invalid value for `transition`, expected a row-stochastic matrix "
            "(non-negative entries, each row summing to 1). Received: transition with row "
            f"sums {np.round(row_sums, 6).tolist()} and minimum {matrix.min()}"
        )
    return matrix
