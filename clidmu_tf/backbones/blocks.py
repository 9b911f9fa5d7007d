"""Pieces shared by the backbones.

BatchNorm uses momentum 0.9 and epsilon 1e-5, the Keras spelling of PyTorch's defaults that
the reference results were obtained with (Keras defaults to 0.99 / 1e-3).
"""

import keras
from keras import layers

from clidmu_tf.validation import check_positive_int, invalid_value

BN_MOMENTUM = 0.9
BN_EPSILON = 1e-5


def batch_norm(name=None):
    return layers.BatchNormalization(momentum=BN_MOMENTUM, epsilon=BN_EPSILON, name=name)


def conv(filters, kernel_size=3, strides=1, name=None):
    return layers.Conv2D(
        filters,
        kernel_size,
        strides=strides,
        padding="same",
        use_bias=False,
        kernel_initializer="he_normal",
        name=name,
    )


def check_backbone_args(input_shape, num_classes):
    """Validates the arguments every backbone takes; returns the input shape as a tuple."""
    check_positive_int("num_classes", num_classes)
    if num_classes < 2:
        raise invalid_value("num_classes", "an integer >= 2", num_classes)
    try:
        shape = tuple(input_shape)
    except TypeError:
        raise invalid_value("input_shape", "a tuple of positive integers", input_shape)
    if not shape or any(isinstance(d, bool) or not isinstance(d, int) or d < 1 for d in shape):
        raise invalid_value("input_shape", "a tuple of positive integers", input_shape)
    return shape


def backbone_model(inputs, features, num_classes, name):
    """Closes a backbone: a dense layer on `features`, outputs `{"logits", "features"}`."""
    logits = layers.Dense(num_classes, name="logits")(features)
    return keras.Model(inputs, {"logits": logits, "features": features}, name=name)


def preact_block(x, filters, strides, name, dropout=0.0):
    """A pre-activation residual block (BN-ReLU-conv twice), shared by PreAct ResNet and WRN."""
    out = layers.ReLU()(batch_norm(name=f"{name}_bn1")(x))
    shortcut = x
    if strides != 1 or x.shape[-1] != filters:
        shortcut = conv(filters, kernel_size=1, strides=strides, name=f"{name}_proj")(out)
    out = conv(filters, strides=strides, name=f"{name}_conv1")(out)
    out = layers.ReLU()(batch_norm(name=f"{name}_bn2")(out))
    if dropout:
        out = layers.Dropout(dropout)(out)
    out = conv(filters, name=f"{name}_conv2")(out)
    return layers.Add()([out, shortcut])
