"""OnnxPredictor: the deployment helper that runs an export with onnxruntime, not TensorFlow."""

import pathlib
import subprocess
import sys
import textwrap

import keras
import numpy as np
import onnx
import pytest

from clidmu_tf import backbones
from clidmu_tf.export import OnnxPredictor, export_ensemble

MODULE_PATH = pathlib.Path(__file__).parents[1] / "export" / "onnx_predictor.py"
CLASS_NAMES = ["a", "b", "c"]

# Run in a subprocess: makes TensorFlow (and, for the file-level check, the rest of clidmu_tf)
# impossible to import, then predicts with OnnxPredictor and saves the outputs.
TF_FREE_SCRIPT = textwrap.dedent(
    """
    import importlib.abc
    import importlib.util
    import sys

    BLOCKED = set(sys.argv[4].split(","))


    class Blocker(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in BLOCKED:
                raise ImportError(f"{name} is blocked in this test")
            return None


    sys.meta_path.insert(0, Blocker())
    try:
        import tensorflow
    except ImportError:
        pass
    else:
        raise AssertionError("the blocker let TensorFlow in")

    import numpy as np

    if sys.argv[5] == "file":
        spec = importlib.util.spec_from_file_location("onnx_predictor", sys.argv[1])
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        OnnxPredictor = module.OnnxPredictor
    else:
        from clidmu_tf.export import OnnxPredictor

    predictor = OnnxPredictor(sys.argv[2])
    outputs = predictor.predict(np.load(sys.argv[3]))
    np.savez(sys.argv[3] + ".out.npz", **outputs)
    assert not any(name.split(".")[0] in BLOCKED for name in sys.modules)
    print(predictor.class_names)
    """
)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    root = tmp_path_factory.mktemp("predictor")
    keras.utils.set_random_seed(0)
    model = backbones.mlp((8,), 3, hidden_units=(16,))
    export_ensemble(model, root / "export", formats=("onnx",), class_names=CLASS_NAMES)
    return {"out_dir": root / "export", "model": model}


def inputs(num_samples, seed=0):
    return np.random.default_rng(seed).normal(size=(num_samples, 8)).astype("float32")


def test_predict_matches_keras(exported):
    predictor = OnnxPredictor(exported["out_dir"])
    x = inputs(6)
    outputs = predictor.predict(x)
    logits = exported["model"].predict(x, verbose=0)["logits"]
    assert sorted(outputs) == ["logits", "predicted_class", "probabilities"]
    np.testing.assert_allclose(outputs["logits"], logits, atol=1e-5)
    np.testing.assert_allclose(outputs["probabilities"].sum(axis=-1), 1.0, atol=1e-6)
    np.testing.assert_array_equal(outputs["predicted_class"], np.argmax(logits, axis=-1))
    np.testing.assert_array_equal(predictor.predict_class(x), outputs["predicted_class"])
    np.testing.assert_array_equal(predictor.predict_proba(x), outputs["probabilities"])
    chunked = predictor.predict(x, batch_size=4)
    for name in outputs:
        np.testing.assert_allclose(chunked[name], outputs[name], atol=1e-6)


def test_reads_the_input_spec_class_names_and_model_card(exported):
    predictor = OnnxPredictor(exported["out_dir"] / "model.onnx")
    assert predictor.input_name == "inputs"
    assert predictor.input_shape == (None, 8)
    assert predictor.input_dtype == np.float32
    assert predictor.class_names == CLASS_NAMES
    assert predictor.model_card["classes"]["names"] == CLASS_NAMES


@pytest.mark.parametrize(
    "x, received",
    [
        (np.zeros((2, 9), "float32"), r"x.shape=\(2, 9\), x.dtype=float32"),
        (np.zeros((8,), "float32"), r"x.shape=\(8,\), x.dtype=float32"),
        (np.zeros((2, 2, 8), "float32"), r"x.shape=\(2, 2, 8\), x.dtype=float32"),
        (np.zeros((2, 8), "float64"), r"x.shape=\(2, 8\), x.dtype=float64"),
        (np.zeros((2, 8), "uint8"), r"x.shape=\(2, 8\), x.dtype=uint8"),
        ([[0.0] * 8], r"x.shape=\(1, 8\), x.dtype=float64"),
    ],
)
def test_rejects_a_wrong_input(exported, x, received):
    predictor = OnnxPredictor(exported["out_dir"])
    expected = r"expected an array of dtype float32 and shape \(None, 8\)"
    message = rf"invalid value for `x`, {expected}. Received: {received}"
    with pytest.raises(ValueError, match=message):
        predictor.predict(x)


def test_rejects_an_empty_batch_and_a_bad_batch_size(exported):
    predictor = OnnxPredictor(exported["out_dir"])
    with pytest.raises(ValueError, match=r"at least one sample. Received: x.shape=\(0, 8\)"):
        predictor.predict(np.zeros((0, 8), "float32"))
    with pytest.raises(ValueError, match="`batch_size`, expected a positive integer. Received: "):
        predictor.predict(inputs(2), batch_size=0)


def test_rejects_missing_corrupt_and_foreign_models(tmp_path):
    with pytest.raises(FileNotFoundError, match="No ONNX model at"):
        OnnxPredictor(tmp_path)
    (tmp_path / "model.onnx").write_bytes(b"not a protobuf")
    with pytest.raises(ValueError, match="cannot be loaded as an ONNX model"):
        OnnxPredictor(tmp_path)
    identity = onnx.helper.make_graph(
        [onnx.helper.make_node("Identity", ["x"], ["y"])],
        "identity",
        [onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [None, 8])],
        [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [None, 8])],
    )
    model = onnx.helper.make_model(identity, opset_imports=[onnx.helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, tmp_path / "foreign.onnx")
    with pytest.raises(ValueError, match=r"not an ensemble exported by export_ensemble.*\['y'\]"):
        OnnxPredictor(tmp_path / "foreign.onnx")


def run_without_tensorflow(exported, tmp_path, blocked, load):
    x = inputs(5, seed=1)
    np.save(tmp_path / "x.npy", x)
    script = tmp_path / "deploy.py"
    script.write_text(TF_FREE_SCRIPT)
    result = subprocess.run(
        [
            sys.executable,
            str(script),
            str(MODULE_PATH),
            str(exported["out_dir"]),
            str(tmp_path / "x.npy"),
            blocked,
            load,
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == str(CLASS_NAMES)
    outputs = np.load(tmp_path / "x.npy.out.npz")
    logits = exported["model"].predict(x, verbose=0)["logits"]
    np.testing.assert_allclose(outputs["logits"], logits, atol=1e-5)


def test_the_predictor_module_needs_no_tensorflow(exported, tmp_path):
    run_without_tensorflow(exported, tmp_path, "tensorflow,keras,tf2onnx,clidmu_tf", "file")


def test_the_installed_package_needs_no_tensorflow(exported, tmp_path):
    run_without_tensorflow(exported, tmp_path, "tensorflow,keras,tf2onnx", "package")
