import keras
from keras import layers

from clidmu_tf.backbones.blocks import (
    backbone_model,
    batch_norm,
    check_backbone_args,
    conv,
    preact_block,
)
from clidmu_tf.validation import invalid_value


def wide_resnet(depth, width, input_shape, num_classes, dropout=0.0, name=None):
    """The Wide ResNet of Zagoruyko and Komodakis (2016); WRN-28-10 is the paper's backbone.

    Args:
        depth: total depth, `6 n + 4` for `n` blocks per stage (28 in the paper).
        width: widening factor (10 in the paper).
        input_shape: `(height, width, channels)`.
        num_classes: number of classes.
        dropout: dropout rate inside each block.
        name: name of the model; defaults to `wide_resnet_{depth}_{width}`.

    Returns:
        A Keras model whose output is `{"logits": [B, num_classes], "features": [B, 64 width]}`.

    Raises:
        ValueError: if `depth` is not of the form `6 n + 4` or `width` is not positive.

    Example:

    >>> model = wide_resnet(10, 1, (32, 32, 3), num_classes=10)
    >>> model.output["features"].shape
    (None, 64)
    """
    shape = check_backbone_args(input_shape, num_classes)
    if isinstance(depth, bool) or not isinstance(depth, int) or depth < 10 or (depth - 4) % 6:
        raise invalid_value("depth", "an integer of the form 6 n + 4 (10, 16, 22, 28, ...)", depth)
    if isinstance(width, bool) or not isinstance(width, int) or width < 1:
        raise invalid_value("width", "a positive integer", width)
    blocks = (depth - 4) // 6
    inputs = keras.Input(shape, name="inputs")
    x = conv(16, name="stem_conv")(inputs)
    for stage, filters in enumerate((16 * width, 32 * width, 64 * width)):
        for block in range(blocks):
            strides = 2 if stage > 0 and block == 0 else 1
            x = preact_block(x, filters, strides, f"stage{stage}_block{block}", dropout=dropout)
    x = layers.ReLU()(batch_norm(name="final_bn")(x))
    features = layers.GlobalAveragePooling2D(name="features")(x)
    return backbone_model(inputs, features, num_classes, name or f"wide_resnet_{depth}_{width}")
