import keras
from keras import layers

from clidmu_tf.backbones.blocks import (
    backbone_model,
    batch_norm,
    check_backbone_args,
    conv,
    preact_block,
)


def preact_resnet18(
    input_shape, num_classes, widths=(64, 128, 256, 512), name="preact_resnet18"
):
    """The pre-activation ResNet-18 of He et al. (2016), the backbone of the VRI runs.

    Args:
        input_shape: `(height, width, channels)`.
        num_classes: number of classes.
        widths: filters of the four stages (two blocks each).
        name: name of the model.

    Returns:
        A Keras model whose output is `{"logits": [B, num_classes], "features": [B, widths[-1]]}`.

    Example:

    >>> model = preact_resnet18((32, 32, 3), num_classes=10, widths=(8, 8, 8, 16))
    >>> model.output["features"].shape
    (None, 16)
    """
    shape = check_backbone_args(input_shape, num_classes)
    inputs = keras.Input(shape, name="inputs")
    x = conv(widths[0], name="stem_conv")(inputs)
    for stage, filters in enumerate(widths):
        for block in range(2):
            strides = 2 if stage > 0 and block == 0 else 1
            x = preact_block(x, filters, strides, name=f"stage{stage}_block{block}")
    x = layers.ReLU()(batch_norm(name="final_bn")(x))
    features = layers.GlobalAveragePooling2D(name="features")(x)
    return backbone_model(inputs, features, num_classes, name)
