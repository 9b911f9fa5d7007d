"""Export of a classifier (the CLID snapshot ensemble, or one model) for deployment."""

import datetime
import json
import os
import shutil
import uuid
from collections.abc import Mapping, Sequence

import keras
import numpy as np
import tensorflow as tf

from clidmu_tf.export import model_card as model_card_lib
from clidmu_tf.export.onnx_predictor import (
    CLASS_NAMES_KEY,
    MODEL_FILE_NAME,
    OUTPUT_NAMES,
    OnnxPredictor,
)
from clidmu_tf.validation import check_bool, check_positive_float, invalid_value

FORMATS = ("saved_model", "onnx")
SAVED_MODEL_DIR = "saved_model"
ENDPOINT_NAME = "serve"
INPUT_NAME = "inputs"
MIN_OPSET = 17
RANDOM_VERIFICATION_SAMPLES = 32


def export_ensemble(
    model,
    out_dir,
    formats=FORMATS,
    *,
    class_names=None,
    preprocessing=None,
    noise_report=None,
    metrics=None,
    members=None,
    selection_monitor="meta_clid",
    verification_inputs=None,
    input_signature=None,
    opset=MIN_OPSET,
    tolerance=1e-5,
    overwrite=False,
    seed=0,
):
    """Exports a classifier to SavedModel and ONNX, verifies both, and writes a model card.

    Both formats compute the same three named outputs from one input batch of dynamic size:
    `logits` `[N, C]` float32, `probabilities` `[N, C]` (their softmax) and
    `predicted_class` `[N]` int64. The export directory holds:

    - `saved_model/`: a TensorFlow SavedModel whose endpoint `serve` (also the
      `serving_default` signature) returns the outputs as a dict;
    - `model.onnx`: the same function for ONNX Runtime (opset `opset`), with the class names
      in its metadata; `OnnxPredictor` runs it without TensorFlow;
    - `model_card.json`: classes, input spec and expected preprocessing, ensemble members
      with their epochs and CLID, the training noise report, metrics, library versions and
      the verification figures.

    Verification reloads each written format, runs it on `verification_inputs` at their
    full batch size and at batch size 1, and compares it with the Keras model: the largest
    absolute difference of `probabilities` must be at most `tolerance`, that of `logits` at
    most `tolerance` times the logits' scale (their largest magnitude, at least 1: float32
    rounding grows with the values, so a model with logits in the thousands is compared at
    its own precision), and `predicted_class` must agree wherever Keras's two top logits
    differ by more than that logit tolerance. Everything is written to a temporary sibling
    of `out_dir` and renamed into place only after verification passed, so a failed export
    leaves no partial `out_dir`, and an existing one untouched.

    Args:
        model: a Keras model returning logits `[N, C]` (or a dict with `"logits"`): the
            ensemble from `CLIDSnapshotEnsemble.build_ensemble()`, a `CLIDMUModel`, or any
            classifier with one input.
        out_dir: the export directory. It must not exist or be empty, unless `overwrite`.
        formats: a non-empty subset of `("saved_model", "onnx")`.
        class_names: the `C` class names, or None.
        preprocessing: what the input must look like (a string or a dict, e.g.
            `"RGB, scaled to [0, 1], per-channel mean/std of CIFAR-10"`), or None.
        noise_report: the training labels' noise report (a dict, or an object with
            `to_dict()` such as `clidmu_tf.pipelines`' `NoiseReport`), or None.
        metrics: a dict of evaluation figures to record, or None.
        members: the ensemble's members, a list of dicts with at least `"epoch"` and
            `"clid"` (`CLIDSnapshotEnsemble.snapshots`, or `read_snapshot_manifest(dir)
            ["snapshots"]`), or None for a single model.
        selection_monitor: the CLID that ranked the members, the snapshot manifest's
            `"monitor"`: `"meta_clid"` (the meta set, the paper's rule) or `"held_out_clid"`
            (a held-out selection set); it names the selection rule on the card.
        verification_inputs: held-out inputs `[N, ...]` to verify the export on. If None,
            `RANDOM_VERIFICATION_SAMPLES` random inputs are used and the card says so.
        input_signature: a `tf.TensorSpec` of the input, needed only for a model that is
            neither functional nor has a functional `backbone`; its batch size is ignored.
        opset: ONNX opset, 17 or newer.
        tolerance: positive float, the largest difference allowed, relative to the logits'
            scale for `logits` (see above).
        overwrite: whether to replace a non-empty `out_dir`.
        seed: seed of the random verification inputs.

    Returns:
        The model card, as a dict.

    Raises:
        ValueError: for an invalid argument, an `out_dir` that exists and is not empty
            (unless `overwrite`) or is not a directory, or a model that does not return
            logits of rank 2. Raised before anything is written.
        RuntimeError: if the ONNX conversion or the verification fails; nothing is written
            then.

    Example:

    >>> ensemble = snapshots.build_ensemble()  # doctest: +SKIP
    >>> card = export_ensemble(ensemble, "export", class_names=["a", "b", "c"],
    ...                        members=snapshots.snapshots,
    ...                        verification_inputs=x_test)  # doctest: +SKIP
    >>> card["verification"]["passed"]  # doctest: +SKIP
    True
    """
    formats = _check_formats(formats)
    out_dir = _check_out_dir(out_dir, check_bool("overwrite", overwrite))
    _check_opset(opset)
    tolerance = check_positive_float("tolerance", tolerance)
    spec = _input_spec(model, input_signature)
    serve = _serving_function(model)
    inputs, inputs_description = _verification_inputs(verification_inputs, spec, seed)
    num_classes = _check_logits(serve, inputs)
    class_names = _check_class_names(class_names, num_classes)
    members = _check_members(members)
    noise_report = _as_dict("noise_report", noise_report)
    metrics = _as_dict("metrics", metrics)
    if preprocessing is not None and not isinstance(preprocessing, (str, Mapping)):
        raise invalid_value("preprocessing", "a string, a dict or None", preprocessing)

    parent = os.path.dirname(out_dir)
    os.makedirs(parent, exist_ok=True)
    # Not tempfile.mkdtemp: its 0700 would become the export's mode; os.mkdir follows the
    # user's umask like every other output.
    staging = os.path.join(parent, f".{os.path.basename(out_dir)}.export-{uuid.uuid4().hex}")
    os.mkdir(staging)
    try:
        files = {}
        if "saved_model" in formats:
            _write_saved_model(model, serve, spec, os.path.join(staging, SAVED_MODEL_DIR))
            files["saved_model"] = SAVED_MODEL_DIR
        if "onnx" in formats:
            _write_onnx(serve, spec, os.path.join(staging, MODEL_FILE_NAME), opset, class_names)
            files["onnx"] = MODEL_FILE_NAME
        verification = _verify(serve, staging, files, inputs, tolerance)
        verification["inputs"] = inputs_description
        card = {
            "format": model_card_lib.MODEL_CARD_FORMAT,
            "version": model_card_lib.MODEL_CARD_VERSION,
            "created": datetime.datetime.now(datetime.timezone.utc).isoformat(),
            "model": model.name,
            "task": "classification",
            "classes": {"num_classes": num_classes, "names": class_names},
            "input": {
                "name": INPUT_NAME,
                "shape": list(spec.shape),
                "dtype": spec.dtype.name,
            },
            "preprocessing": model_card_lib.jsonable(preprocessing),
            "outputs": {
                "logits": {"shape": [None, num_classes], "dtype": "float32"},
                "probabilities": {"shape": [None, num_classes], "dtype": "float32"},
                "predicted_class": {"shape": [None], "dtype": "int64"},
            },
            "ensemble": _ensemble_section(members, selection_monitor),
            "noise_report": noise_report,
            "metrics": metrics,
            "files": files,
            "saved_model": {"endpoint": ENDPOINT_NAME} if "saved_model" in files else None,
            "onnx": {"opset": opset} if "onnx" in files else None,
            "verification": verification,
            "versions": model_card_lib.library_versions(),
        }
        model_card_lib.write_model_card(staging, card)
        _publish(staging, out_dir)
    finally:
        if os.path.isdir(staging):
            shutil.rmtree(staging)
    return card


def _check_formats(formats):
    if isinstance(formats, str):
        formats = (formats,)
    try:
        formats = tuple(formats)
    except TypeError:
        raise invalid_value("formats", f"a non-empty subset of {list(FORMATS)}", formats)
    if not formats or any(f not in FORMATS for f in formats):
        raise invalid_value("formats", f"a non-empty subset of {list(FORMATS)}", formats)
    return formats


def _check_out_dir(out_dir, overwrite):
    try:
        out_dir = os.path.abspath(os.fspath(out_dir))
    except TypeError:
        raise invalid_value("out_dir", "a path", out_dir) from None
    if not os.path.lexists(out_dir):
        return out_dir
    if not os.path.isdir(out_dir) or os.path.islink(out_dir):
        raise ValueError(
            f"Received an invalid value for `out_dir`, expected a directory or a new path. "
            f"Received: out_dir={out_dir!r}, which exists and is not a directory"
        )
    if os.listdir(out_dir) and not overwrite:
        raise ValueError(
            f"The export directory {out_dir!r} exists and is not empty. Pass overwrite=True "
            f"to replace it, or choose another directory. Received: overwrite={overwrite!r}"
        )
    return out_dir


def _check_opset(opset):
    import tf2onnx

    newest = max(tf2onnx.constants.OPSET_TO_IR_VERSION)
    if isinstance(opset, bool) or not isinstance(opset, int) or not MIN_OPSET <= opset <= newest:
        raise invalid_value("opset", f"an integer from {MIN_OPSET} to {newest}", opset)


def _input_spec(model, input_signature):
    if input_signature is not None:
        if not isinstance(input_signature, tf.TensorSpec):
            raise invalid_value("input_signature", "a tf.TensorSpec", input_signature)
        shape, dtype = tuple(input_signature.shape)[1:], input_signature.dtype
    else:
        inputs = _functional_inputs(model) or _functional_inputs(getattr(model, "backbone", None))
        if not inputs:
            raise ValueError(
                f"The input of model {model.name!r} is unknown: it is not functional and has "
                "no functional `backbone`. Pass `input_signature`, a tf.TensorSpec."
            )
        if len(inputs) != 1:
            raise ValueError(
                "export_ensemble exports models with one input. Received: a model with "
                f"{len(inputs)} inputs"
            )
        shape, dtype = tuple(inputs[0].shape)[1:], tf.as_dtype(inputs[0].dtype)
    if any(size is None for size in shape):
        raise ValueError(
            "export_ensemble needs the size of every input dimension but the batch. "
            f"Received: input shape {(None,) + shape}; pass `input_signature`."
        )
    return tf.TensorSpec((None,) + shape, dtype, name=INPUT_NAME)


def _functional_inputs(model):
    if not isinstance(model, keras.Model):
        return None
    try:
        return model.inputs
    except (AttributeError, ValueError):
        return None


def _serving_function(model):
    def serve(inputs):
        outputs = model(inputs, training=False)
        logits = outputs["logits"] if isinstance(outputs, Mapping) else outputs
        logits = tf.cast(logits, tf.float32)
        return {
            "logits": logits,
            "probabilities": tf.nn.softmax(logits, axis=-1),
            # tf.argmax, not keras.ops.argmax: Keras's adds Bitcast and BitwiseAnd ops (to
            # order -0.0 and 0.0), which tf2onnx cannot convert.
            "predicted_class": tf.argmax(logits, axis=-1, output_type=tf.int64),
        }

    return serve


def _verification_inputs(verification_inputs, spec, seed):
    sample_shape = tuple(spec.shape)[1:]
    dtype = spec.dtype.as_numpy_dtype
    if verification_inputs is None:
        rng = np.random.default_rng(seed)
        shape = (RANDOM_VERIFICATION_SAMPLES,) + sample_shape
        if spec.dtype.is_floating:
            inputs = rng.standard_normal(shape)
        else:
            inputs = rng.integers(0, 256 if spec.dtype == tf.uint8 else 2, shape)
        description = (
            f"{RANDOM_VERIFICATION_SAMPLES} random inputs (no held-out inputs were given): "
            "the figures measure conversion fidelity, not behaviour on real data"
        )
        return inputs.astype(dtype), description
    inputs = np.asarray(verification_inputs)
    if inputs.ndim != len(spec.shape) or inputs.shape[1:] != sample_shape or not len(inputs):
        raise ValueError(
            "Received an invalid value for `verification_inputs`, expected a non-empty array "
            f"of shape {(None,) + sample_shape}. Received: verification_inputs.shape="
            f"{inputs.shape}"
        )
    return inputs.astype(dtype), f"{len(inputs)} held-out inputs given by the caller"


def _check_logits(serve, inputs):
    logits = serve(inputs[:2])["logits"]
    if len(logits.shape) != 2:
        raise ValueError(
            "export_ensemble exports a model whose output is logits [N, C] (or a dict with "
            f"'logits'). Received: an output of shape {tuple(logits.shape)}"
        )
    return int(logits.shape[-1])


def _check_class_names(class_names, num_classes):
    if class_names is None:
        return None
    names = list(class_names) if isinstance(class_names, Sequence) else None
    if (
        isinstance(class_names, str)
        or names is None
        or len(names) != num_classes
        or not all(isinstance(name, str) for name in names)
    ):
        raise invalid_value("class_names", f"{num_classes} strings, one per class", class_names)
    return names


def _check_members(members):
    if members is None:
        return None
    valid = isinstance(members, Sequence) and all(
        isinstance(member, Mapping) and {"epoch", "clid"} <= set(member) for member in members
    )
    if not valid or not members:
        raise invalid_value(
            "members", 'a non-empty list of dicts with "epoch" and "clid"', members
        )
    return model_card_lib.jsonable([dict(member) for member in members])


def _as_dict(name, value):
    if value is None:
        return None
    if hasattr(value, "to_dict"):
        value = value.to_dict()
    if not isinstance(value, Mapping):
        raise invalid_value(name, "a dict, an object with to_dict(), or None", value)
    return model_card_lib.jsonable(dict(value))


SELECTION_RULES = {
    "meta_clid": "the epochs with the lowest CLID on the meta set",
    "held_out_clid": "the epochs with the lowest CLID on a held-out selection set, never "
    "trained on",
}


def _ensemble_section(members, monitor):
    if members is None:
        return None
    return {
        "rule": "mean of the members' logits",
        "selection": SELECTION_RULES.get(monitor, f"the epochs with the lowest {monitor}"),
        "members": members,
    }


def _write_saved_model(model, serve, spec, path):
    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint(ENDPOINT_NAME, serve, input_signature=[spec])
    archive.write_out(path, verbose=False)


def _write_onnx(serve, spec, path, opset, class_names):
    import onnx
    import tf2onnx

    function = tf.function(serve, input_signature=[spec])
    try:
        model_proto, _ = tf2onnx.convert.from_function(
            function, input_signature=[spec], opset=opset
        )
        # tf2onnx names the dynamic batch "unk__<n>"; one shared name says the sizes match.
        for value in list(model_proto.graph.input) + list(model_proto.graph.output):
            value.type.tensor_type.shape.dim[0].dim_param = "batch"
        if class_names is not None:
            onnx.helper.set_model_props(model_proto, {CLASS_NAMES_KEY: json.dumps(class_names)})
        # tf2onnx writes a graph even when it meets an op it cannot convert; the checker
        # is what rejects it.
        onnx.checker.check_model(model_proto, full_check=True)
    except Exception as error:
        raise RuntimeError(
            f"The model cannot be converted to ONNX at opset {opset}: {error}. Nothing was "
            "written."
        ) from error
    onnx.save(model_proto, path)


def _verify(serve, directory, files, inputs, tolerance):
    runners = {}
    if "saved_model" in files:
        reloaded = tf.saved_model.load(os.path.join(directory, files["saved_model"]))
        endpoint = getattr(reloaded, ENDPOINT_NAME)
        runners["saved_model"] = lambda x: {k: v.numpy() for k, v in endpoint(x).items()}
    if "onnx" in files:
        runners["onnx"] = OnnxPredictor(os.path.join(directory, files["onnx"])).predict

    results = []
    for batch_size in sorted({len(inputs), 1}, reverse=True):
        batch = inputs[:batch_size]
        expected = {name: value.numpy() for name, value in serve(batch).items()}
        logit_tolerance = tolerance * max(1.0, float(np.max(np.abs(expected["logits"]))))
        top_two = np.sort(expected["logits"], axis=-1)[:, -2:]
        decisive = top_two[:, 1] - top_two[:, 0] > logit_tolerance
        for format_name, run in runners.items():
            received = run(batch)
            if sorted(received) != sorted(OUTPUT_NAMES):
                raise RuntimeError(
                    f"The {format_name} export returns the outputs {sorted(received)}, "
                    f"expected {sorted(OUTPUT_NAMES)}."
                )
            mismatches = received["predicted_class"] != expected["predicted_class"]
            results.append(
                {
                    "format": format_name,
                    "batch_size": batch_size,
                    "max_abs_diff": {
                        name: float(np.max(np.abs(received[name] - expected[name])))
                        for name in ("logits", "probabilities")
                    },
                    "predicted_class_mismatches": int(np.sum(mismatches & decisive)),
                    "logit_tolerance": logit_tolerance,
                }
            )
    failures = [
        r
        for r in results
        if r["max_abs_diff"]["logits"] > r["logit_tolerance"]
        or r["max_abs_diff"]["probabilities"] > tolerance
        or r["predicted_class_mismatches"]
    ]
    if failures:
        raise RuntimeError(
            f"The export differs from the Keras model by more than tolerance={tolerance}: "
            f"{failures}. Nothing was written."
        )
    return {
        "reference": "the Keras model in TensorFlow, inference mode",
        "num_samples": len(inputs),
        "tolerance": tolerance,
        "results": results,
        "passed": True,
    }


def _publish(staging, out_dir):
    """Moves the finished export into place; an existing `out_dir` is removed only after."""
    if not os.path.isdir(out_dir):
        os.replace(staging, out_dir)
        return
    previous = f"{out_dir}.previous-{uuid.uuid4().hex}"
    os.replace(out_dir, previous)
    try:
        os.replace(staging, out_dir)
    except OSError:
        os.replace(previous, out_dir)
        raise
    shutil.rmtree(previous)
