"""A labelled dataset held in NumPy arrays, with its train and test splits."""

import dataclasses
import warnings

import numpy as np

from clidmu_tf.pipelines.labelled_splits import LabelledSplits
from clidmu_tf.validation import (
    check_class_ids,
    check_finite_inputs,
    invalid_value,
)


@dataclasses.dataclass(frozen=True, eq=False)
class InMemoryDataset(LabelledSplits):
    """Arrays for training and evaluation, as `load_dataset` and friends return them.

    Images are kept compact: `uint8` arrays stand for pixels in [0, 255] and are scaled to
    [0, 1] when read (`inputs`, and the `tf.data` streams); floating-point arrays are used
    as they are.

    Attributes:
        name: str, the dataset's name.
        x_train: array `[N, ...]`, the training inputs.
        y_train: int32 array `[N]`, the training labels as the source gives them (the human
            labels for CIFAR-N).
        x_test: array `[M, ...]`, the evaluation inputs.
        y_test: int32 array `[M]`, the clean evaluation labels.
        num_classes: int.
        class_names: tuple of str, or None.
        y_train_clean: int32 array `[N]`, the true training labels where `y_train` is known
            to be noisy (CIFAR-N), else None (`y_train` is then taken as clean).
        augmentation: str, the recipe `Augmentation.from_recipe` knows that suits this
            data by default.
        class_map: the `corrupt_labels` asymmetric map for this data (`"cifar10"`,
            `"mnist"`, a dict), or None.

    Raises:
        ValueError: for non-numeric inputs, NaN or inf in `x_train` / `x_test`, labels that
            are not integer class ids of shape `[N]` in `[0, num_classes)`, or lengths that
            differ. A class without any training sample only warns (`num_classes` is
            declared here), since label noise would flip samples into it.
    """

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    num_classes: int
    class_names: tuple | None = None
    y_train_clean: np.ndarray | None = None
    augmentation: str = "none"
    class_map: str | dict | None = None

    def __post_init__(self):
        for split in ("train", "test"):
            x = np.asarray(getattr(self, f"x_{split}"))
            if not np.issubdtype(x.dtype, np.number) or x.ndim < 2:
                raise ValueError(
                    f"Received an invalid value for `x_{split}`, expected a numeric array of "
                    f"shape [N, ...]. Received: x_{split} of dtype {x.dtype} and shape {x.shape}"
                )
            y = check_class_ids(
                getattr(self, f"y_{split}"), f"y_{split}", num_classes=self.num_classes
            )
            _check_same_length(f"x_{split}", x, f"y_{split}", y)
            check_finite_inputs(x, f"x_{split}")
            object.__setattr__(self, f"x_{split}", x)
            object.__setattr__(self, f"y_{split}", y)
        if self.x_train.shape[1:] != self.x_test.shape[1:]:
            raise ValueError(
                "`x_train` and `x_test` must hold samples of the same shape. Received: "
                f"{self.x_train.shape[1:]} and {self.x_test.shape[1:]}"
            )
        self._check_metadata()
        self._warn_about_empty_classes()

    def _warn_about_empty_classes(self):
        """Says loudly when a declared class has no training sample.

        `num_classes` is explicit here, so empty classes may be intended; but label noise
        then flips samples into classes the model never sees a true example of.
        """
        counts = np.bincount(self.clean_train_labels, minlength=self.num_classes)
        empty = np.flatnonzero(counts == 0)
        if empty.size:
            names = [self.class_names[k] if self.class_names else str(k) for k in empty[:10]]
            warnings.warn(
                f"Dataset {self.name!r}: {empty.size} of its {self.num_classes} classes have no "
                f"training sample ({', '.join(names)}{', ...' if empty.size > 10 else ''}). "
                "Injected label noise will flip samples into them. Check the labels, or drop "
                "the empty classes.",
                stacklevel=3,
            )

    @property
    def input_shape(self):
        return tuple(self.x_train.shape[1:])

    @property
    def pixel_scale(self):
        """The factor that maps stored values to model inputs (1/255 for uint8 pixels)."""
        return 1.0 / 255.0 if self.x_train.dtype == np.uint8 else 1.0

    def inputs(self, indices=None, *, split="train"):
        """Float32 model inputs of the `split` samples at `indices` (all by default)."""
        if split not in ("train", "test"):
            raise invalid_value("split", "'train' or 'test'", split)
        x = getattr(self, f"x_{split}")
        if indices is not None:
            x = x[indices]
        return (x.astype(np.float32) * np.float32(self.pixel_scale)).astype(np.float32)

    def __repr__(self):
        return (
            f"InMemoryDataset(name={self.name!r}, train={len(self.y_train)}, "
            f"test={len(self.y_test)}, input_shape={self.input_shape}, "
            f"num_classes={self.num_classes})"
        )


def _check_same_length(x_name, x, y_name, y):
    if len(x) != len(y):
        raise ValueError(
            f"`{x_name}` and `{y_name}` must have the same length. "
            f"Received: len({x_name})={len(x)}, len({y_name})={len(y)}"
        )
