import keras
from keras import ops

from clidmu_tf.losses.clid_loss import batch_clid
from clidmu_tf.validation import check_positive_float


@keras.saving.register_keras_serializable(package="clidmu_tf")
class CLID(keras.metrics.Metric):
    """Running CLID over batches, each batch weighted by its size.

    Batches of fewer than 2 samples (the last batch when N % batch == 1) have no pair to
    compare and are left out, in every execution mode.

    `y_pred` is a dict with `"features"` and `"logits"`; `y_true` is ignored (CLID is
    label-free). The weighting by batch size is the rule the snapshot ensemble uses to score
    an epoch over the whole meta set.

    Args:
        temperature: positive float, the temperature of the feature-side softmax.
        name: name of the metric.
        dtype: dtype of the metric's state.

    Example:

    >>> import numpy as np
    >>> metric = CLID()
    >>> metric.update_state(None, {"features": np.eye(4, dtype="float32"),
    ...                            "logits": np.eye(4, dtype="float32")})
    >>> float(metric.result()) > 0
    True
    """

    def __init__(self, temperature=0.5, name="clid", dtype=None):
        check_positive_float("temperature", temperature)
        super().__init__(name=name, dtype=dtype)
        self.temperature = temperature
        self.total = self.add_variable(shape=(), initializer="zeros", name="total")
        self.count = self.add_variable(shape=(), initializer="zeros", name="count")

    def update_state(self, y_true, y_pred, sample_weight=None):
        value, counts = batch_clid(y_pred["features"], y_pred["logits"], self.temperature)
        # A batch of fewer than 2 samples gets weight 0 (see `batch_clid`).
        weight = counts * ops.cast(ops.shape(y_pred["logits"])[0], "float32")
        self.total.assign_add(ops.cast(value * weight, self.dtype))
        self.count.assign_add(ops.cast(weight, self.dtype))

    def result(self):
        return ops.divide_no_nan(self.total, self.count)

    def reset_state(self):
        self.total.assign(0.0)
        self.count.assign(0.0)

    def get_config(self):
        return {**super().get_config(), "temperature": self.temperature}
