import io
import os

import keras
import numpy as np

from clidmu_tf.atomic_files import write_bytes_atomically
from clidmu_tf.label_issue_ranking import early_epochs
from clidmu_tf.validation import check_positive_int, invalid_value

# The signals kept per epoch and sample, `[E, N]` each.
PER_EPOCH_SIGNALS = ("given_probability", "margin", "weight")


class TrainingDynamicsRecorder(keras.callbacks.Callback):
    """Records, after every epoch, how the model sees each training sample's given label.

    After each epoch the callback runs the model in inference mode over `x` (the training
    samples, un-augmented) and keeps, per sample:

    - `given_probability`: the softmax probability of the given label;
    - `margin`: the given label's logit minus the largest other logit (the margin whose
      average over epochs is the "area under the margin" of Pleiss et al., 2020);
    - `weight`: the meta-model's trust in the label (`CLIDMUModel.per_sample_weights`:
      Meta-Weight-Net's weight or the VRI rectifier's value at the label), when the model
      has a meta-model that is trained (not `meta_objective="none"`).

    and, over the first third of the epochs of `fit` (`early_epochs`, the window of the
    `early_loss` ranking), the mean of each sample's class probabilities,
    `early_probabilities` `[N, C]`: one array, not one per epoch, so that the file stays
    small.

    Wrong labels are learnt late: in the early epochs the model predicts the true class and
    gives the given label a low probability, a negative margin and a low weight, before it
    memorises it. `clidmu_tf.label_issues` turns these records into rankings, and cleanlab's
    confident learning on `early_probabilities` into an estimate of how many labels are
    wrong.

    The arrays are kept in memory (3 float32 values per sample and epoch, plus the `[N, C]`
    mean) and, when `path`
    is given, written to that `.npz` file after every epoch through a temporary file and a
    rename, so an interrupted run keeps the epochs it finished; with `resume=True` a new
    process continues from that file. An epoch that is run again replaces its earlier record
    (in the early mean, where it cannot be taken out again, it is kept once: the resumed
    training replays that epoch from the same weights and batches).

    Args:
        x: the training inputs, an array `[N, ...]` (float32, as the model reads them).
        y: the given (possibly wrong) labels, integers `[N]`.
        path: the `.npz` file to write, or None to keep the records in memory only.
        batch_size: positive int, the batch size of the inference pass.
        resume: bool; True starts from the records already in `path` (a resumed run), if
            any, which must be of the same labels.

    Raises:
        ValueError: for `x` and `y` of different lengths, labels that are not a 1-D integer
            array, a non-positive `batch_size`, or records to resume of other labels.

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
        labels = np.asarray(y)
        if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
            raise invalid_value("y", "a 1-D array of integer class ids", y)
        if len(x) != len(labels):
            raise ValueError(
                "`x` and `y` must have the same length. Received: "
                f"len(x)={len(x)}, len(y)={len(labels)}"
            )
        self.x = x
        self.y = labels.astype("int32")
        self.path = None if path is None else os.fspath(path)
        self.batch_size = check_positive_int("batch_size", batch_size)
        self._records = {}
        # The running sum of the early epochs' class probabilities, and which epochs it holds.
        self._early_sum = None
        self._early_epochs = []
        if resume and self.path is not None and os.path.isfile(self.path):
            self._read_records(self.path)

    def _read_records(self, path):
        recorded = load_dynamics(path)
        if not np.array_equal(recorded["given_label"], self.y):
            raise ValueError(
                f"The training dynamics in {path!r} were recorded for other labels than `y`; "
                "pass resume=False to start afresh."
            )
        signals = [name for name in PER_EPOCH_SIGNALS if name in recorded]
        self._records = {
            int(epoch): {name: recorded[name][row] for name in signals}
            for row, epoch in enumerate(recorded["epochs"])
        }
        if "early_probabilities" in recorded:
            self._early_epochs = recorded["early_probability_epochs"].tolist()
            self._early_sum = recorded["early_probabilities"].astype("float64") * len(
                self._early_epochs
            )

    def on_epoch_end(self, epoch, logs=None):
        record, probabilities = self._measure()
        self._records[epoch + 1] = record
        window = early_epochs(self.params.get("epochs") or epoch + 1)
        if epoch + 1 <= window and epoch + 1 not in self._early_epochs:
            self._early_epochs.append(epoch + 1)
            if self._early_sum is None:
                self._early_sum = np.zeros_like(probabilities)
            self._early_sum += probabilities
        if self.path is not None:
            save_dynamics(self.path, self.dynamics())

    def dynamics(self):
        """The records so far, as a dict of numpy arrays.

        Returns:
            A dict with `epochs` (int32 `[E]`, numbered from 1), `given_label` (int32 `[N]`),
            `given_probability` and `margin` (float32 `[E, N]`), for a model with a
            trained meta-model `weight` (float32 `[E, N]`) and, once an epoch of the early
            window is recorded, `early_probabilities` (float32 `[N, C]`, the mean softmax
            over `early_probability_epochs`, int32, the epochs numbered from 1).
        """
        epochs = sorted(self._records)
        arrays = {"epochs": np.asarray(epochs, dtype="int32"), "given_label": self.y}
        for name in PER_EPOCH_SIGNALS:
            if epochs and name in self._records[epochs[0]]:
                arrays[name] = np.stack([self._records[e][name] for e in epochs])
        if self._early_epochs:
            arrays["early_probabilities"] = (self._early_sum / len(self._early_epochs)).astype(
                "float32"
            )
            arrays["early_probability_epochs"] = np.asarray(
                sorted(self._early_epochs), dtype="int32"
            )
        return arrays

    def _measure(self):
        logits = []
        for start in range(0, len(self.y), self.batch_size):
            outputs = self.model(self.x[start : start + self.batch_size], training=False)
            if isinstance(outputs, dict):
                outputs = outputs["logits"]
            logits.append(keras.ops.convert_to_numpy(outputs).astype("float64"))
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
        }
        if getattr(self.model, "meta_objective", "none") != "none":
            record["weight"] = self.model.per_sample_weights(
                self.x, self.y, batch_size=self.batch_size
            )
        return record, probabilities


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
    with np.load(path) as arrays:
        return {key: arrays[key] for key in arrays.files}
