import io
import os

import keras
import numpy as np

from clidmu_tf.atomic_files import read_arrays, write_bytes_atomically
from clidmu_tf.label_issue_ranking import count_label_issues
from clidmu_tf.model_inputs import check_model_inputs, labelled_input_batches, num_samples
from clidmu_tf.validation import check_bool, check_positive_int, invalid_value

# The signals kept per epoch: `[E, N]` each, but `num_label_issues`, `[E]`.
PER_EPOCH_SIGNALS = ("given_probability", "margin", "weight", "num_label_issues")


class TrainingDynamicsRecorder(keras.callbacks.Callback):
    """Records, after every epoch, how the model sees each training sample's given label.

    After each epoch the callback runs the model in inference mode over `x` (the training
    samples, un-augmented), batch by batch, and keeps, per sample:

    - `given_probability`: the softmax probability of the given label;
    - `margin`: the given label's logit minus the largest other logit (the margin whose
      average over epochs is the "area under the margin" of Pleiss et al., 2020);
    - `weight`: the meta-model's trust in the label (`CLIDMUModel.per_sample_weights`:
      Meta-Weight-Net's weight or the VRI rectifier's value at the label), when the model
      has a meta-model that is trained (not `meta_objective="none"`);

    and, per epoch, `num_label_issues`: cleanlab's confident-learning estimate of how many
    of the labels are wrong from that epoch's class probabilities
    (`clidmu_tf.label_issue_ranking.count_label_issues`), one integer, so that the file
    stays small.

    Wrong labels are learnt late: in the early epochs the model predicts the true class and
    gives the given label a low probability, a negative margin and a low weight, before it
    memorises it. `clidmu_tf.label_issues` turns these records into rankings and into a
    suggested number of wrong labels (the largest count of the first epochs).

    Only the records are kept in memory (3 float32 values per sample and epoch): `x` may be
    a stream read from disk, such as `TrainingData.input_stream`. When `path`
    is given, written to that `.npz` file after every epoch through a temporary file and a
    rename, so an interrupted run keeps the epochs it finished; with `resume=True` a new
    process continues from that file. An epoch that is run again replaces its earlier record.

    Args:
        x: the training inputs, as the model reads them (float32): an array `[N, ...]` (a
            dict or tuple of such arrays for a multi-input backbone), or a finite
            `tf.data.Dataset` of input batches (or of tuples whose first item is the input
            batch), in the order of `y`, read whole after every epoch.
        y: the given (possibly wrong) labels, integers `[N]`.
        path: the `.npz` file to write, or None to keep the records in memory only.
        batch_size: positive int, the batch size of the inference pass over an array `x`.
        resume: bool; True starts from the records already in `path` (a resumed run), if
            any, which must be of the same labels.

    Raises:
        ValueError: for `x` and `y` of different lengths (for a dataset `x`, when an epoch
            ends), labels that are not a 1-D integer array, an infinite dataset, inputs
            holding NaN or inf, a non-positive `batch_size`, or records to resume of other
            labels.
        ImportError: at the end of an epoch, if cleanlab is not installed.

    Example:

    >>> import keras
    >>> import numpy as np
    >>> from clidmu_tf import backbones
    >>> from clidmu_tf.callbacks import TrainingDynamicsRecorder
    >>> x = np.random.rand(40, 8).astype("float32")
    >>> y = np.random.randint(0, 3, 40)
    >>> model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(3)])
    >>> model.compile(optimizer="sgd",
    ...               loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    >>> recorder = TrainingDynamicsRecorder(x, y)
    >>> _ = model.fit(x, y, epochs=2, callbacks=[recorder], verbose=0)
    >>> recorder.dynamics()["given_probability"].shape
    (2, 40)

    Reference:
        Pleiss et al., "Identifying Mislabeled Data using the Area Under the Margin
        Ranking", NeurIPS 2020.
    """

    def __init__(self, x, y, path=None, batch_size=256, resume=False):
        super().__init__()
        resume = check_bool("resume", resume)
        labels = np.asarray(y)
        if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
            raise invalid_value("y", "a 1-D array of integer class ids", y)
        self.x = check_model_inputs(x, "x")
        total = num_samples(self.x)
        if total is not None and total != len(labels):
            raise ValueError(
                f"`x` and `y` must have the same length. Received: len(x)={total}, "
                f"len(y)={len(labels)}"
            )
        self.y = labels.astype("int32")
        self.path = None if path is None else os.fspath(path)
        self.batch_size = check_positive_int("batch_size", batch_size)
        self._records = {}
        if resume and self.path is not None and os.path.isfile(self.path):
            self._records = self._read_records(self.path)

    def _read_records(self, path):
        recorded = load_dynamics(path)
        if not np.array_equal(recorded["given_label"], self.y):
            raise ValueError(
                f"The training dynamics in {path!r} were recorded for other labels than `y`; "
                "pass resume=False to start afresh."
            )
        signals = [name for name in PER_EPOCH_SIGNALS if name in recorded]
        return {
            int(epoch): {name: recorded[name][row] for name in signals}
            for row, epoch in enumerate(recorded["epochs"])
        }

    def on_epoch_end(self, epoch, logs=None):
        self._records[epoch + 1] = self._measure()
        if self.path is not None:
            save_dynamics(self.path, self.dynamics())

    def dynamics(self):
        """The records so far, as a dict of numpy arrays.

        Returns:
            A dict with `epochs` (int32 `[E]`, numbered from 1), `given_label` (int32 `[N]`),
            `given_probability` and `margin` (float32 `[E, N]`), `num_label_issues` (int32
            `[E]`) and, for a model with a trained meta-model, `weight` (float32 `[E, N]`).
        """
        epochs = sorted(self._records)
        arrays = {"epochs": np.asarray(epochs, dtype="int32"), "given_label": self.y}
        for name in PER_EPOCH_SIGNALS:
            if epochs and name in self._records[epochs[0]]:
                arrays[name] = np.stack([self._records[e][name] for e in epochs])
        return arrays

    def _measure(self):
        weighs = getattr(self.model, "meta_objective", "none") != "none"
        logits, weights = [], []
        for batch, labels in labelled_input_batches(self.x, self.y, self.batch_size, self.model):
            outputs = self.model(batch, training=False)
            if isinstance(outputs, dict):
                outputs = outputs["logits"]
            logits.append(keras.ops.convert_to_numpy(outputs).astype("float64"))
            if weighs:
                weights.append(
                    self.model.per_sample_weights(batch, labels, batch_size=len(labels))
                )
        logits = np.concatenate(logits)
        rows = np.arange(len(self.y))
        given_logit = logits[rows, self.y]
        others = logits.copy()
        others[rows, self.y] = -np.inf
        shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
        probabilities = shifted / shifted.sum(axis=1, keepdims=True)
        record = {
            "given_probability": probabilities[rows, self.y].astype("float32"),
            "margin": (given_logit - others.max(axis=1)).astype("float32"),
            "num_label_issues": np.int32(count_label_issues(self.y, probabilities)),
        }
        if weighs:
            record["weight"] = np.concatenate(weights)
        return record


def save_dynamics(path, dynamics):
    """Writes the recorder's arrays to an `.npz` file; a crash leaves the old file or the new."""
    buffer = io.BytesIO()
    np.savez(buffer, **dynamics)
    write_bytes_atomically(path, buffer.getvalue())


def load_dynamics(path):
    """Reads the arrays `TrainingDynamicsRecorder` wrote to `path`, as a dict.

    Raises:
        FileNotFoundError: if `path` does not exist.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"No training dynamics at {path!r}: train with the TrainingDynamicsRecorder "
            "callback (clidmu-tf train records them) for at least one epoch first."
        )
    return read_arrays(path)
