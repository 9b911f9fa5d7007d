"""The `Example:` sections of the core's docstrings run as written."""

import doctest
import importlib

import pytest

MODULES = [
    "clidmu_tf.losses.clid_loss",
    "clidmu_tf.metrics.clid",
    "clidmu_tf.backbones.mlp",
    "clidmu_tf.backbones.small_cnn",
    "clidmu_tf.backbones.resnet32",
    "clidmu_tf.backbones.preact_resnet18",
    "clidmu_tf.backbones.wide_resnet",
    "clidmu_tf.backbones.from_model",
    "clidmu_tf.backbones.dense_logits",
    "clidmu_tf.meta_models.meta_weight_net",
    "clidmu_tf.meta_models.vri_rectifier",
    "clidmu_tf.models.clidmu_model",
    "clidmu_tf.callbacks.training_dynamics_recorder",
    "clidmu_tf.label_issue_ranking",
    "clidmu_tf.cli.cluster",
]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_run(name):
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0, f"{name} has no example"
    assert result.failed == 0
