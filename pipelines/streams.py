"""The `tf.data` streams: training, meta and evaluation, and label noise inside a pipeline."""


import numpy as np
import tensorflow as tf

from clidmu_tf.pipelines.augmentation import Augmentation
from clidmu_tf.pipelines.datasets import load_dataset
from clidmu_tf.pipelines.in_memory_dataset import InMemoryDataset
from clidmu_tf.pipelines.noise import NOISE_KINDS, corrupt_labels, noise_report
from clidmu_tf.pipelines.splits import labeled_split, stratified_split
from clidmu_tf.pipelines.streamed_dataset import StreamedDataset
from clidmu_tf.pipelines.training_data import TrainingData
from clidmu_tf.validation import (
    check_bool,
    check_choice,
    check_class_ids,
    check_fraction,
    check_positive_int,
    check_seed,
    invalid_value,
)

META_OBJECTIVES = ("clid", "ce_clean", "ce_noisy", "mae_noisy", "none")
# The paper's meta set: 1000 samples. Small datasets get a fifth of their training set.
PAPER_META_SIZE = 1000
# The held-out selection set's default size: a tenth of the training set, at most 500.
SELECTION_SIZE_CAP = 500
SELECTION_FRACTION = 10


def default_selection_size(num_train):
    """The held-out selection set's default size for `num_train` training samples.

    A tenth of the training set, at most 500 and at least 2 (CLID compares the samples of a
    batch with each other): enough for a stable per-epoch CLID, little enough to leave
    training nearly all the data. Returns 0 when fewer than 20 samples leave nothing to
    spare.
    """
    if num_train < 2 * SELECTION_FRACTION:
        return 0
    return max(2, min(SELECTION_SIZE_CAP, num_train // SELECTION_FRACTION))


def make_training_data(
    dataset="digits",
    *,
    meta_objective="clid",
    noise=None,
    noise_rate=None,
    noise_transition=None,
    class_map=None,
    meta_size=None,
    batch_size=100,
    meta_batch_size=None,
    eval_batch_size=None,
    labeled_fraction=None,
    unlabeled_inputs=None,
    train_size=None,
    selection_size=None,
    augment="auto",
    augment_meta=True,
    seed=0,
    data_dir=None,
):
    """Builds the training, meta and evaluation streams that `CLIDMUModel.fit` reads.

    Steps: load the data; inject label noise into the clean training labels (`noise`),
    drawn once from `seed` and aligned by index; choose the meta set; build the streams.

    The meta set depends on `meta_objective`:

    - `"clid"`: a seeded random subset of the noisy training set. The samples stay in
      training; the meta stream drops their labels.
    - `"ce_clean"`: a class-balanced subset (by the true labels) removed from training,
      with its clean labels (the classical clean-meta-set oracle).
    - `"ce_noisy"`, `"mae_noisy"`: a class-balanced subset (by the noisy labels) removed
      from training, with its noisy labels.
    - `"none"`: plain training, no meta stream; the meta set is still chosen as for
      `"clid"` (`meta_stream`), for callbacks that score it.

    Semi-supervised mode (`labeled_fraction`): a stratified `labeled_fraction` of the
    training set keeps its (noisy) labels and forms the training stream; the unlabeled
    rest feeds the meta set. `unlabeled_inputs`, samples that never had labels (for example
    a folder of unlabelled images), join the meta set's candidates the same way. Both apply
    to `"clid"` and `"none"`, the objectives that read no meta labels. With either, the
    meta set is drawn from the unlabelled samples only.

    Held-out selection set (`selection_size`): a seeded subset of samples left out of
    training and of the meta set, served un-augmented as `selection_stream`, for scoring the
    snapshots by CLID on inputs the network never fitted
    (`CLIDSnapshotEnsemble(data.selection_stream, ...)`). This departs from the paper, which
    scores the meta set, a part of the training set: once a network memorises wrong labels,
    CLID on the samples it trained on keeps falling while accuracy falls (BENCHMARKS.md,
    "Memorisation and selection"). Without unlabelled samples it is taken from the training
    set (after `train_size`, before the meta split), stratified by the given (noisy) labels;
    its labels are never read for training, and `selection_noisy_labels` keeps them for
    ranking label issues. In semi-supervised mode it costs no labels: it is drawn at random
    (seeded; no labels to stratify by) from the unlabelled samples (those beyond
    `labeled_fraction` and `unlabeled_inputs`) that are not in the meta set, which is drawn
    first and is the same as without a selection set; it has no given labels then
    (`selection_from_unlabeled`).

    The training stream is shuffled (reshuffled each epoch, reproducibly from `seed`),
    augmented per batch, batched and prefetched; the meta stream is shuffled, repeated and
    batched in `meta_batch_size` independently of it; the evaluation stream is in order,
    un-augmented, with clean labels.

    Args:
        dataset: a name for `load_dataset` (loaded with its defaults, so the held-out test
            split of `digits` and `mnist_5k` is the same whatever `seed` is; call
            `load_dataset` yourself for other options), an `InMemoryDataset`, or a
            `StreamedDataset` (`stream_image_folder`), whose images are decoded from disk
            inside the streams.
        meta_objective: one of `"clid"`, `"ce_clean"`, `"ce_noisy"`, `"mae_noisy"`,
            `"none"`.
        noise: None (train with the labels as they are, e.g. CIFAR-N's human labels) or
            a `corrupt_labels` kind: `"symmetric"`, `"symmetric_exclusive"`,
            `"asymmetric"`, `"cifar100_superclass"`, `"pair"`, `"random_flip"`,
            `"instance"` (uses the images scaled to [0, 1] as features), `"transition"`.
        noise_rate: float in [0, 1], the nominal rate (None for `"transition"`).
        noise_transition: the `[K, K]` matrix for `noise="transition"`,
            `T[i, j] = P(noisy = j | true = i)`.
        class_map: the asymmetric map; defaults to the dataset's (`"cifar10"` for CIFAR-10,
            `"mnist"` for digit datasets).
        meta_size: int, the meta set's size; default `min(1000, N // 5)` for `N` training
            samples (1000, the paper's size, for CIFAR).
        batch_size: int, the training batch size (the paper: 100).
        meta_batch_size: int, default `min(batch_size, meta_size)`.
        eval_batch_size: int, default `batch_size`.
        labeled_fraction: float in (0, 1] for semi-supervised mode (1 keeps every label),
            else None.
        unlabeled_inputs: None, or an array `[U, *input_shape]` of unlabelled samples, of the
            dataset's dtype (uint8 pixels for image data), for the meta set.
        train_size: int, train on a seeded stratified subset of this many training samples
            (small-scale studies); None keeps all.
        selection_size: None or 0 (no held-out selection set: the paper), or an int of at
            least 2, the size of the held-out selection set (see above and
            `default_selection_size`): from the training set, leaving at least 4 samples;
            in semi-supervised mode, at most the unlabelled samples outside the meta set.
        augment: `"auto"` (the dataset's recipe: flip and crop for CIFAR, 1-pixel shifts for
            digit-like greyscale images, none for folders and arrays; whatever the model:
            `clidmu-tf train --augment auto` uses none with an MLP, which shifts hurt),
            None or `"none"`, a recipe name of `Augmentation.RECIPES`, or an `Augmentation`.
        augment_meta: bool, augment the meta stream like the training stream (as the
            authors' code does, the meta set being drawn from the training data).
        seed: int, seeds the noise (exactly as `corrupt_labels(..., seed=seed)`), the
            splits, the shuffling and the augmentation.
        data_dir: the tfds data directory when `dataset` is a tfds name.

    Returns:
        A `TrainingData`.

    Raises:
        ValueError: for invalid arguments, before any data is loaded where possible; in
            semi-supervised mode, a `selection_size` larger than the unlabelled samples left
            outside the meta set, or a `labeled_fraction` that leaves a class without a
            labelled sample (`labeled_split`).

    Example:

    >>> data = make_training_data(
    ...     "digits", noise="symmetric", noise_rate=0.4, meta_size=200, seed=0)
    >>> (x, y), x_meta = next(iter(data.train))
    >>> x.shape, y.dtype, x_meta.shape
    (TensorShape([100, 8, 8, 1]), tf.int32, TensorShape([100, 8, 8, 1]))
    """
    check_choice("meta_objective", meta_objective, META_OBJECTIVES)
    if noise is not None:
        check_choice("noise", noise, NOISE_KINDS)
    batch_size = check_positive_int("batch_size", batch_size)
    if selection_size is not None and selection_size != 0:
        check_positive_int("selection_size", selection_size)
        if selection_size < 2:
            # CLID compares the samples of a batch with each other.
            raise invalid_value("selection_size", "0, None or an integer of at least 2", selection_size)
    for name, value in (
        ("meta_size", meta_size),
        ("meta_batch_size", meta_batch_size),
        ("eval_batch_size", eval_batch_size),
        ("train_size", train_size),
    ):
        if value is not None:
            check_positive_int(name, value)
    if labeled_fraction is not None:
        labeled_fraction = check_fraction("labeled_fraction", labeled_fraction, one=True)
        if labeled_fraction == 1:
            labeled_fraction = None
    for name, value in (("labeled_fraction", labeled_fraction), ("unlabeled_inputs", unlabeled_inputs)):
        if value is not None and meta_objective not in ("clid", "none"):
            raise ValueError(
                "Semi-supervised mode feeds the meta set from unlabeled samples, so it needs a "
                "meta objective that reads no labels: 'clid' or 'none'. Received: "
                f"meta_objective={meta_objective!r} with {name} given"
            )
    augment_meta = check_bool("augment_meta", augment_meta)
    seed = check_seed(seed)
    augmentation = _resolve_augmentation(augment, None)

    if isinstance(dataset, str):
        data = load_dataset(dataset, data_dir=data_dir)
    elif isinstance(dataset, (InMemoryDataset, StreamedDataset)):
        data = dataset
    else:
        raise invalid_value(
            "dataset",
            "a dataset name, an InMemoryDataset or a StreamedDataset",
            type(dataset).__name__,
        )
    augmentation = _resolve_augmentation(augment, data)
    augmentation.check_input_shape(data.input_shape)
    if unlabeled_inputs is not None:
        if isinstance(data, StreamedDataset):
            raise ValueError(
                "`unlabeled_inputs` are arrays held in memory; a StreamedDataset reads its "
                "images from disk. Load the folder with `load_image_folder` to combine them."
            )
        unlabeled_inputs = _check_unlabeled_inputs(unlabeled_inputs, data)
    split_seed, train_seed, meta_seed = (
        int(state) for state in np.random.SeedSequence(seed).generate_state(3)
    )
    pool = np.arange(len(data.y_train))
    if train_size is not None:
        if train_size > len(pool):
            raise invalid_value("train_size", f"an integer in [1, {len(pool)}]", train_size)
        pool, _ = stratified_split(data.clean_train_labels, size=train_size, seed=split_seed)

    clean = data.clean_train_labels
    noisy, expected, kind = data.y_train, None, "none"
    # The noise is drawn over the whole training set first, so that a sample's noisy label
    # does not depend on which split it lands in.
    if data.y_train_clean is not None:
        kind = "observed"
    if noise is not None:
        noisy, drawn = data.corrupt_train_labels(
            kind=noise, rate=noise_rate, seed=seed, transition=noise_transition, class_map=class_map
        )
        expected, kind = drawn.expected_transition, noise

    selection_indices = np.zeros([0], np.int64)
    # With unlabelled samples, the held-out selection set is drawn from them (below), since
    # they are never trained on with labels; else from the labelled training set.
    from_unlabeled = labeled_fraction is not None or unlabeled_inputs is not None
    if selection_size and not from_unlabeled:
        # At least 4 samples are left to train on and to draw a meta set of 2 from.
        if selection_size > len(pool) - 4:
            raise invalid_value(
                "selection_size", f"an integer in [2, {len(pool) - 4}] for this data", selection_size
            )
        chosen, kept = stratified_split(noisy[pool], size=selection_size, seed=split_seed + 1)
        selection_indices, pool = pool[chosen], pool[kept]
    train_indices, meta_indices, meta_candidates = _split_meta(
        pool,
        clean=clean,
        noisy=noisy,
        meta_objective=meta_objective,
        meta_size=meta_size,
        labeled_fraction=labeled_fraction,
        num_unlabeled=0 if unlabeled_inputs is None else len(unlabeled_inputs),
        seed=split_seed,
    )
    if selection_size and from_unlabeled:
        selection_indices = _draw_unlabeled_selection(
            meta_candidates, meta_indices, selection_size, seed=split_seed + 1
        )
    # The held-out samples with a given label: none when they come from the unlabelled pool.
    labeled_selection = selection_indices[:0] if from_unlabeled else selection_indices
    meta_size = len(meta_indices)
    meta_batch_size = min(batch_size, meta_size) if meta_batch_size is None else meta_batch_size
    if meta_batch_size > meta_size:
        raise invalid_value(
            "meta_batch_size", f"an integer in [1, meta_size={meta_size}]", meta_batch_size
        )
    # The report covers the labels the training stream carries.
    report = noise_report(
        clean[train_indices],
        noisy[train_indices],
        num_classes=data.num_classes,
        kind=kind,
        rate=noise_rate if noise is not None else None,
        expected_transition=expected,
    )

    if isinstance(data, StreamedDataset):
        read_train, read_test = data.pixel_reader("train"), data.pixel_reader("test")
    else:
        # Positions from len(x_train) on are the unlabelled inputs; only the meta stream
        # reads them.
        stored = (
            data.x_train
            if unlabeled_inputs is None
            else np.concatenate([data.x_train, unlabeled_inputs])
        )
        read_train, read_test = _gatherer(stored), _gatherer(data.x_test)
    noisy_tensor = tf.constant(noisy)
    train = _batches(
        read_train,
        noisy_tensor,
        train_indices,
        batch_size=batch_size,
        scale=data.pixel_scale,
        shuffle_seed=train_seed,
        augmentation=augmentation,
    )
    meta_labels = {"ce_clean": clean, "ce_noisy": noisy, "mae_noisy": noisy}.get(meta_objective)
    if meta_objective != "none":
        meta = _batches(
            read_train,
            None if meta_labels is None else tf.constant(meta_labels),
            meta_indices,
            batch_size=meta_batch_size,
            scale=data.pixel_scale,
            shuffle_seed=meta_seed,
            augmentation=augmentation if augment_meta else None,
            repeat=True,
        )
        train = tf.data.Dataset.zip(train, meta)
    evaluation = _batches(
        read_test,
        tf.constant(data.y_test),
        np.arange(len(data.y_test)),
        batch_size=eval_batch_size or batch_size,
        scale=data.pixel_scale,
    )
    return TrainingData(
        train=train.prefetch(tf.data.AUTOTUNE),
        evaluation=evaluation.prefetch(tf.data.AUTOTUNE),
        meta_stream=_batches(
            read_train, None, meta_indices, batch_size=meta_batch_size, scale=data.pixel_scale
        ).prefetch(tf.data.AUTOTUNE),
        meta_labels=None if meta_labels is None else meta_labels[meta_indices],
        selection_stream=(
            _batches(
                read_train, None, selection_indices, batch_size=meta_batch_size,
                scale=data.pixel_scale,
            ).prefetch(tf.data.AUTOTUNE)
            if len(selection_indices)
            else None
        ),
        selection_indices=selection_indices,
        selection_noisy_labels=noisy[labeled_selection],
        selection_clean_labels=clean[labeled_selection],
        selection_from_unlabeled=bool(from_unlabeled and len(selection_indices)),
        noise_report=report,
        num_classes=data.num_classes,
        input_shape=data.input_shape,
        train_indices=train_indices,
        meta_indices=meta_indices,
        train_noisy_labels=noisy[train_indices],
        train_clean_labels=clean[train_indices],
        meta_objective=meta_objective,
        augmentation=augmentation,
        dataset=data,
        batch_size=batch_size,
        meta_batch_size=meta_batch_size,
        steps_per_epoch=-(-len(train_indices) // batch_size),
    )


def apply_label_noise(
    dataset,
    *,
    kind,
    rate,
    num_classes,
    seed,
    features=None,
    transition=None,
    class_map=None,
    label_key="label",
):
    """Injects label noise into a `tf.data` pipeline, aligned by element position.

    Reads the labels once (and, for `kind="instance"` without `features`, the inputs,
    flattened as they are), draws the noise with `corrupt_labels`, and returns a dataset
    that swaps each element's label for its noisy one by position. Apply it to the
    unshuffled, unbatched source, then shuffle, shard and batch as usual: every epoch and
    every shard sees the same noisy labels. Should the source yield its elements in
    another order on a later pass, the wrapped dataset raises rather than misalign them.

    Args:
        dataset: a finite `tf.data.Dataset` of `(x, y, ...)` tuples or of dicts holding
            `label_key`, with scalar integer labels.
        kind, rate, num_classes, seed, features, transition, class_map: as for
            `corrupt_labels`.
        label_key: the label's key when the elements are dicts.

    Returns:
        A tuple `(noisy_dataset, report)`.

    Raises:
        ValueError: for an infinite dataset, batched elements, or the errors of
            `corrupt_labels`.

    Example:

    >>> clean = tf.data.Dataset.from_tensor_slices(
    ...     (tf.zeros([1000, 2]), tf.range(1000) % 10))
    >>> noisy, report = apply_label_noise(
    ...     clean, kind="symmetric", rate=0.5, num_classes=10, seed=0)
    >>> 0.4 < report.flip_rate < 0.5
    True
    """
    if dataset.cardinality() == tf.data.INFINITE_CARDINALITY:
        raise ValueError("`dataset` is infinite: apply the noise before `repeat()`.")
    spec = dataset.element_spec
    if isinstance(spec, dict):
        if label_key not in spec:
            raise ValueError(
                f"The dataset's elements have no {label_key!r}. Their keys: {sorted(spec)}"
            )
        get_label = lambda element: element[label_key]  # noqa: E731
        get_input = lambda element: next(  # noqa: E731
            value for key, value in element.items() if key != label_key
        )

        def set_label(element, label):
            return {**element, label_key: label}

    elif isinstance(spec, tuple) and len(spec) >= 2:
        get_label = lambda element: element[1]  # noqa: E731
        get_input = lambda element: element[0]  # noqa: E731

        def set_label(element, label):
            return (element[0], label, *element[2:])

    else:
        raise ValueError(
            "`dataset` must yield `(x, y, ...)` tuples or dicts with a label. Received "
            f"elements of spec {spec}"
        )
    label_spec = get_label(spec)
    if label_spec.shape.rank != 0 or not label_spec.dtype.is_integer:
        raise ValueError(
            "`apply_label_noise` needs unbatched elements with scalar integer labels; apply it "
            f"before `batch()`. Received: labels of spec {label_spec}"
        )
    unpack = (lambda *element: element) if isinstance(spec, tuple) else (lambda element: element)
    wants_inputs = kind == "instance" and features is None
    labels, inputs = [], []
    for element in dataset.map(unpack).batch(4096).as_numpy_iterator():
        labels.append(get_label(element))
        if wants_inputs:
            batch_inputs = np.asarray(get_input(element))
            inputs.append(batch_inputs.reshape(len(batch_inputs), -1).astype(np.float32))
    labels = np.concatenate(labels) if labels else np.zeros([0], np.int64)
    labels = check_class_ids(labels, "labels", num_classes=num_classes)
    if wants_inputs:
        features = np.concatenate(inputs) if inputs else None
    noisy, report = corrupt_labels(
        labels,
        kind=kind,
        rate=rate,
        num_classes=num_classes,
        seed=seed,
        features=features,
        transition=transition,
        class_map=class_map,
    )
    clean_table, noisy_table = tf.constant(labels), tf.constant(noisy)

    def relabel(position, element):
        label = get_label(element)
        same_source = tf.debugging.assert_equal(
            tf.cast(label, tf.int32),
            tf.gather(clean_table, position),
            message=(
                "apply_label_noise: the source dataset yielded its elements in another order "
                "than when the noise was drawn; make its order deterministic."
            ),
        )
        with tf.control_dependencies([same_source]):
            new_label = tf.cast(tf.gather(noisy_table, position), label.dtype)
        return set_label(element, new_label)

    positioned = dataset.map(unpack).enumerate()
    return positioned.map(lambda position, element: relabel(position, element)), report


def input_stream(dataset, indices, *, batch_size, split="train", labels=None, shuffle_seed=None):
    """Some samples of a dataset as a finite stream, read a few batches at a time.

    The samples are read as the training stream reads them (gathered from memory, or
    decoded from disk for a `StreamedDataset`) and scaled the same way, but un-augmented:
    a pass over the stream never holds more than a few batches. Without `labels` it yields
    input batches, for passes that score the samples (evaluation, the training dynamics,
    the label-issue ranking); with `labels` it yields `(x, y)` batches, for training on
    them (`clidmu-tf tune` on a streamed dataset).

    Args:
        dataset: an `InMemoryDataset` or a `StreamedDataset`.
        indices: int array `[n]`, positions in its `split`.
        batch_size: positive int.
        split: `"train"` or `"test"`, the split `indices` point into.
        labels: None, or int array `[N]`: one label per sample of the split (for example
            the noisy training labels); the stream then pairs each input with its label.
        shuffle_seed: None, to read the samples in the order of `indices`; or an int, to
            shuffle them (the indices, not the images: the shuffle buffer stays small),
            reshuffled at every pass, reproducibly from the seed.

    Returns:
        A `tf.data.Dataset` of float32 batches `[b, *input_shape]` (or of `(x, y)` with
        int32 labels `[b]`), `ceil(n / batch_size)` of them, prefetched.

    Raises:
        ValueError: for a non-positive `batch_size`, a `split` other than `"train"` or
            `"test"`, `indices` that are not integer positions in `[0, N)` of the split's N
            samples, or `labels` that are not N class ids.

    Example:

    >>> data = load_dataset("digits")
    >>> stream = input_stream(data, np.arange(len(data.y_test)), batch_size=100, split="test")
    >>> [tuple(batch.shape) for batch in stream][-1]
    (59, 8, 8, 1)
    """
    batch_size = check_positive_int("batch_size", batch_size)
    split = check_choice("split", split, ("train", "test"))
    positions = np.asarray(indices)
    size = len(getattr(dataset, f"y_{split}"))
    if positions.ndim != 1 or not (
        positions.size == 0 or np.issubdtype(positions.dtype, np.integer)
    ) or (positions.size and (positions.min() < 0 or positions.max() >= size)):
        raise invalid_value(
            "indices", f"a 1-D array of integer positions in [0, {size}) of the {split} split",
            indices,
        )
    if labels is not None:
        labels = tf.constant(
            check_class_ids(labels, "labels", num_classes=dataset.num_classes, length=size)
        )
    if isinstance(dataset, StreamedDataset):
        read = dataset.pixel_reader(split)
    else:
        read = _gatherer(getattr(dataset, f"x_{split}"))
    return _batches(
        read, labels, positions, batch_size=batch_size, scale=dataset.pixel_scale,
        shuffle_seed=shuffle_seed,
    ).prefetch(tf.data.AUTOTUNE)


def _split_meta(
    pool, *, clean, noisy, meta_objective, meta_size, labeled_fraction, num_unlabeled, seed
):
    """Returns `(train_indices, meta_indices, candidates)`, positions in the training arrays;
    `candidates` are those the meta set was drawn from.

    Positions from `len(clean)` on stand for the `num_unlabeled` unlabelled inputs.
    """
    rng = np.random.default_rng(seed)
    extra = np.arange(len(clean), len(clean) + num_unlabeled)
    if labeled_fraction is not None:
        labeled, unlabeled = labeled_split(clean[pool], labeled_fraction, seed=seed)
        train, candidates = pool[labeled], np.concatenate([pool[unlabeled], extra])
    elif num_unlabeled:
        train, candidates = pool, extra
    else:
        train, candidates = pool, pool
    removes = meta_objective in ("ce_clean", "ce_noisy", "mae_noisy")
    available = len(candidates) - 1 if removes else len(candidates)
    if meta_size is None:
        meta_size = max(1, min(PAPER_META_SIZE, len(pool) // 5, available))
    if not 1 <= meta_size <= available:
        raise invalid_value(
            "meta_size", f"an integer in [1, {available}] for this data", meta_size
        )
    if not removes:
        return train, np.sort(rng.choice(candidates, size=meta_size, replace=False)), candidates
    strata = clean if meta_objective == "ce_clean" else noisy
    meta, kept = stratified_split(strata[pool], size=meta_size, seed=seed, balanced=True)
    return pool[kept], pool[meta], candidates


def _draw_unlabeled_selection(unlabeled, meta_indices, selection_size, *, seed):
    """The held-out selection set, a seeded random draw (no labels to stratify by) of
    `selection_size` unlabelled positions outside the meta set, sorted."""
    spare = np.setdiff1d(unlabeled, meta_indices)
    if selection_size > len(spare):
        raise ValueError(
            "Received an invalid value for `selection_size`: the held-out selection set is "
            "drawn from the unlabelled samples outside the meta set, and "
            f"{len(spare)} of them are left (of {len(unlabeled)} unlabelled, {len(meta_indices)} "
            "in the meta set). Lower selection_size or meta_size, or keep fewer labels. "
            f"Received: selection_size={selection_size}"
        )
    return np.sort(np.random.default_rng(seed).choice(spare, size=selection_size, replace=False))


def _check_unlabeled_inputs(unlabeled_inputs, data):
    """The unlabelled inputs as an array shaped and typed like the dataset's training inputs."""
    try:
        array = np.asarray(unlabeled_inputs)
        received = f"unlabeled_inputs of shape {array.shape}"
    except ValueError:  # ragged, such as an `(x, y)` pair
        array = np.empty((0,))
        received = f"unlabeled_inputs of type {type(unlabeled_inputs).__name__}, not an array"
    if array.ndim < 2 or not len(array) or array.shape[1:] != data.input_shape:
        raise ValueError(
            "Received an invalid value for `unlabeled_inputs`, expected a non-empty array of "
            f"shape [U, {', '.join(map(str, data.input_shape))}] like the dataset's inputs. "
            f"Received: {received}"
        )
    if array.dtype != data.x_train.dtype:
        raise ValueError(
            "Received an invalid value for `unlabeled_inputs`, expected the dataset's dtype "
            f"{data.x_train.dtype} (they are scaled the same way). Received: unlabeled_inputs "
            f"of dtype {array.dtype}"
        )
    return array


def _gatherer(array):
    """A `tf.data` function from a batch of indices to those rows of an in-memory array."""
    table = tf.constant(array)
    return lambda batch_indices: tf.gather(table, batch_indices)


def _batches(
    read,
    labels,
    indices,
    *,
    batch_size,
    scale,
    shuffle_seed=None,
    augmentation=None,
    repeat=False,
):
    """Batches of `(x, y)` (or `x` when `labels` is None) gathered at `indices`.

    Shuffling indices rather than images keeps the shuffle buffer small; each batch is
    read (`read`: indices to stored values, gathered from memory or decoded from disk),
    scaled to float32 and augmented in one parallel map.
    """
    stream = tf.data.Dataset.from_tensor_slices(np.asarray(indices, dtype=np.int64))
    if shuffle_seed is not None:
        stream = stream.shuffle(len(indices), seed=shuffle_seed, reshuffle_each_iteration=True)
    if repeat:
        stream = stream.repeat()
    stream = stream.batch(batch_size, drop_remainder=repeat)
    augment = augmentation is not None and not augmentation.is_identity
    if augment:
        seeds = tf.data.Dataset.random(seed=shuffle_seed, rerandomize_each_iteration=True)
        stream = tf.data.Dataset.zip(stream, seeds.batch(2))

    def gather(batch_indices, seed=None):
        x = tf.cast(read(batch_indices), tf.float32) * scale
        if augment:
            x = augmentation(x, seed)
        if labels is None:
            return x
        return x, tf.cast(tf.gather(labels, batch_indices), tf.int32)

    return stream.map(gather, num_parallel_calls=tf.data.AUTOTUNE)


def _resolve_augmentation(augment, data):
    """An `Augmentation` from `augment`; `data` None only validates the argument."""
    if isinstance(augment, Augmentation):
        return augment
    if augment is None:
        return Augmentation()
    if augment == "auto":
        return None if data is None else Augmentation.from_recipe(data.augmentation)
    if augment in Augmentation.RECIPES:
        return Augmentation.from_recipe(augment)
    expected = f"'auto', None, one of {sorted(Augmentation.RECIPES)} or an Augmentation"
    raise invalid_value("augment", expected, augment)
