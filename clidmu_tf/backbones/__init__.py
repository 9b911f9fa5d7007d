"""Backbones: Keras models whose output is `{"logits": [B, C], "features": [B, D]}`."""

from clidmu_tf.backbones.from_model import from_model
from clidmu_tf.backbones.mlp import mlp
from clidmu_tf.backbones.preact_resnet18 import preact_resnet18
from clidmu_tf.backbones.resnet32 import resnet32
from clidmu_tf.backbones.small_cnn import small_cnn
from clidmu_tf.backbones.wide_resnet import wide_resnet

__all__ = ["from_model", "mlp", "preact_resnet18", "resnet32", "small_cnn", "wide_resnet"]
