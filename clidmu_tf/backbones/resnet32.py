import keras
from keras import layers

from clidmu_tf.backbones.blocks import backbone_model, batch_norm, check_backbone_args, conv


def _basic_block(x, filters, strides, name):
    shortcut = x
    x = conv(filters, strides=strides, name=f"{name}_conv1")(x)
    x = layers.ReLU()(batch_norm(name=f"{name}_bn1")(x))
    x = conv(filters, name=f"{name}_conv2")(x)
    x = batch_norm(name=f"{name}_bn2")(x)
    if strides != 1 or shortcut.shape[-1] != filters:
        shortcut = conv(filters, kernel_size=1, strides=strides, name=f"{name}_proj")(shortcut)
        shortcut = batch_norm(name=f"{name}_proj_bn")(shortcut)
    return layers.ReLU()(layers.Add()([x, shortcut]))


def resnet32(input_shape, num_classes, blocks_per_stage=5, widths=(16, 32, 64), name="resnet32"):
    """The CIFAR ResNet-32 of He et al. (2016), the backbone of Meta-Weight-Net's runs.

    Args:
        input_shape: `(height, width, channels)`.
        num_classes: number of classes.
        blocks_per_stage: basic blocks per stage (5 gives depth 32).
        widths: filters of the three stages.
        name: name of the model.

    Returns:
        A Keras model whose output is `{"logits": [B, num_classes], "features": [B, widths[-1]]}`.

    Example:

    >>> model = resnet32((32, 32, 3), num_classes=10, blocks_per_stage=1)
    >>> model.output["features"].shape
    (None, 64)
    """
    shape = check_backbone_args(input_shape, num_classes)
    inputs = keras.Input(shape, name="inputs")
    x = conv(widths[0], name="stem_conv")(inputs)
    x = layers.ReLU()(batch_norm(name="stem_bn")(x))
    for stage, filters in enumerate(widths):
        for block in range(blocks_per_stage):
            strides = 2 if stage > 0 and block == 0 else 1
            x = _basic_block(x, filters, strides, name=f"stage{stage}_block{block}")
    features = layers.GlobalAveragePooling2D(name="features")(x)
    return backbone_model(inputs, features, num_classes, name)
