"""Input pipelines: datasets, label-noise injection and the streams CLIDMUModel.fit reads.

- Noise: `corrupt_labels` (every standard recipe), `transition_matrix`, `noise_report`,
  `NoiseReport`, and `apply_label_noise` for a `tf.data` pipeline.
- Data: `load_dataset` (names in `list_datasets()`; `digits` and `mnist_5k` work offline),
  `load_image_folder`, `from_arrays`, `read_human_labels`, all giving `InMemoryDataset`s;
  `load_unlabeled_images` for the unlabelled images of semi-supervised training;
  `stream_image_folder` and `load_dataset(..., stream=True)` (tfds images) give a
  `StreamedDataset`, decoded inside the streams.
- Streams: `make_training_data` returns a `TrainingData` whose `.train` goes to `fit`.
- Augmentation: `Augmentation` (flip, padded crop, RandAugment, cutout) inside `tf.data`.
"""

import importlib

from clidmu_tf.pipelines.augmentation import Augmentation
from clidmu_tf.pipelines.datasets import from_arrays
from clidmu_tf.pipelines.datasets import list_datasets
from clidmu_tf.pipelines.datasets import load_dataset
from clidmu_tf.pipelines.datasets import load_image_folder
from clidmu_tf.pipelines.datasets import load_unlabeled_images
from clidmu_tf.pipelines.datasets import stream_image_folder
from clidmu_tf.pipelines.in_memory_dataset import InMemoryDataset
from clidmu_tf.pipelines.noise import NOISE_KINDS
from clidmu_tf.pipelines.noise import corrupt_labels
from clidmu_tf.pipelines.noise import noise_report
from clidmu_tf.pipelines.noise import transition_matrix
from clidmu_tf.pipelines.noise_report import NoiseReport
from clidmu_tf.pipelines.splits import stratified_split
from clidmu_tf.pipelines.tfds_datasets import read_human_labels

# The names whose modules need TensorFlow, imported on first use (PEP 562), so that the
# command line checks its arguments against `list_datasets()`, `NOISE_KINDS` and
# `Augmentation.RECIPES` before TensorFlow loads.
_NAMES_NEEDING_TENSORFLOW = {
    "META_OBJECTIVES": "clidmu_tf.pipelines.streams",
    "apply_label_noise": "clidmu_tf.pipelines.streams",
    "default_selection_size": "clidmu_tf.pipelines.streams",
    "make_training_data": "clidmu_tf.pipelines.streams",
    "TrainingData": "clidmu_tf.pipelines.training_data",
    "StreamedDataset": "clidmu_tf.pipelines.streamed_dataset",
}

__all__ = [
    "META_OBJECTIVES",
    "NOISE_KINDS",
    "Augmentation",
    "InMemoryDataset",
    "NoiseReport",
    "StreamedDataset",
    "TrainingData",
    "apply_label_noise",
    "corrupt_labels",
    "default_selection_size",
    "from_arrays",
    "list_datasets",
    "load_dataset",
    "load_image_folder",
    "load_unlabeled_images",
    "make_training_data",
    "noise_report",
    "read_human_labels",
    "stratified_split",
    "stream_image_folder",
    "transition_matrix",
]


def __getattr__(name):
    if name not in _NAMES_NEEDING_TENSORFLOW:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(_NAMES_NEEDING_TENSORFLOW[name]), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted({*globals(), *__all__})
