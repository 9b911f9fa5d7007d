"""Argument and data checks shared across the library, with messages in the Keras style.

Every place where labels or inputs enter the library (`pipelines.from_arrays`,
`InMemoryDataset`, `CLIDMUModel.fit` / `evaluate` / `per_sample_weights`, the tuning tools)
calls the same checks, so the same mistake gets the same message wherever it is made.
"""

import math
import numbers

import numpy as np

LABELS_CONTRACT = "labels must be integer class ids of shape [N]"


def invalid_value(name, expected, value):
    return ValueError(
        f"Received an invalid value for `{name}`, expected {expected}. Received: {name}={value!r}"
    )


def _is_real(value):
    return not isinstance(value, bool) and isinstance(value, numbers.Real)


def check_positive_float(name, value):
    """Returns `value` as a float, or raises unless it is a finite number > 0."""
    if not _is_real(value) or not math.isfinite(value) or not value > 0:
        raise invalid_value(name, "a positive float (finite, > 0)", value)
    return float(value)


def check_non_negative_float(name, value):
    """Returns `value` as a float, or raises unless it is a finite number >= 0."""
    if not _is_real(value) or not math.isfinite(value) or not value >= 0:
        raise invalid_value(name, "a non-negative float (finite, >= 0)", value)
    return float(value)


def check_fraction(name, value, *, closed=False, one=False):
    """Returns `value` as a float in (0, 1), or [0, 1] when `closed`, or (0, 1] when `one`;
    NaN and inf are refused."""
    includes_one = closed or one
    if _is_real(value) and math.isfinite(value):
        above = 0 <= value if closed else 0 < value
        below = value <= 1 if includes_one else value < 1
        if above and below:
            return float(value)
    interval = ("[" if closed else "(") + "0, 1" + ("]" if includes_one else ")")
    raise invalid_value(name, f"a float in {interval}", value)


def check_positive_int(name, value):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise invalid_value(name, "a positive integer", value)
    return int(value)


def check_seed(seed, name="seed"):
    """Returns `seed` as an int, or raises unless it is a non-negative integer (what NumPy's
    generators take; numpy's own message names neither the argument nor the value)."""
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0:
        raise invalid_value(name, "a non-negative integer", seed)
    return int(seed)


def check_bool(name, value):
    """Returns `value` as a Python bool, or raises unless it is `True` or `False`.

    NumPy booleans (`np.True_`, an element of a bool array) are accepted; strings such as
    `"yes"`, numbers (`1`, `0.0`) and None are refused rather than read by their truth value.
    """
    if not isinstance(value, (bool, np.bool_)):
        raise invalid_value(name, "a bool (True or False)", value)
    return bool(value)


def check_choice(name, value, choices):
    if value not in choices:
        raise invalid_value(name, f"one of {sorted(choices)}", value)
    return value


def check_virtual_step(virtual_step, meta_objective):
    """Refuses a head-only virtual step where no meta update takes a virtual step.

    The virtual step is the first step of the meta update (method.md, Algorithm 1); with
    `meta_objective="none"` (plain cross-entropy) there is none, so `"head"` would mean
    nothing. `"full"`, the default, is accepted with every objective.

    Raises:
        ValueError: for `virtual_step="head"` with `meta_objective="none"`, naming both.
    """
    if virtual_step == "head" and meta_objective == "none":
        raise ValueError(
            "Received an invalid value for `virtual_step`: 'head' restricts the virtual step "
            "of the meta update, and meta_objective='none' (plain cross-entropy) has no meta "
            "update; leave virtual_step='full' (the default). Received: virtual_step='head' "
            "with meta_objective='none'"
        )
    return virtual_step


# See `CLIDMUModel`'s `weight_normalization`. "class", not the authors' "batch": on the digits
# grid (BENCHMARKS.md, "Class collapse") the authors' normalisation lost a whole class on one
# seed (CNN, symmetric 60%: ensemble 94.0 +- 4.7 against 96.4 +- 1.1), the MLP under
# asymmetric 40% noise fell below plain cross-entropy (88.3 against CE's 89.7; "class" 93.1),
# and "class" never fell below plain cross-entropy, at a cost of 0.2 to 1.1 points in the
# other five cells.
DEFAULT_WEIGHT_NORMALIZATION = "class"


def check_weight_normalization(weight_normalization):
    """Refuses a `weight_normalization` other than `"batch"`, `"class"` and None.

    Raises:
        ValueError: naming the argument and the value.
    """
    if weight_normalization is not None:
        check_choice("weight_normalization", weight_normalization, ("batch", "class"))
    return weight_normalization


def resolve_weight_normalization(weight_normalization, default, uses_rectifier, meta_objective):
    """The normalisation of the meta-model's sample weights, `None` resolved to `default`.

    Only Meta-Weight-Net (or a custom meta-model mapping losses to weights) gives sample
    weights; VRI's rectifier scales the logits instead (method.md, section 4), and
    `meta_objective="none"` trains plain cross-entropy without a meta-model. There `None` (the
    default) stays `None`, and a value given on purpose is refused rather than ignored.

    Args:
        weight_normalization: `"batch"`, `"class"` or None.
        default: what None comes to where sample weights exist.
        uses_rectifier: whether the meta-model is VRI's rectifier.
        meta_objective: the model's meta objective.

    Returns:
        `"batch"`, `"class"`, or None where there are no sample weights.

    Raises:
        ValueError: for another value, or a value with VRI or `meta_objective="none"`,
            naming the argument and what it was given with.
    """
    check_weight_normalization(weight_normalization)
    if uses_rectifier or meta_objective == "none":
        if weight_normalization is None:
            return None
        without = "meta_model='vri'" if uses_rectifier else "meta_objective='none'"
        raise ValueError(
            "Received an invalid value for `weight_normalization`: only a meta-model that "
            f"weights the samples (Meta-Weight-Net) has weights to normalise, and {without} "
            "has none; leave weight_normalization=None. Received: "
            f"weight_normalization={weight_normalization!r} with {without}"
        )
    return default if weight_normalization is None else weight_normalization


def check_meta_batch_size(size, replicas, name="meta batch size"):
    """Refuses a meta batch on which CLID cannot be scored on every replica.

    CLID compares the samples of a meta batch with each other (method.md, section 3), so it
    needs at least 2. Under `tf.distribute` each replica scores its own share of the global
    meta batch; an uneven split can leave one replica a single sample, which skips the meta
    step on that replica alone, and under `MultiWorkerMirroredStrategy` the other workers
    then wait for it for ever. So with `replicas` > 1 the size must be a multiple of
    `replicas` of at least `2 * replicas`.

    Args:
        size: int, the global meta batch size (samples).
        replicas: int, `strategy.num_replicas_in_sync`.
        name: how the message names the size (an argument or a command-line flag).

    Raises:
        ValueError: naming `name` and `size`, and what would be accepted.
    """
    if replicas == 1 and size < 2:
        raise ValueError(
            "CLID compares the samples of a meta batch with each other and needs at least 2 "
            f"per batch. Received: {name}={size}"
        )
    if replicas > 1 and (size % replicas or size < 2 * replicas):
        raise ValueError(
            f"The meta batch is split over the {replicas} replicas, and CLID needs an equal "
            f"share of at least 2 samples on each: make {name} a multiple of {replicas} of "
            f"at least {2 * replicas}. Received: {name}={size}"
        )
    return size


def check_class_ids(labels, name="y", *, num_classes=None, length=None):
    """The one check of labels entering the library: integer class ids of shape `[N]`.

    Accepted: integer arrays of shape `[N]` or `[N, 1]`, and floating arrays whose values are
    all whole numbers. Refused, with a message naming `name` and what was received: one-hot
    or probability rows (`[N, C]`), fractional floats, strings and other non-numeric
    dtypes, negative ids, ids `>= num_classes`, and a length other than `length`.

    Args:
        labels: array-like (NumPy array, list, or eager tensor).
        name: the argument's name, used in the message.
        num_classes: int or None; when given, ids must lie in `[0, num_classes)`.
        length: int or None; when given, the number of labels required (one per input).

    Returns:
        An int32 NumPy array of shape `[N]`.

    Raises:
        ValueError: for any of the refused cases above.
    """
    array = np.asarray(labels)
    received = f"{name} with shape {array.shape} and dtype {array.dtype}"
    if array.ndim == 2 and array.shape[1] == 1:
        array = array[:, 0]
    if array.ndim != 1:
        hint = ""
        if array.ndim == 2 and array.shape[1] > 1:
            hint = " (one-hot or probability rows? pass their argmax along the last axis)"
        raise ValueError(
            f"Received an invalid value for `{name}`: {LABELS_CONTRACT}. Received: "
            f"{received}{hint}"
        )
    if array.size and not (
        np.issubdtype(array.dtype, np.integer)
        or (
            np.issubdtype(array.dtype, np.floating)
            and np.all(np.isfinite(array))
            and np.all(array == np.round(array))
        )
    ):
        first = _first_non_integer(array)
        raise ValueError(
            f"Received an invalid value for `{name}`: {LABELS_CONTRACT}. Received: "
            f"{received}, for example {name}[{first}]={array[first].item()!r}"
        )
    if length is not None and len(array) != length:
        raise ValueError(
            f"Received an invalid value for `{name}`: {LABELS_CONTRACT}, one per input "
            f"(N={length}). Received: {received}"
        )
    if array.size:
        outside = array < 0 if num_classes is None else (array < 0) | (array >= num_classes)
        bad = np.flatnonzero(outside)
        if bad.size:
            expected = "ids >= 0" if num_classes is None else f"ids in [0, {num_classes})"
            raise ValueError(
                f"Received an invalid value for `{name}`, expected class {expected}. Received: "
                f"{name}[{bad[0]}]={array[bad[0]].item()!r} ({bad.size} labels out of range)"
            )
    return array.astype(np.int32)


def check_clean_labels(clean_labels, labels, num_classes):
    """The one check of a dataset's true training labels (`y_train_clean`).

    A dataset whose given labels are known to be noisy (CIFAR-N's human labels) carries
    the original labels beside them, only to score label-issue detection and to report
    the real noise rate. `InMemoryDataset` and `StreamedDataset` both check them here.

    Args:
        clean_labels: array-like `[N]` of class ids, or None when the given labels are
            taken as true.
        labels: the given training labels `[N]` (already checked).
        num_classes: int; ids must lie in `[0, num_classes)`.

    Returns:
        An int32 NumPy array `[N]`, or None for None.

    Raises:
        ValueError: as `check_class_ids` raises, naming `y_train_clean`, for labels that
            are not class ids in range or not one per given label.
    """
    if clean_labels is None:
        return None
    return check_class_ids(
        clean_labels, "y_train_clean", num_classes=num_classes, length=len(labels)
    )


def check_class_names(class_names, num_classes):
    """Returns `class_names` as a tuple of str naming all `num_classes` classes, or None.

    Raises:
        ValueError: when the names are not `num_classes` many.
    """
    if class_names is None:
        return None
    names = tuple(str(name) for name in class_names)
    if len(names) != num_classes:
        raise ValueError(
            f"`class_names` must name all {num_classes} classes. Received: {len(names)} names"
        )
    return names


def _first_non_integer(array):
    if not (np.issubdtype(array.dtype, np.floating) or np.issubdtype(array.dtype, np.integer)):
        return 0
    return int(np.flatnonzero(~np.isfinite(array) | (array != np.round(array)))[0])


def check_all_classes_present(labels, num_classes, name="y"):
    """Raises when some class id in `[0, num_classes)` has no sample in `labels`.

    Used where `num_classes` is inferred as `max(label) + 1`: a stray large label (a 99
    among 0..2) would otherwise make a 100-class problem into which label noise flips samples.

    Raises:
        ValueError: naming the empty classes, the largest label and how many samples carry it.
    """
    counts = np.bincount(labels, minlength=num_classes)
    empty = np.flatnonzero(counts == 0)
    if not empty.size:
        return
    largest = int(labels.max())
    shown = ", ".join(str(k) for k in empty[:10]) + (", ..." if empty.size > 10 else "")
    raise ValueError(
        f"The labels in `{name}` leave {empty.size} of the {num_classes} inferred classes "
        f"without any sample (class ids {shown}); the largest label, {largest}, is carried "
        f"by {int(counts[largest])} sample(s). `num_classes` was inferred as max(label) + 1 "
        f"= {num_classes}. Fix the stray labels, or, if the empty classes are intended, pass "
        f"num_classes={num_classes} (and class_names) explicitly."
    )


def check_finite_inputs(x, name="x"):
    """Raises if the floating-point arrays in `x` hold NaN or inf (`x` may be a dict/tuple).

    Args:
        x: an array, or a (nested) dict, list or tuple of arrays (multi-input models).
        name: the argument's name, used in the message.

    Raises:
        ValueError: naming how many values are not finite and the index of the first.
    """
    for path, array in _flatten_with_paths(x, name):
        if not np.issubdtype(array.dtype, np.floating) and not np.issubdtype(
            array.dtype, np.complexfloating
        ):
            continue
        finite = np.isfinite(array)
        if finite.all():
            continue
        bad = np.argwhere(~finite)
        index = ", ".join(str(int(i)) for i in bad[0])
        raise ValueError(
            f"Received an invalid value for `{path}`, expected finite numbers. Received: "
            f"{len(bad)} NaN or inf value(s) in {path} (shape {array.shape}), the first at "
            f"{path}[{index}]={array[tuple(bad[0])].item()!r}. Clean or drop these samples."
        )


def _flatten_with_paths(x, name):
    if isinstance(x, dict):
        for key in x:
            yield from _flatten_with_paths(x[key], f"{name}[{key!r}]")
    elif isinstance(x, (list, tuple)) and x and not np.isscalar(x[0]) and _is_array_like(x[0]):
        for index, item in enumerate(x):
            yield from _flatten_with_paths(item, f"{name}[{index}]")
    elif x is not None:
        array = np.asarray(x)
        if array.dtype != object:
            yield name, array


def _is_array_like(value):
    return hasattr(value, "shape") or isinstance(value, (dict, list, tuple))
