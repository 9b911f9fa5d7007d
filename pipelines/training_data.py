"""What `make_training_data` builds: the streams for `fit` and what they were made of."""

import dataclasses

import numpy as np
import tensorflow as tf

from clidmu_tf.pipelines.augmentation import Augmentation
from clidmu_tf.pipelines.in_memory_dataset import InMemoryDataset
from clidmu_tf.pipelines.noise_report import NoiseReport
from clidmu_tf.pipelines.streamed_dataset import StreamedDataset


@dataclasses.dataclass(frozen=True, eq=False)
class TrainingData:
    """The input streams for `CLIDMUModel.fit` and `evaluate`, with their provenance.

    Attributes:
        train: the `tf.data.Dataset` to pass to `fit`. Its elements are
            `((x, y), x_meta)` for `meta_objective="clid"`, `((x, y), (x_meta, y_meta))`
            for `"ce_clean"`, `"ce_noisy"` and `"mae_noisy"`, and `(x, y)` for `"none"`;
            `x` float32, `y` int32 `[B]`. The meta stream repeats, so the length is the
            training stream's (`steps_per_epoch`).
        evaluation: a `tf.data.Dataset` of `(x, y)` batches of the test split, clean labels.
        meta_stream: a finite `tf.data.Dataset` of the meta set's inputs, un-augmented, in
            the order of `meta_indices`, in batches of `meta_batch_size` (for computing CLID
            over the whole meta set, as the snapshot ensemble does, without holding it).
        meta_labels: int32 array of the labels the meta objective reads (clean for
            `"ce_clean"`, noisy for `"ce_noisy"` / `"mae_noisy"`), or None.
        selection_stream: a finite `tf.data.Dataset` of the held-out selection set's inputs,
            un-augmented, in batches of `meta_batch_size`, or None without one
            (`make_training_data(selection_size=...)`).
        selection_indices: int64 array, positions in `dataset.x_train` of the held-out
            selection set (empty without one); neither trained on nor in the meta set. Drawn
            from the unlabelled samples, it may hold positions from `len(dataset.x_train)` on,
            which stand for `unlabeled_inputs` (as in `meta_indices`).
        selection_noisy_labels: int32 array aligned with `selection_indices`, their given
            labels (never trained with); empty when `selection_from_unlabeled`.
        selection_clean_labels: int32 array aligned with `selection_indices`, the true labels;
            empty when `selection_from_unlabeled`.
        noise_report: `NoiseReport` of the labels in the training stream.
        num_classes: int.
        input_shape: tuple, the shape of one sample.
        train_indices: int64 array, positions in `dataset.x_train` of the samples the
            training stream labels.
        meta_indices: int64 array, positions in `dataset.x_train` of the meta set.
        train_noisy_labels: int32 array aligned with `train_indices`, the labels trained
            with.
        train_clean_labels: int32 array aligned with `train_indices`, the true labels.
        meta_objective: str.
        augmentation: the `Augmentation` of the training stream.
        dataset: the `InMemoryDataset` or `StreamedDataset` the streams read.
        batch_size: int.
        meta_batch_size: int.
        steps_per_epoch: int, batches per pass over the training stream.
        selection_from_unlabeled: bool, whether the held-out selection set was drawn from the
            unlabelled samples (semi-supervised mode), so that its samples have no given
            label and are not among `labeled_indices`.
    """

    train: tf.data.Dataset
    evaluation: tf.data.Dataset
    meta_stream: tf.data.Dataset
    meta_labels: np.ndarray | None
    selection_stream: tf.data.Dataset | None
    selection_indices: np.ndarray
    selection_noisy_labels: np.ndarray
    selection_clean_labels: np.ndarray
    noise_report: NoiseReport
    num_classes: int
    input_shape: tuple
    train_indices: np.ndarray
    meta_indices: np.ndarray
    train_noisy_labels: np.ndarray
    train_clean_labels: np.ndarray
    meta_objective: str
    augmentation: Augmentation
    dataset: InMemoryDataset | StreamedDataset
    batch_size: int
    meta_batch_size: int
    steps_per_epoch: int
    selection_from_unlabeled: bool = False

    @property
    def meta_inputs(self):
        """Float32 array of the meta set's inputs, un-augmented, read from `meta_stream`."""
        return np.concatenate([batch.numpy() for batch in self.meta_stream])

    @property
    def flipped(self):
        """Bool array aligned with `train_indices`: True where the training label is wrong."""
        return self.train_noisy_labels != self.train_clean_labels

    @property
    def labeled_indices(self):
        """Int64 array: every sample with a given label, the training samples then the held-out
        selection set's unless it was drawn from the unlabelled samples (positions in
        `dataset.x_train`): the samples whose labels `label_issues` checks."""
        return np.concatenate([self.train_indices, self._labeled_selection_indices])

    @property
    def labeled_held_out(self):
        """Bool array aligned with `labeled_indices`: True for the held-out selection set's
        samples (seen by the snapshot selection, never trained on)."""
        return np.concatenate(
            [
                np.zeros(len(self.train_indices), bool),
                np.ones(len(self._labeled_selection_indices), bool),
            ]
        )

    @property
    def _labeled_selection_indices(self):
        if self.selection_from_unlabeled:
            return self.selection_indices[:0]
        return self.selection_indices

    @property
    def labeled_noisy_labels(self):
        """Int32 array aligned with `labeled_indices`: the given labels."""
        return np.concatenate([self.train_noisy_labels, self.selection_noisy_labels])

    @property
    def labeled_clean_labels(self):
        """Int32 array aligned with `labeled_indices`: the true labels."""
        return np.concatenate([self.train_clean_labels, self.selection_clean_labels])

    @property
    def labeled_flipped(self):
        """Bool array aligned with `labeled_indices`: True where the given label is wrong."""
        return self.labeled_noisy_labels != self.labeled_clean_labels

    def train_inputs(self, indices=None):
        """Float32 un-augmented inputs of the training samples (`train_indices[indices]`),
        as one array; `input_stream` reads them without holding them all."""
        positions = self.train_indices if indices is None else self.train_indices[indices]
        return self.dataset.inputs(positions)

    def input_stream(self, indices, batch_size):
        """The inputs of some samples of the training split as a finite stream.

        Float32 batches `[b, *input_shape]`, un-augmented, in the order of `indices`, read
        (or decoded from disk) as the training stream reads them, a few batches at a time:
        for passes that score many samples, such as `TrainingDynamicsRecorder` and
        `clidmu_tf.label_issues` over `labeled_indices`.

        Args:
            indices: int array, positions in `dataset.x_train` (for example
                `train_indices` or `labeled_indices`).
            batch_size: positive int.

        Returns:
            A finite `tf.data.Dataset` of input batches.

        Raises:
            ValueError: for a non-positive `batch_size`.
        """
        # Imported here: `streams` builds `TrainingData` and imports this module.
        from clidmu_tf.pipelines.streams import input_stream

        return input_stream(self.dataset, indices, batch_size=batch_size)

    def summary(self):
        """A JSON-serialisable description, for run logs."""
        return {
            "dataset": self.dataset.name,
            "meta_objective": self.meta_objective,
            "num_classes": self.num_classes,
            "input_shape": list(self.input_shape),
            "num_train": int(len(self.train_indices)),
            "num_meta": int(len(self.meta_indices)),
            "num_selection": int(len(self.selection_indices)),
            "selection_from_unlabeled": self.selection_from_unlabeled,
            "num_test": int(len(self.dataset.y_test)),
            "batch_size": self.batch_size,
            "meta_batch_size": self.meta_batch_size,
            "steps_per_epoch": self.steps_per_epoch,
            "augmentation": self.augmentation.get_config(),
            "noise": self.noise_report.to_dict(),
        }
