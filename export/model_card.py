"""The model card written next to an export: what a deployment needs to know, as JSON."""

import importlib.metadata
import json
import os
import platform

import numpy as np

MODEL_CARD_NAME = "model_card.json"
MODEL_CARD_FORMAT = "clidmu_tf.model_card"
MODEL_CARD_VERSION = 1

# Distribution names, not module names: `tensorflow` installs as `tensorflow-cpu` on x86-64.
VERSIONED_DISTRIBUTIONS = {
    "clidmu_tf": ("clidmu-tf",),
    "tensorflow": ("tensorflow", "tensorflow-cpu"),
    "keras": ("keras",),
    "numpy": ("numpy",),
    "onnx": ("onnx",),
    "tf2onnx": ("tf2onnx",),
    "onnxruntime": ("onnxruntime",),
}


def library_versions():
    """The versions of the libraries an export depends on; None for one not installed."""
    versions = {"python": platform.python_version()}
    for name, distributions in VERSIONED_DISTRIBUTIONS.items():
        versions[name] = None
        for distribution in distributions:
            try:
                versions[name] = importlib.metadata.version(distribution)
                break
            except importlib.metadata.PackageNotFoundError:
                continue
    return versions


def jsonable(value):
    """`value` with numpy scalars and arrays turned into plain Python values."""
    return json.loads(json.dumps(value, default=_numpy_to_python))


def write_model_card(directory, card):
    with open(os.path.join(directory, MODEL_CARD_NAME), "w", encoding="utf-8") as handle:
        json.dump(card, handle, indent=2, default=_numpy_to_python)
        handle.write("\n")


def _numpy_to_python(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")
