"""export_ensemble: SavedModel and ONNX exports that match Keras, and the model card."""

import json
import os
import stat

import keras
import numpy as np
import onnx
import onnxruntime
import pytest
import tensorflow as tf

from clidmu_tf import CLIDMUModel, backbones
from clidmu_tf.callbacks import CLIDSnapshotEnsemble
from clidmu_tf.export import OnnxPredictor, export_ensemble

OUTPUT_NAMES = ["logits", "predicted_class", "probabilities"]
CLASS_NAMES = ["cat", "dog", "bird"]
TOLERANCE = 1e-5


class StubNoiseReport:
    """Stands for pipelines' NoiseReport: export only relies on `to_dict()`."""

    def to_dict(self):
        return {"kind": "symmetric", "rate": 0.4, "flip_rate": np.float64(0.27)}


def tiny_data(num_samples=60, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(num_samples, 8)).astype("float32")
    return x, rng.integers(0, 3, num_samples).astype("int32")


def trained_model():
    keras.utils.set_random_seed(0)
    model = CLIDMUModel(backbones.mlp((8,), 3, hidden_units=(16,)), seed=0)
    model.compile(optimizer=keras.optimizers.SGD(0.2))
    return model


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    root = tmp_path_factory.mktemp("export")
    x, y = tiny_data()
    train = tf.data.Dataset.from_tensor_slices((x, y)).batch(20)
    meta = tf.data.Dataset.from_tensor_slices(x[:40]).batch(20).repeat()
    model = trained_model()
    snapshots = CLIDSnapshotEnsemble(x[:40], top_k=2, directory=root / "snapshots", batch_size=20)
    model.fit(tf.data.Dataset.zip((train, meta)), epochs=3, callbacks=[snapshots], verbose=0)
    ensemble = snapshots.build_ensemble()
    held_out = tiny_data(7, seed=1)[0]
    card = export_ensemble(
        ensemble,
        root / "export",
        class_names=CLASS_NAMES,
        preprocessing="standardised features, float32",
        noise_report=StubNoiseReport(),
        metrics={"test_accuracy": np.float32(0.5)},
        members=snapshots.snapshots,
        verification_inputs=held_out,
    )
    return {
        "out_dir": root / "export",
        "card": card,
        "ensemble": ensemble,
        "snapshots": snapshots,
        "model": model,
    }


def expected_outputs(model, x):
    logits = np.asarray(model.predict(x, verbose=0))
    return {
        "logits": logits,
        "probabilities": tf.nn.softmax(logits).numpy(),
        "predicted_class": np.argmax(logits, axis=-1),
    }


def test_writes_the_three_artefacts(exported):
    assert sorted(os.listdir(exported["out_dir"])) == [
        "model.onnx",
        "model_card.json",
        "saved_model",
    ]
    assert not [name for name in os.listdir(exported["out_dir"].parent) if name.startswith(".")]
    with open(exported["out_dir"] / "model_card.json") as handle:
        assert json.load(handle) == json.loads(json.dumps(exported["card"]))


def test_saved_model_serve_endpoint_has_named_outputs_and_dynamic_batch(exported):
    reloaded = tf.saved_model.load(str(exported["out_dir"] / "saved_model"))
    signature = reloaded.signatures["serving_default"]
    assert sorted(signature.structured_outputs) == OUTPUT_NAMES
    (spec,) = signature.structured_input_signature[1].values()
    assert spec.shape.as_list() == [None, 8]
    assert sorted(reloaded.serve(np.zeros((2, 8), "float32"))) == OUTPUT_NAMES


def test_onnx_model_has_named_outputs_dynamic_batch_and_opset(exported):
    model = onnx.load(exported["out_dir"] / "model.onnx")
    onnx.checker.check_model(model, full_check=True)
    assert {entry.domain: entry.version for entry in model.opset_import}[""] >= 17
    assert sorted(output.name for output in model.graph.output) == OUTPUT_NAMES
    (graph_input,) = model.graph.input
    assert graph_input.name == "inputs"
    dims = graph_input.type.tensor_type.shape.dim
    assert [dims[0].dim_param, dims[1].dim_value] == ["batch", 8]
    for output in model.graph.output:
        assert output.type.tensor_type.shape.dim[0].dim_param == "batch"


@pytest.mark.parametrize("batch_size", [1, 13])
def test_round_trip_matches_keras_in_both_formats(exported, batch_size):
    x = tiny_data(batch_size, seed=2)[0]
    expected = expected_outputs(exported["ensemble"], x)
    reloaded = tf.saved_model.load(str(exported["out_dir"] / "saved_model"))
    from_saved_model = {k: v.numpy() for k, v in reloaded.serve(x).items()}
    session = onnxruntime.InferenceSession(
        exported["out_dir"] / "model.onnx", providers=["CPUExecutionProvider"]
    )
    names = [output.name for output in session.get_outputs()]
    from_onnx = dict(zip(names, session.run(None, {"inputs": x})))
    for received in (from_saved_model, from_onnx):
        np.testing.assert_allclose(received["logits"], expected["logits"], rtol=0, atol=TOLERANCE)
        np.testing.assert_allclose(
            received["probabilities"], expected["probabilities"], rtol=0, atol=TOLERANCE
        )
        np.testing.assert_array_equal(received["predicted_class"], expected["predicted_class"])
        assert received["logits"].shape == (batch_size, 3)
        assert received["predicted_class"].dtype == np.int64


def test_model_card_contents(exported):
    card = exported["card"]
    assert card["classes"] == {"num_classes": 3, "names": CLASS_NAMES}
    assert card["input"] == {"name": "inputs", "shape": [None, 8], "dtype": "float32"}
    assert card["preprocessing"] == "standardised features, float32"
    members = card["ensemble"]["members"]
    assert [(m["epoch"], m["clid"]) for m in members] == [
        (s["epoch"], s["clid"]) for s in exported["snapshots"].snapshots
    ]
    assert card["ensemble"]["rule"] == "mean of the members' logits"
    assert card["noise_report"] == {"kind": "symmetric", "rate": 0.4, "flip_rate": 0.27}
    assert card["metrics"] == {"test_accuracy": 0.5}
    assert card["files"] == {"saved_model": "saved_model", "onnx": "model.onnx"}
    assert card["onnx"] == {"opset": 17}
    assert card["saved_model"] == {"endpoint": "serve"}
    for library in ("clidmu_tf", "tensorflow", "keras", "numpy", "onnx", "tf2onnx", "onnxruntime"):
        assert card["versions"][library]
    assert card["versions"]["tensorflow"] == tf.__version__


def test_model_card_records_the_verification(exported):
    verification = exported["card"]["verification"]
    assert verification["passed"] is True
    assert verification["tolerance"] == TOLERANCE
    assert verification["inputs"] == "7 held-out inputs given by the caller"
    checked = {(r["format"], r["batch_size"]) for r in verification["results"]}
    assert checked == {("saved_model", 7), ("saved_model", 1), ("onnx", 7), ("onnx", 1)}
    for result in verification["results"]:
        assert set(result["max_abs_diff"]) == {"logits", "probabilities"}
        assert max(result["max_abs_diff"].values()) <= TOLERANCE
        assert result["predicted_class_mismatches"] == 0


def test_exports_a_single_clidmu_model_with_random_verification_inputs(exported, tmp_path):
    card = export_ensemble(exported["model"], tmp_path / "single", formats=("onnx",))
    assert sorted(os.listdir(tmp_path / "single")) == ["model.onnx", "model_card.json"]
    assert card["ensemble"] is None
    assert card["saved_model"] is None
    assert card["verification"]["inputs"].startswith("32 random inputs")
    assert {r["format"] for r in card["verification"]["results"]} == {"onnx"}
    x = tiny_data(5, seed=3)[0]
    np.testing.assert_allclose(
        OnnxPredictor(tmp_path / "single").predict(x)["logits"],
        exported["model"].predict(x, verbose=0),
        atol=TOLERANCE,
    )


def test_the_export_directory_follows_the_umask(exported, tmp_path):
    # 0o027 tells the umask apart from mkdtemp's fixed 0o700 and from the common 0o022.
    previous = os.umask(0o027)
    try:
        export_ensemble(exported["model"], tmp_path / "shared", formats=("saved_model", "onnx"))
    finally:
        os.umask(previous)
    out_dir = tmp_path / "shared"
    assert stat.S_IMODE(os.stat(out_dir).st_mode) == 0o750
    assert stat.S_IMODE(os.stat(out_dir / "saved_model").st_mode) == 0o750
    for name in ("model.onnx", "model_card.json"):
        assert stat.S_IMODE(os.stat(out_dir / name).st_mode) == 0o640


def test_refuses_a_non_empty_out_dir_and_keeps_its_files(exported, tmp_path):
    out_dir = tmp_path / "taken"
    out_dir.mkdir()
    (out_dir / "mine.txt").write_text("keep me")
    with pytest.raises(ValueError, match="exists and is not empty. Pass overwrite=True"):
        export_ensemble(exported["ensemble"], out_dir)
    assert os.listdir(out_dir) == ["mine.txt"]
    assert sorted(os.listdir(tmp_path)) == ["taken"]
    (tmp_path / "a_file").write_text("")
    with pytest.raises(ValueError, match="exists and is not a directory"):
        export_ensemble(exported["ensemble"], tmp_path / "a_file")


def test_overwrite_replaces_the_out_dir(exported, tmp_path):
    out_dir = tmp_path / "export"
    out_dir.mkdir()
    (out_dir / "stale.txt").write_text("old")
    export_ensemble(exported["ensemble"], out_dir, formats="onnx", overwrite=True)
    assert sorted(os.listdir(out_dir)) == ["model.onnx", "model_card.json"]
    assert os.listdir(tmp_path) == ["export"]


def test_empty_existing_out_dir_is_used(exported, tmp_path):
    (tmp_path / "empty").mkdir()
    export_ensemble(exported["ensemble"], tmp_path / "empty", formats="onnx")
    assert sorted(os.listdir(tmp_path / "empty")) == ["model.onnx", "model_card.json"]


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"formats": ()}, "`formats`, expected a non-empty subset"),
        ({"formats": ("tflite",)}, "`formats`, expected a non-empty subset"),
        ({"opset": 13}, "`opset`, expected an integer from 17"),
        ({"tolerance": 0}, "`tolerance`, expected a positive float"),
        ({"class_names": ["a", "b"]}, "`class_names`, expected 3 strings"),
        ({"verification_inputs": np.zeros((4, 9))}, r"non-empty array of shape \(None, 8\)"),
        ({"verification_inputs": np.zeros((0, 8))}, r"verification_inputs.shape=\(0, 8\)"),
        ({"members": [{"epoch": 1}]}, "`members`, expected a non-empty list"),
        ({"noise_report": 0.4}, "`noise_report`, expected a dict"),
        ({"preprocessing": 3}, "`preprocessing`, expected a string"),
    ],
)
def test_invalid_arguments_write_nothing(exported, tmp_path, kwargs, match):
    with pytest.raises(ValueError, match=match):
        export_ensemble(exported["ensemble"], tmp_path / "export", **kwargs)
    assert os.listdir(tmp_path) == []


def test_refuses_a_model_without_rank_2_logits(tmp_path):
    inputs = keras.Input((8,))
    model = keras.Model(inputs, keras.layers.Reshape((2, 4))(inputs))
    with pytest.raises(ValueError, match=r"logits \[N, C\].*shape \(2, 2, 4\)"):
        export_ensemble(model, tmp_path / "export")
    assert os.listdir(tmp_path) == []


class EagerOnlyIdentity(keras.layers.Layer):
    """Identity when run eagerly, +1 when traced: exports that differ from Keras."""

    def call(self, inputs):
        return inputs if tf.executing_eagerly() else inputs + 1.0


class BitcastIdentity(keras.layers.Layer):
    """An identity made of Bitcast ops, which tf2onnx cannot convert."""

    def call(self, inputs):
        return tf.bitcast(tf.bitcast(inputs, tf.int32), tf.float32)


@pytest.mark.parametrize(
    "layer, error, match",
    [
        (EagerOnlyIdentity, RuntimeError, "differs from the Keras model"),
        (BitcastIdentity, RuntimeError, "cannot be converted to ONNX.*Bitcast"),
    ],
)
def test_a_failed_export_leaves_the_existing_out_dir_untouched(tmp_path, layer, error, match):
    inputs = keras.Input((8,))
    model = keras.Model(inputs, layer()(keras.layers.Dense(3)(inputs)))
    out_dir = tmp_path / "export"
    out_dir.mkdir()
    (out_dir / "mine.txt").write_text("keep me")
    with pytest.raises(error, match=match):
        export_ensemble(model, out_dir, overwrite=True)
    assert os.listdir(out_dir) == ["mine.txt"]
    assert os.listdir(tmp_path) == ["export"]


def test_the_model_card_names_the_clid_that_chose_the_members():
    from clidmu_tf.export import export_lib

    members = [{"epoch": 3, "clid": 1.5}]
    assert "meta set" in export_lib._ensemble_section(members, "meta_clid")["selection"]
    held_out = export_lib._ensemble_section(members, "held_out_clid")["selection"]
    assert "held-out selection set" in held_out and "meta set" not in held_out
