"""clidmu-tf: train Keras classifiers on noisy labels without a clean validation set.

CLID-MU (Hu et al., KDD 2025) steers a meta-model with CLID, a label-free score of how well
a batch's embedding structure agrees with its output structure.

The public classes and sub-packages are attributes of the package, the Keras way
(`clidmu_tf.CLIDMUModel`, `clidmu_tf.callbacks.CLIDSnapshotEnsemble`, `clidmu_tf.tuning`,
...). Each is imported on first use, so `import clidmu_tf` itself does not load TensorFlow:
the command line reads its arguments in a fraction of a second, and
`clidmu_tf.export.OnnxPredictor` works on a machine without TensorFlow. Keras finds the
custom classes of a saved `.keras` file once they are imported. When Keras is already loaded
at `import clidmu_tf` (the usual `import keras` first), they are registered at once, since it
costs nothing then; otherwise use one of them (for example `from clidmu_tf import
CLIDMUModel`) before `keras.saving.load_model`.
"""

import importlib
import sys

__version__ = "0.1.0"

# The public classes and functions, each with the sub-package that defines it.
_NAMES = {
    "CLID": "clidmu_tf.metrics",
    "CLIDLoss": "clidmu_tf.losses",
    "CLIDMUModel": "clidmu_tf.models",
    "MetaWeightNet": "clidmu_tf.meta_models",
    "VRIRectifier": "clidmu_tf.meta_models",
    "clid_loss": "clidmu_tf.losses",
    "paper_meta_optimizer": "clidmu_tf.models",
}
_SUBPACKAGES = (
    "backbones",
    "callbacks",
    "export",
    "losses",
    "meta_models",
    "metrics",
    "models",
    "pipelines",
    "tuning",
)
# What needs TensorFlow that a deployment machine, serving the exported ONNX model, may lack.
_TENSORFLOW_PACKAGES = ("tensorflow", "keras", "keras_tuner", "tf2onnx", "tensorflow_datasets")

__all__ = sorted([*_NAMES, *_SUBPACKAGES])


def __getattr__(name):
    if name in _SUBPACKAGES:
        module_name = f"{__name__}.{name}"
    elif name in _NAMES:
        module_name = _NAMES[name]
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as error:
        if (error.name or "").split(".")[0] not in _TENSORFLOW_PACKAGES:
            raise
        raise ImportError(
            f"clidmu_tf.{name} needs TensorFlow, which could not be imported ({error}). "
            "Install it with `pip install clidmu-tf`; without it only "
            "clidmu_tf.export.OnnxPredictor is available."
        ) from error
    value = module if name in _SUBPACKAGES else getattr(module, name)
    globals()[name] = value
    return value


def __dir__():
    return sorted({*globals(), *__all__})


def _register_keras_classes():
    """Imports every module that registers a class for `.keras` loading."""
    for name in ("backbones", "losses", "meta_models", "metrics", "models"):
        __getattr__(name)


if "keras" in sys.modules:
    _register_keras_classes()
