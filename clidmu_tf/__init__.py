"""clidmu-tf: train Keras classifiers on noisy labels without a clean validation set.

CLID-MU (Hu et al., KDD 2025) steers a meta-model with CLID, a label-free score of how well
a batch's embedding structure agrees with its output structure.
"""

__version__ = "0.1.0"

__all__ = [
    "CLID",
    "CLIDLoss",
    "CLIDMUModel",
    "MetaWeightNet",
    "VRIRectifier",
    "backbones",
    "clid_loss",
    "paper_meta_optimizer",
]

try:
    import tensorflow  # noqa: F401
except ImportError as error:
    # A deployment machine that only serves the exported ONNX model has no TensorFlow;
    # clidmu_tf.export.OnnxPredictor still works there.
    _missing_tensorflow = error
else:
    _missing_tensorflow = None
    # Imported eagerly so that the Keras classes are registered for `.keras` loading as soon
    # as the package is imported.
    from clidmu_tf import backbones
    from clidmu_tf.losses import CLIDLoss, clid_loss
    from clidmu_tf.meta_models import MetaWeightNet, VRIRectifier
    from clidmu_tf.metrics import CLID
    from clidmu_tf.models import CLIDMUModel, paper_meta_optimizer


def __getattr__(name):
    if name in __all__ and _missing_tensorflow is not None:
        raise ImportError(
            f"clidmu_tf.{name} needs TensorFlow, which could not be imported "
            f"({_missing_tensorflow}). Install it with `pip install clidmu-tf`; without it only "
            "clidmu_tf.export.OnnxPredictor is available."
        )
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
