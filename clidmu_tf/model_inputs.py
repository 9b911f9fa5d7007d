"""Model inputs read batch by batch, from an array in memory or from a finite `tf.data`
stream, so that a pass over a dataset larger than memory never holds it whole."""

import numpy as np
import tensorflow as tf

from clidmu_tf.validation import check_finite_inputs, invalid_value


def check_model_inputs(inputs, name, *, min_samples=1):
    """Validates inputs for `input_batches`: an array, a dict / tuple of arrays, or a dataset.

    Args:
        inputs: an array `[N, ...]` (a dict or tuple of such arrays for a multi-input
            model), or a finite `tf.data.Dataset` of input batches (or of tuples whose first
            item is the input batch).
        name: the argument's name, for the error messages.
        min_samples: the fewest samples an array may hold.

    Returns:
        The dataset as it is, or the arrays as numpy arrays in their structure.

    Raises:
        ValueError: for an infinite dataset, or arrays that are empty, hold fewer than
            `min_samples` samples, are not at least 2-D, hold NaN or inf, or are of
            different lengths.
    """
    if isinstance(inputs, tf.data.Dataset):
        if inputs.cardinality() == tf.data.INFINITE_CARDINALITY:
            raise ValueError(
                f"Received an invalid value for `{name}`, expected a finite dataset (it is "
                "read whole, batch by batch; pass it without `.repeat()`). Received: "
                f"{name} with infinite cardinality"
            )
        return inputs
    structure = inputs if isinstance(inputs, (dict, tuple)) else None
    try:
        arrays = [np.asarray(leaf) for leaf in tf.nest.flatten(inputs)]
    except (TypeError, ValueError):
        raise invalid_value(name, "an array or a tf.data.Dataset of inputs", inputs) from None
    if structure is None:
        arrays = [np.asarray(inputs)]
    lengths = {array.shape[0] if array.ndim else 0 for array in arrays}
    for array in arrays:
        if (
            array.ndim < 2
            or array.shape[0] < min_samples
            or array.size == 0
            or array.dtype == object
        ):
            raise ValueError(
                f"Received an invalid value for `{name}`, expected a non-empty array of at "
                f"least {min_samples} {'sample' if min_samples == 1 else 'samples'}, shape [N, ...] (or a dict / tuple of such "
                f"arrays for a multi-input model). Received: {name}.shape={array.shape}, "
                f"dtype {array.dtype}"
            )
    if len(lengths) > 1:
        raise ValueError(
            f"Received an invalid value for `{name}`: the arrays of a multi-input model must "
            f"hold the same number of samples. Received: lengths {sorted(lengths)}"
        )
    check_finite_inputs(inputs if structure is not None else arrays[0], name)
    if structure is None:
        return arrays[0]
    return tf.nest.pack_sequence_as(structure, arrays)


def num_samples(inputs):
    """The number of samples of arrays checked by `check_model_inputs`; None for a dataset,
    whose count is known only once it is read."""
    if isinstance(inputs, tf.data.Dataset):
        return None
    return len(tf.nest.flatten(inputs)[0])


def input_batches(inputs, batch_size, model):
    """Yields the input batches of `inputs` in order.

    An array (or dict / tuple of arrays) is sliced into batches of `batch_size`; a dataset's
    batches are used as they come, each element read by `model`'s input structure: an
    element shaped like the model's inputs (a dict, or a tuple for a tuple-input model) is
    the input batch, any other tuple is `(inputs, ...)`.

    Args:
        inputs: what `check_model_inputs` returned.
        batch_size: positive int, the batch size of an array's slices.
        model: the Keras model the batches are for; or None for a model of one input
            that is not a Keras model (ONNX, SavedModel), whose dataset elements are input
            batches or `(inputs, ...)` tuples.
    """
    if isinstance(inputs, tf.data.Dataset):
        for element in inputs:
            yield _inputs_of(element, model)
        return
    for start in range(0, num_samples(inputs), batch_size):
        yield tf.nest.map_structure(lambda array: array[start : start + batch_size], inputs)


def labelled_input_batches(inputs, labels, batch_size, model):
    """Yields `(input_batch, label_batch)`: `input_batches` with the labels of its samples.

    Args:
        inputs, batch_size, model: as for `input_batches`.
        labels: an array `[N]`, one label per sample of `inputs`, in the same order (the
            arguments `x` and `y` of the callers, as the error message names them).

    Raises:
        ValueError: if the inputs hold another number of samples than `labels`: before the
            pass for arrays, as soon as it shows for a dataset.
    """
    total = num_samples(inputs)
    if total is not None and total != len(labels):
        raise _length_error(total, len(labels))
    start = 0
    for batch in input_batches(inputs, batch_size, model):
        end = start + int(tf.nest.flatten(batch)[0].shape[0])
        if end > len(labels):
            raise _length_error(f"more than {len(labels)}", len(labels))
        yield batch, labels[start:end]
        start = end
    if start != len(labels):
        raise _length_error(start, len(labels))


def _length_error(num_inputs, num_labels):
    return ValueError(
        f"`x` and `y` must have the same length. Received: len(x)={num_inputs}, "
        f"len(y)={num_labels}"
    )


def _inputs_of(element, model):
    """The input batch of a dataset element: the element itself, or its first item.

    An element that has the structure of the model's inputs (a dict, or a tuple for a
    tuple-input model) is the input batch; any other tuple is read as `(inputs, ...)`.
    """
    if model is not None:
        try:
            tf.nest.assert_same_structure(element, model.input, check_types=False)
            return element
        except (ValueError, TypeError, AttributeError):
            pass
    return element[0] if isinstance(element, (tuple, list)) else element
