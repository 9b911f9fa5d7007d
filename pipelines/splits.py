"""Seeded, class-aware subsets of a labelled array."""

import numbers

import numpy as np

from clidmu_tf.validation import check_bool, check_seed, invalid_value


def stratified_split(labels, *, size, seed, balanced=False):
    """Picks `size` indices spread over the classes, and returns them with the rest.

    With `balanced=False` every class contributes in proportion to its frequency (within
    one sample); with `balanced=True` the classes contribute equally, as far as their
    samples allow (the clean meta sets of Meta-Weight-Net and CLID-MU's baselines). Within
    a class the samples are chosen at random.

    Args:
        labels: 1-D integer array.
        size: int in [0, len(labels)], how many indices to pick.
        seed: int seed.
        balanced: bool, equal counts per class instead of proportional ones.

    Returns:
        A tuple `(selected, rest)` of sorted int64 index arrays that partition
        `range(len(labels))`.

    Example:

    >>> selected, rest = stratified_split([0, 0, 0, 0, 1, 1], size=3, seed=0)
    >>> np.bincount(np.asarray([0, 0, 0, 0, 1, 1])[selected]).tolist()
    [2, 1]
    """
    balanced = check_bool("balanced", balanced)
    labels = np.asarray(labels)
    count = len(labels)
    if (
        isinstance(size, bool)
        or not isinstance(size, numbers.Integral)
        or not 0 <= size <= count
    ):
        raise invalid_value("size", f"an integer in [0, {count}]", size)
    rng = np.random.default_rng(check_seed(seed))
    order = rng.permutation(count)
    shuffled = labels[order]
    _, class_ids, class_sizes = np.unique(shuffled, return_inverse=True, return_counts=True)
    by_class = np.argsort(class_ids, kind="stable")
    starts = np.concatenate([[0], np.cumsum(class_sizes)[:-1]])
    rank = np.empty(count, dtype=np.int64)
    rank[by_class] = np.arange(count) - np.repeat(starts, class_sizes)
    if balanced:
        key = rank.astype(np.float64)
    else:
        key = (rank + 0.5) / class_sizes[class_ids]
    # Ties (the same rank in several classes) go to classes in a random order.
    class_priority = rng.permutation(len(class_sizes))[class_ids]
    chosen = np.lexsort((class_priority, key))[:size]
    mask = np.zeros(count, dtype=bool)
    mask[order[chosen]] = True
    return np.flatnonzero(mask), np.flatnonzero(~mask)


def labeled_split(labels, fraction, *, seed):
    """The semi-supervised split: a stratified `fraction` of the samples keeps its labels.

    CLID needs no labels on the meta set (method.md, section 1), so in the semi-supervised
    setting the labelled part trains and the rest, unlabelled, feeds CLID's meta set.

    Args:
        labels: 1-D integer array `[N]`, the classes to stratify by.
        fraction: float in (0, 1], the share that keeps its labels (at least one sample).
        seed: int seed.

    Returns:
        `(labeled, unlabeled)`, sorted int64 index arrays that partition `range(N)`.

    Raises:
        ValueError: naming `labeled_fraction` when the labelled part would leave a class
            without a labelled sample: that class could not be learnt, and the label-issue
            ranking (cleanlab) needs every class.

    Example:

    >>> labeled, unlabeled = labeled_split([0, 0, 0, 0, 1, 1, 1, 1], 0.5, seed=0)
    >>> len(labeled), len(unlabeled)
    (4, 4)
    """
    labels = np.asarray(labels)
    labeled, unlabeled = stratified_split(
        labels, size=max(1, round(fraction * len(labels))), seed=seed
    )
    classes = len(np.unique(labels))
    missing = classes - len(np.unique(labels[labeled]))
    if missing:
        raise ValueError(
            f"Received an invalid value for `labeled_fraction`: it keeps the labels of "
            f"{len(labeled)} of the {len(labels)} training samples, which leaves {missing} of "
            f"the {classes} classes without a labelled sample; keep at least one per class (a "
            f"fraction of at least {classes / len(labels):.3g} here). Received: "
            f"labeled_fraction={fraction}"
        )
    return labeled, unlabeled
