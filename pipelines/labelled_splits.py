"""What every dataset class shares: its label checks and its label-noise injection."""

from clidmu_tf.pipelines.augmentation import Augmentation
from clidmu_tf.pipelines.noise import corrupt_labels
from clidmu_tf.validation import check_class_names, check_clean_labels, invalid_value


class LabelledSplits:
    """Base of `InMemoryDataset` and `StreamedDataset`: labels, their checks and their noise.

    A subclass is a frozen dataclass with the attributes `y_train`, `y_train_clean`,
    `num_classes`, `class_names`, `augmentation` and `class_map` (documented there), and a
    method `inputs(indices, *, split="train")` returning float32 model inputs; it calls
    `_check_metadata` from `__post_init__`, after checking `y_train`.
    """

    def _check_metadata(self):
        """Checks `augmentation`, `y_train_clean` and `class_names`, storing the latter two
        as the checks return them (int32 array, tuple of str).

        Raises:
            ValueError: naming the attribute and the received value.
        """
        if self.augmentation not in Augmentation.RECIPES:
            raise invalid_value(
                "augmentation", f"one of {sorted(Augmentation.RECIPES)}", self.augmentation
            )
        object.__setattr__(
            self,
            "y_train_clean",
            check_clean_labels(self.y_train_clean, self.y_train, self.num_classes),
        )
        object.__setattr__(
            self, "class_names", check_class_names(self.class_names, self.num_classes)
        )

    @property
    def clean_train_labels(self):
        """The true training labels: `y_train_clean` when known, else `y_train`."""
        return self.y_train if self.y_train_clean is None else self.y_train_clean

    def corrupt_train_labels(self, *, kind, rate, seed, transition=None, class_map=None):
        """Injects label noise into the true training labels (see `corrupt_labels`).

        Instance-dependent noise reads the training inputs a chunk at a time, each sample
        once, so the same images give the same noisy labels whether they are held in memory
        or decoded from disk. Asymmetric noise uses the dataset's own class map unless
        `class_map` is given.

        Returns:
            `(noisy_labels, report)`, as `corrupt_labels` returns them.
        """
        if kind == "asymmetric":
            class_map = class_map or self.class_map
        return corrupt_labels(
            self.clean_train_labels,
            kind=kind,
            rate=rate,
            num_classes=self.num_classes,
            seed=seed,
            features=self.inputs if kind == "instance" else None,
            transition=transition,
            class_map=class_map,
        )
