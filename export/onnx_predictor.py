"""Runs an exported ensemble with onnxruntime and numpy only.

This module must stay importable without TensorFlow, so that a deployment can install
onnxruntime alone: it imports nothing from the rest of clidmu_tf (which needs TensorFlow),
and the tests load it with TensorFlow blocked.
"""

import json
import os

import numpy as np

# Written by `export_ensemble`; repeated here rather than imported, to keep this module free of
# the TensorFlow-dependent parts of the library.
MODEL_FILE_NAME = "model.onnx"
MODEL_CARD_NAME = "model_card.json"
CLASS_NAMES_KEY = "clidmu_tf.class_names"
OUTPUT_NAMES = ("logits", "probabilities", "predicted_class")

ONNX_TO_NUMPY_DTYPES = {
    "tensor(float)": np.float32,
    "tensor(double)": np.float64,
    "tensor(float16)": np.float16,
    "tensor(uint8)": np.uint8,
    "tensor(int8)": np.int8,
    "tensor(int16)": np.int16,
    "tensor(int32)": np.int32,
    "tensor(int64)": np.int64,
    "tensor(bool)": np.bool_,
}


class OnnxPredictor:
    """Predicts with an ensemble exported by `export_ensemble`, in onnxruntime.

    The deployment path needs numpy and onnxruntime, not TensorFlow. Inputs are checked
    against the model's input (rank, sizes, dtype) before they reach onnxruntime, so a wrong
    input fails with a message that says what was expected.

    Args:
        path: the export directory (holding `model.onnx` and `model_card.json`) or the path
            of an `.onnx` file. A `model_card.json` next to the file is read if present.
        providers: onnxruntime execution providers; defaults to `["CPUExecutionProvider"]`.
        session_options: an `onnxruntime.SessionOptions` (threads, graph optimisation), or
            None for onnxruntime's defaults.

    Attributes:
        input_name: name of the model's input.
        input_shape: its shape, `None` for the dynamic batch.
        input_dtype: its numpy dtype.
        class_names: the class names recorded at export, or None.
        model_card: the model card as a dict, or None when there is none.

    Raises:
        ImportError: if onnxruntime is not installed.
        FileNotFoundError: if the model file does not exist.
        ValueError: if the file is not a valid ONNX model, or not one written by
            `export_ensemble` (one input; outputs `logits`, `probabilities`,
            `predicted_class`).

    Example:

    >>> import numpy as np
    >>> predictor = OnnxPredictor("export")  # doctest: +SKIP
    >>> outputs = predictor.predict(np.zeros((4, 8), "float32"))  # doctest: +SKIP
    >>> sorted(outputs)  # doctest: +SKIP
    ['logits', 'predicted_class', 'probabilities']
    """

    def __init__(self, path, providers=None, session_options=None):
        try:
            import onnxruntime
        except ImportError as error:
            raise ImportError(
                "OnnxPredictor needs onnxruntime: `pip install onnxruntime`."
            ) from error
        path = os.fspath(path)
        model_path = os.path.join(path, MODEL_FILE_NAME) if os.path.isdir(path) else path
        if not os.path.isfile(model_path):
            raise FileNotFoundError(f"No ONNX model at {model_path!r}.")
        self.model_path = model_path
        try:
            self._session = onnxruntime.InferenceSession(
                model_path,
                sess_options=session_options,
                providers=providers or ["CPUExecutionProvider"],
            )
        except Exception as error:
            raise ValueError(
                f"{model_path!r} cannot be loaded as an ONNX model: {error}"
            ) from error

        model_inputs = self._session.get_inputs()
        output_names = [output.name for output in self._session.get_outputs()]
        if len(model_inputs) != 1 or sorted(output_names) != sorted(OUTPUT_NAMES):
            raise ValueError(
                f"{model_path!r} is not an ensemble exported by export_ensemble: expected one "
                f"input and the outputs {list(OUTPUT_NAMES)}. Received: "
                f"{len(model_inputs)} inputs, outputs {output_names}"
            )
        (model_input,) = model_inputs
        if model_input.type not in ONNX_TO_NUMPY_DTYPES:
            raise ValueError(
                f"{model_path!r} takes an input of type {model_input.type}, which "
                "OnnxPredictor does not support."
            )
        self.input_name = model_input.name
        self.input_shape = tuple(d if isinstance(d, int) else None for d in model_input.shape)
        self.input_dtype = np.dtype(ONNX_TO_NUMPY_DTYPES[model_input.type])

        metadata = self._session.get_modelmeta().custom_metadata_map
        self.class_names = (
            json.loads(metadata[CLASS_NAMES_KEY]) if CLASS_NAMES_KEY in metadata else None
        )
        card_path = os.path.join(os.path.dirname(model_path), MODEL_CARD_NAME)
        self.model_card = None
        if os.path.isfile(card_path):
            with open(card_path, encoding="utf-8") as handle:
                self.model_card = json.load(handle)

    def predict(self, x, batch_size=None):
        """Runs the ensemble.

        Args:
            x: a numpy array of the model's input shape and dtype (see `input_shape`,
                `input_dtype`); no implicit cast, so that a float64 or uint8 array is not
                silently fed to a float32 model.
            batch_size: run at most this many samples at a time; None runs all at once.

        Returns:
            A dict of numpy arrays: `"logits"` `[N, C]` float32 (the mean of the members'
            logits), `"probabilities"` `[N, C]` (their softmax), `"predicted_class"` `[N]`
            int64.

        Raises:
            ValueError: if `x` has the wrong rank, sizes or dtype, or holds no sample, or
                `batch_size` is not a positive integer.
        """
        x = self._check_input(x)
        if batch_size is None:
            batch_size = len(x)
        elif isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(
                "Received an invalid value for `batch_size`, expected a positive integer. "
                f"Received: batch_size={batch_size!r}"
            )
        chunks = [
            self._session.run(OUTPUT_NAMES, {self.input_name: x[start : start + batch_size]})
            for start in range(0, len(x), batch_size)
        ]
        return {
            name: np.concatenate([chunk[index] for chunk in chunks])
            for index, name in enumerate(OUTPUT_NAMES)
        }

    def predict_proba(self, x, batch_size=None):
        """The class probabilities `[N, C]`; see `predict`."""
        return self.predict(x, batch_size)["probabilities"]

    def predict_class(self, x, batch_size=None):
        """The predicted class ids `[N]`; see `predict`."""
        return self.predict(x, batch_size)["predicted_class"]

    def _check_input(self, x):
        if not isinstance(x, np.ndarray):
            x = np.asarray(x)
        expected_shape = tuple(self.input_shape)
        expected = f"an array of dtype {self.input_dtype.name} and shape {expected_shape}"
        received = f"x.shape={x.shape}, x.dtype={x.dtype.name}"
        sizes_match = x.ndim == len(expected_shape) and all(
            size is None or size == actual for size, actual in zip(expected_shape, x.shape)
        )
        if not sizes_match or x.dtype != self.input_dtype:
            raise ValueError(
                f"Received an invalid value for `x`, expected {expected}. Received: {received}"
            )
        if x.shape[0] == 0:
            raise ValueError(
                "Received an invalid value for `x`, expected at least one sample. "
                f"Received: {received}"
            )
        return x
