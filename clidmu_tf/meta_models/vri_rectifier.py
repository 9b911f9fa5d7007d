import keras
from keras import layers, ops

from clidmu_tf.validation import check_positive_int, invalid_value


@keras.saving.register_keras_serializable(package="clidmu_tf")
class VRIRectifier(keras.Model):
    """The amortised variational rectifier of VRI, used as CLID-MU's second meta-model.

    Input `[features, labels]`: the detached feature vectors `[B, D]` and the noisy labels
    `[B]`. The labels are embedded (`label_embedding_dim` wide), concatenated with the
    features and passed through a tanh MLP with two heads, the mean `mu` and the
    log-variance `s`, each `num_classes` wide. The output is the rectifier
    `r = sigmoid(mu + exp(s / 2) * eps)` of shape `[B, num_classes]`, with `eps ~ N(0, I)` in
    training and `eps = 0` in inference. The classifier's training loss becomes
    `CE(softmax(r * logits), labels)`.

    Args:
        num_classes: number of classes.
        hidden_units: widths of the tanh layers (1024, 512, 512 for 512-d features).
        label_embedding_dim: width of the label embedding (64).
        seed: seed of the initialisers and of the noise `eps`.
        **kwargs: forwarded to `keras.Model`. `dtype` defaults to `"float32"` whatever the
            global policy, so the rectifier computes in float32 under mixed precision.

    Example:

    >>> import numpy as np
    >>> rectifier = VRIRectifier(num_classes=3, hidden_units=(16,), seed=0)
    >>> features = np.ones((2, 8), dtype="float32")
    >>> rectifier([features, np.array([0, 2])]).shape
    TensorShape([2, 3])

    Reference:
        Sun et al., "Variational Rectification Inference for Learning with Noisy Labels",
        IJCV 2024.
    """

    def __init__(
        self, num_classes, hidden_units=(1024, 512, 512), label_embedding_dim=64, seed=None, **kwargs
    ):
        check_positive_int("num_classes", num_classes)
        check_positive_int("label_embedding_dim", label_embedding_dim)
        if not hidden_units:
            raise invalid_value("hidden_units", "a non-empty sequence of widths", hidden_units)
        # The rectifier's maths stay in float32 under mixed precision: its variance
        # exp(s / 2) overflows float16 (65504) once s passes about 22, which turns the
        # meta-gradients into NaN.
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        self.num_classes = num_classes
        self.hidden_units = tuple(hidden_units)
        self.label_embedding_dim = label_embedding_dim
        self.seed = seed
        self.noise_seed = keras.random.SeedGenerator(seed)
        self.label_embedding = layers.Embedding(
            num_classes, label_embedding_dim, name="label_embedding", dtype=self.dtype_policy
        )
        self.hidden = [
            layers.Dense(units, activation="tanh", name=f"hidden_{index}", dtype=self.dtype_policy)
            for index, units in enumerate(self.hidden_units)
        ]
        self.mean_head = layers.Dense(num_classes, name="mean", dtype=self.dtype_policy)
        self.log_variance_head = layers.Dense(
            num_classes, name="log_variance", dtype=self.dtype_policy
        )

    def build(self, input_shape):
        feature_shape, label_shape = input_shape
        self.label_embedding.build(label_shape)
        width = feature_shape[-1] + self.label_embedding_dim
        for layer in self.hidden:
            layer.build((None, width))
            width = layer.units
        self.mean_head.build((None, width))
        self.log_variance_head.build((None, width))

    def distribution(self, features, labels):
        """Returns the mean and log-variance of the rectifier's logit, each `[B, C]`."""
        labels = ops.reshape(ops.cast(labels, "int32"), (-1,))
        hidden = ops.concatenate(
            [ops.cast(features, self.compute_dtype), self.label_embedding(labels)], axis=-1
        )
        for layer in self.hidden:
            hidden = layer(hidden)
        return self.mean_head(hidden), self.log_variance_head(hidden)

    def call(self, inputs, training=False):
        features, labels = inputs
        mean, log_variance = self.distribution(features, labels)
        if not training:
            return ops.sigmoid(mean)
        noise = keras.random.normal(ops.shape(mean), seed=self.noise_seed, dtype=mean.dtype)
        return ops.sigmoid(mean + ops.exp(log_variance / 2.0) * noise)

    def get_config(self):
        return {
            **super().get_config(),
            "num_classes": self.num_classes,
            "hidden_units": list(self.hidden_units),
            "label_embedding_dim": self.label_embedding_dim,
            "seed": self.seed,
        }
