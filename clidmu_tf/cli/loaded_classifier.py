"""One interface over the models the command line can be pointed at."""

import json
import os

import numpy as np

from clidmu_tf.cli.run_directory import RunDirectory, load_keras_file

ONNX_FILE = "model.onnx"
SAVED_MODEL_DIR = "saved_model"
MODEL_CARD = "model_card.json"


class LoadedClassifier:
    """A trained classifier read from disk, whatever form it was saved in.

    `path` may be:

    - a run directory of `clidmu-tf train` (its CLID snapshot ensemble by default, or the
      model `model_kind` names);
    - an export directory (`model.onnx` is run with onnxruntime; without it, the SavedModel
      in `saved_model/`);
    - a `.onnx` file, a SavedModel directory, or a `.keras` file.

    Args:
        path: where the model is.
        model_kind: for a run directory, `"ensemble"`, `"final"` or `"baseline"`.

    Attributes:
        input_shape: the shape of one input sample.
        class_names: the class names, or None.
        run: the `RunDirectory` when `path` is a run, else None.
        description: what was loaded, for messages.

    Raises:
        FileNotFoundError: if `path` does not exist.
        ValueError: if `path` holds none of the above.

    Example:

    >>> classifier = LoadedClassifier("runs/demo")  # doctest: +SKIP
    >>> classifier.predict_proba(x).shape  # doctest: +SKIP
    (N, 10)
    """

    def __init__(self, path, model_kind="ensemble"):
        path = os.fspath(path)
        if not os.path.exists(path):
            raise FileNotFoundError(f"The model {path!r} does not exist.")
        self.run = None
        self.class_names = None
        self._onnx = None
        self._keras = None
        self._serve = None
        run = RunDirectory(path)
        if os.path.isdir(path) and run.is_run:
            self.run = run
            report = run.report()
            self.class_names = report.get("data", {}).get("class_names")
            self._set_keras(run.load_model(model_kind))
            self.description = f"the {model_kind} model of the run {path!r}"
        elif os.path.isfile(os.path.join(path, ONNX_FILE)) or path.endswith(".onnx"):
            from clidmu_tf.export import OnnxPredictor

            self._onnx = OnnxPredictor(path)
            self.class_names = self._onnx.class_names
            self.input_shape = tuple(self._onnx.input_shape[1:])
            self.description = f"the ONNX model {self._onnx.model_path!r}"
        elif os.path.isdir(os.path.join(path, SAVED_MODEL_DIR)) or os.path.isfile(
            os.path.join(path, "saved_model.pb")
        ):
            self._load_saved_model(path)
        elif path.endswith(".keras"):
            self._set_keras(load_keras_file(path))
            self.description = f"the Keras model {path!r}"
        else:
            raise ValueError(
                "Received an invalid value for `MODEL`, expected a clidmu-tf run directory, an "
                "export directory (model.onnx or saved_model/), a .onnx file, a SavedModel "
                f"directory or a .keras file. Received: {path!r}"
            )

    def _set_keras(self, model):
        self._keras = model
        # A CLIDMUModel is subclassed; its functional backbone knows the input shape.
        functional = getattr(model, "backbone", model)
        self.input_shape = tuple(functional.inputs[0].shape[1:])

    def _load_saved_model(self, path):
        import tensorflow as tf

        card_path = os.path.join(path, MODEL_CARD)
        if os.path.isdir(os.path.join(path, SAVED_MODEL_DIR)):
            path = os.path.join(path, SAVED_MODEL_DIR)
        else:
            card_path = os.path.join(os.path.dirname(os.path.abspath(path)), MODEL_CARD)
        loaded = tf.saved_model.load(path)
        signature = loaded.signatures["serving_default"]
        (spec,) = signature.structured_input_signature[1].values()
        self.input_shape = tuple(spec.shape[1:])
        self._serve = lambda x: signature(**{spec.name: tf.constant(x)})["probabilities"]
        if os.path.isfile(card_path):
            with open(card_path, encoding="utf-8") as handle:
                self.class_names = (json.load(handle).get("classes") or {}).get("names")
        self.description = f"the SavedModel {path!r}"

    def predict_proba(self, x, batch_size=256):
        """The class probabilities of some inputs, computed batch by batch.

        Args:
            x: float inputs `[N, *input_shape]`, as an array or as a finite `tf.data.Dataset`
                of input batches (or of `(inputs, ...)` tuples), such as
                `clidmu_tf.pipelines.streams.input_stream` of a split read from disk: a
                dataset is read once, a batch at a time, and never held whole.
            batch_size: positive int, the size of an array's batches (a dataset's batches
                are used as they come).

        Returns:
            A float array `[N, C]`, in the order of the inputs.

        Raises:
            ValueError: for an empty, non-finite or infinite `x`, or inputs of another
                shape than the model's.
        """
        # TensorFlow loads here, not when the command line reads MODEL's path.
        from clidmu_tf.model_inputs import check_model_inputs, input_batches

        inputs = check_model_inputs(x, "x")
        chunks = [
            self._predict_batch(np.asarray(batch, dtype=np.float32))
            for batch in input_batches(inputs, batch_size, self._keras)
        ]
        if not chunks:
            raise ValueError(
                "Received an invalid value for `x`, expected at least one sample. Received: "
                "an empty dataset"
            )
        return np.concatenate(chunks)

    def _predict_batch(self, batch):
        """The class probabilities `[b, C]` of one input batch `[b, *input_shape]`."""
        if len(batch.shape) != len(self.input_shape) + 1 or any(
            size is not None and size != actual
            for size, actual in zip(self.input_shape, batch.shape[1:])
        ):
            raise ValueError(
                f"Received an invalid value for `x`, expected inputs of shape "
                f"[N, {', '.join(map(str, self.input_shape))}] ({self.description}'s). "
                f"Received: a batch of shape {batch.shape}"
            )
        if self._onnx is not None:
            return self._onnx.predict_proba(batch)
        if self._serve is not None:
            return np.asarray(self._serve(batch))
        logits = np.asarray(self._keras(batch, training=False), dtype=np.float64)
        shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
        return shifted / shifted.sum(axis=1, keepdims=True)
