import keras
from keras import ops

from clidmu_tf.validation import check_positive_float

# Guards of the reference implementation: the floor of a row norm and the offset inside the log.
NORM_FLOOR = 1e-12
LOG_OFFSET = 1e-7


def _normalize_rows(values):
    norms = ops.sqrt(ops.sum(ops.square(values), axis=1, keepdims=True))
    return values / ops.maximum(norms, NORM_FLOOR)


def _check_batch(features, logits, require_pairs=True):
    feature_shape = tuple(features.shape)
    logit_shape = tuple(logits.shape)
    if len(feature_shape) != 2:
        raise ValueError(
            "Received an invalid value for `features`, expected a rank-2 tensor [batch, dim]. "
            f"Received: features.shape={feature_shape}"
        )
    if len(logit_shape) != 2:
        raise ValueError(
            "Received an invalid value for `logits`, expected a rank-2 tensor "
            f"[batch, num_classes]. Received: logits.shape={logit_shape}"
        )
    batch, other = feature_shape[0], logit_shape[0]
    if batch is not None and other is not None and batch != other:
        raise ValueError(
            "`features` and `logits` must hold the same batch. Received: "
            f"features.shape={feature_shape}, logits.shape={logit_shape}"
        )
    for size in (batch, other) if require_pairs else ():
        if size is not None and size < 2:
            raise ValueError(
                "CLID compares the samples of a batch with each other and needs a batch of at "
                f"least 2. Received: batch size {size}"
            )


def clid_loss(features, logits, temperature=0.5):
    """Cross-Layer Information Divergence of one batch.

    Compares the neighbourhood structure of the batch in the embedding space (`features`,
    the vector fed to the last dense layer) with the structure in the output space
    (`softmax(logits)`). Lower is better. No gradient flows into `features`: the feature
    side is the fixed target distribution, and the row sums of the output-side similarity
    are held constant too, exactly as the reference implementation does. The computation
    runs in float32 whatever the input dtype.

    Args:
        features: tensor of shape `[batch, dim]`.
        logits: tensor of shape `[batch, num_classes]`.
        temperature: positive float, the temperature of the feature-side softmax.

    Returns:
        A float32 scalar.

    Raises:
        ValueError: if `temperature` is not positive, the inputs are not rank 2, their
            batch sizes differ or the batch holds fewer than 2 samples.

    Example:

    >>> import numpy as np
    >>> features = np.eye(4, dtype="float32")
    >>> logits = 5.0 * np.eye(4, dtype="float32")
    >>> float(clid_loss(features, logits, temperature=0.5)) > 0
    True

    Reference:
        Hu et al., "CLID-MU: Cross-Layer Information Divergence Based Meta Update Strategy
        for Learning with Noisy Labels", KDD 2025.
    """
    check_positive_float("temperature", temperature)
    features = ops.convert_to_tensor(features)
    logits = ops.convert_to_tensor(logits)
    _check_batch(features, logits)
    return ops.mean(_per_sample_clid(features, logits, temperature))


def batch_clid(features, logits, temperature=0.5):
    """CLID of a batch that may hold fewer than 2 samples, with the weight it should get.

    The one rule for every running CLID average (the `clid` and `val_clid` metrics, the meta
    loss, the snapshot score): a batch of fewer than 2 samples has no pair to compare, so it
    is left out. Works in eager, graph and XLA execution, whether or not the batch size is
    known when the function is traced.

    Args:
        features: tensor of shape `[batch, dim]`, `batch` >= 0.
        logits: tensor of shape `[batch, num_classes]`.
        temperature: positive float.

    Returns:
        `(value, counts)`, float32 scalars: `value` is `clid_loss` of the batch when it holds
        at least 2 samples, else 0 (with a zero gradient); `counts` is 1.0 or 0.0 accordingly.
    """
    features = ops.convert_to_tensor(features)
    logits = ops.convert_to_tensor(logits)
    _check_batch(features, logits, require_pairs=False)
    static_batch = features.shape[0]
    if static_batch is not None and static_batch < 2:
        return ops.zeros((), "float32"), ops.zeros((), "float32")
    per_sample = _per_sample_clid(features, logits, temperature)
    batch = ops.shape(per_sample)[0]
    counts = ops.cast(batch >= 2, "float32")
    # A sum over at most one row divided by at least 1: finite, so the 0 branch of the
    # `where` passes back a zero gradient, never 0 * NaN.
    value = ops.sum(per_sample) / ops.cast(ops.maximum(batch, 1), "float32")
    return ops.where(counts > 0, value, 0.0), counts


def _per_sample_clid(features, logits, temperature):
    """Each sample's cross-entropy between the two layers' neighbourhoods, `[batch]`."""
    features = ops.stop_gradient(ops.cast(features, "float32"))
    logits = ops.cast(logits, "float32")

    unit_features = _normalize_rows(features)
    feature_similarity = ops.matmul(unit_features, ops.transpose(unit_features)) / temperature
    # Negative similarities are zeroed (not masked out), so they still enter the softmax.
    feature_similarity = ops.relu(feature_similarity)
    target = ops.softmax(feature_similarity, axis=1)

    unit_probabilities = _normalize_rows(ops.softmax(logits, axis=1))
    output_similarity = ops.matmul(unit_probabilities, ops.transpose(unit_probabilities))
    row_sums = ops.stop_gradient(ops.sum(output_similarity, axis=1, keepdims=True))
    prediction = output_similarity / row_sums

    return ops.sum(prediction * -ops.log(target + LOG_OFFSET), axis=1)


@keras.saving.register_keras_serializable(package="clidmu_tf")
class CLIDLoss(keras.losses.Loss):
    """CLID as a Keras loss: `y_pred` is a dict with `"features"` and `"logits"`.

    The labels (`y_true`) are not read: CLID is label-free, which is why it can steer
    training on noisy data. See `clid_loss` for the computation.

    Args:
        temperature: positive float, the temperature of the feature-side softmax.
        name: name of the loss.
        **kwargs: forwarded to `keras.losses.Loss`.

    Example:

    >>> import numpy as np
    >>> loss = CLIDLoss(temperature=0.5)
    >>> outputs = {"features": np.eye(4, dtype="float32"),
    ...            "logits": np.eye(4, dtype="float32")}
    >>> float(loss(None, outputs)) > 0
    True
    """

    def __init__(self, temperature=0.5, name="clid", **kwargs):
        check_positive_float("temperature", temperature)
        super().__init__(name=name, **kwargs)
        self.temperature = temperature

    def __call__(self, y_true, y_pred, sample_weight=None):
        # CLID is one value per batch and never reads labels, so the per-sample casting and
        # reduction of Loss.__call__ (which rejects y_true=None) do not apply.
        return self.call(y_true, y_pred)

    def call(self, y_true, y_pred):
        return clid_loss(y_pred["features"], y_pred["logits"], self.temperature)

    def get_config(self):
        return {**super().get_config(), "temperature": self.temperature}
