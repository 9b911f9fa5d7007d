"""The measured outcome of label noise."""

import dataclasses

import numpy as np


@dataclasses.dataclass(frozen=True, eq=False)
class NoiseReport:
    """What a noise recipe actually did to a label array.

    All matrices follow `T[i, j] = P(noisy = j | true = i)`.

    Attributes:
        kind: str, the recipe (`"observed"` for labels that came noisy, such as CIFAR-N).
        rate: the nominal rate, or None.
        num_classes: int, `K`.
        flip_rate: float, the fraction of samples whose label changed.
        transition: float `[K, K]` array, the empirical transition matrix: row `i` is the
            distribution of noisy labels among samples of true class `i` (all zeros for a
            class with no samples).
        counts: int `[K, K]` array, `counts[i, j]` samples of class `i` labelled `j`.
        flipped: bool `[N]` array, True where the noisy label differs from the clean one.
        expected_transition: the nominal `[K, K]` matrix, or None (instance noise, observed
            labels).
        expected_flip_rate: float, the flip rate `expected_transition` implies for these
            classes' frequencies, or None.
    """

    kind: str
    rate: float | None
    num_classes: int
    flip_rate: float
    transition: np.ndarray
    counts: np.ndarray
    flipped: np.ndarray
    expected_transition: np.ndarray | None = None
    expected_flip_rate: float | None = None

    @property
    def num_samples(self):
        return int(self.flipped.size)

    @property
    def num_flipped(self):
        return int(self.flipped.sum())

    def to_dict(self):
        """A JSON-serialisable summary (the matrices as nested lists, no per-sample mask)."""

        def as_list(matrix):
            return None if matrix is None else np.asarray(matrix).tolist()

        return {
            "kind": self.kind,
            "rate": self.rate,
            "num_classes": self.num_classes,
            "num_samples": self.num_samples,
            "num_flipped": self.num_flipped,
            "flip_rate": self.flip_rate,
            "expected_flip_rate": self.expected_flip_rate,
            "transition": as_list(self.transition),
            "counts": as_list(self.counts),
            "expected_transition": as_list(self.expected_transition),
        }

    def __repr__(self):
        expected = (
            "" if self.expected_flip_rate is None else f", expected {self.expected_flip_rate:.4f}"
        )
        return (
            f"NoiseReport(kind={self.kind!r}, rate={self.rate}, flip_rate={self.flip_rate:.4f}"
            f"{expected}, flipped={self.num_flipped}/{self.num_samples})"
        )
