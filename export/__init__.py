"""Deployment export of the CLID snapshot ensemble.

`OnnxPredictor` needs only numpy and onnxruntime; `export_ensemble` needs TensorFlow and is
imported on first use, so that `from clidmu_tf.export import OnnxPredictor` does not load
TensorFlow on a deployment machine.
"""

from clidmu_tf.export.onnx_predictor import OnnxPredictor

__all__ = ["OnnxPredictor", "export_ensemble"]


def __getattr__(name):
    if name == "export_ensemble":
        from clidmu_tf.export.export_lib import export_ensemble

        return export_ensemble
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
