"""The package's public sub-packages and classes are attributes of `clidmu_tf`, the Keras way,
imported on first use."""

import pkgutil
import subprocess
import sys

import pytest

import clidmu_tf as cm

# Where each attribute path is defined, as users write it after `import clidmu_tf as cm`.
ATTRIBUTES = {
    "backbones.mlp": "clidmu_tf.backbones.mlp",
    "callbacks.CLIDSnapshotEnsemble": "clidmu_tf.callbacks.clid_snapshot_ensemble",
    "export.OnnxPredictor": "clidmu_tf.export.onnx_predictor",
    "export.export_ensemble": "clidmu_tf.export.export_lib",
    "losses.CLIDLoss": "clidmu_tf.losses.clid_loss",
    "meta_models.MetaWeightNet": "clidmu_tf.meta_models.meta_weight_net",
    "metrics.CLID": "clidmu_tf.metrics.clid",
    "models.CLIDMUModel": "clidmu_tf.models.clidmu_model",
    "pipelines.make_training_data": "clidmu_tf.pipelines.streams",
    "tuning.CLIDMUHyperModel": "clidmu_tf.tuning.clidmu_hyper_model",
    "tuning.run_search": "clidmu_tf.tuning.search",
    "CLIDMUModel": "clidmu_tf.models.clidmu_model",
    "clid_loss": "clidmu_tf.losses.clid_loss",
}


@pytest.mark.parametrize("path, module", sorted(ATTRIBUTES.items()))
def test_public_names_are_attributes_of_the_package(path, module):
    value = cm
    for part in path.split("."):
        value = getattr(value, part)
    assert value.__module__ == module


def test_every_sub_package_but_the_application_is_public():
    sub_packages = {info.name for info in pkgutil.iter_modules(cm.__path__) if info.ispkg}
    assert sub_packages - {"cli"} <= set(cm.__all__)
    assert {"pipelines", "export", "tuning", "callbacks"} <= set(cm.__all__)
    assert "cli" not in cm.__all__
    assert set(cm.__all__) <= set(dir(cm))
    for name in cm.__all__:
        assert getattr(cm, name) is not None


def test_an_unknown_attribute_is_an_attribute_error():
    with pytest.raises(AttributeError, match="no attribute 'callback'"):
        cm.callback  # noqa: B018


# Makes TensorFlow impossible to import, as on a machine that only serves the ONNX export.
WITHOUT_TENSORFLOW = """
import importlib.abc
import sys


class Blocker(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("tensorflow", "keras"):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None


sys.meta_path.insert(0, Blocker())
import clidmu_tf

assert "callbacks" in dir(clidmu_tf)
from clidmu_tf.export import OnnxPredictor  # noqa: F401

try:
    clidmu_tf.callbacks
except ImportError as error:
    print(error)
"""


def test_without_tensorflow_the_package_imports_and_says_what_is_missing():
    result = subprocess.run(
        [sys.executable, "-c", WITHOUT_TENSORFLOW], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "clidmu_tf.callbacks needs TensorFlow" in result.stdout
    assert "OnnxPredictor is available" in result.stdout


def test_with_keras_loaded_first_a_saved_model_loads_after_import_clidmu_tf(tmp_path):
    # The usual order, `import keras` then `import clidmu_tf`: the custom classes must be
    # registered at once, or `keras.saving.load_model` cannot find `clidmu_tf>CLIDMUModel`.
    from clidmu_tf import CLIDMUModel, backbones

    model = CLIDMUModel(backbones.mlp((4,), 3, hidden_units=(8,)), seed=0)
    model.compile()
    model.save(tmp_path / "model.keras")
    script = (
        "import keras, clidmu_tf, sys\n"
        f"model = keras.saving.load_model({str(tmp_path / 'model.keras')!r})\n"
        "print(type(model).__name__)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip() == "CLIDMUModel"
