"""Bad inputs given to the `clidmu-tf` command line, and runs that must survive a crash.

Each row of the table is one bad input: the command, the exit status it must end with and
the words its message must contain (and, for `train`, that no run directory is left behind).
The runs below the table check what happens to the run directory: the lock, `--overwrite`,
failures, divergence, and a run killed with SIGKILL and continued with `--resume`.
"""

import json
import os
import signal
import subprocess
import sys
import time

import keras
import numpy as np
import pytest

from clidmu_tf.cli import cli_utils
from clidmu_tf.cli.main import main
from clidmu_tf.cli.run_directory import RunDirectory
from clidmu_tf.cli.run_report import RunReport

USAGE, FAILED = cli_utils.EXIT_USAGE, cli_utils.EXIT_FAILED
# The smallest run that trains: 150 digits, an MLP, one epoch, no baseline, no export.
QUICK = [
    "--limit-train", "150", "--backbone", "mlp", "--epochs", "1", "--batch-size", "50",
    "--baseline", "none", "--export-formats", "none", "--verbose", "0",
]  # fmt: skip


def run_cli(capsys, argv):
    try:
        status = main(argv)
    except SystemExit as exit:
        status = exit.code
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def _png(path, pixels):
    from PIL import Image

    Image.fromarray(pixels).save(path)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """The bad (and a few good) input files of the table, written once."""
    root = tmp_path_factory.mktemp("bad_inputs")
    rng = np.random.default_rng(0)
    x = rng.random((30, 4)).astype("float32")
    y = np.arange(30) % 3

    def save(name, **arrays):
        np.savez(root / name, **arrays)

    save("onehot.npz", x=x, y=np.eye(3)[y])
    save("stray99.npz", x=x, y=np.where(np.arange(30) == 7, 99, y))
    save("string_labels.npz", x=x, y=np.array(["cat", "dog", "eel"])[y])
    x_nan = x.copy()
    x_nan[[3, 5], 1] = np.nan
    save("nan.npz", x=x_nan, y=y)
    x_inf = x.copy()
    x_inf[4, 2] = np.inf
    save("inf.npz", x=x_inf, y=y)
    (root / "not_an_archive.npz").write_text("x,y\n1,2\n")
    np.save(root / "inputs.npy", x)
    np.save(root / "inputs_nan.npy", x_nan)
    np.save(root / "labels_float.npy", y + 0.5)
    np.save(root / "labels_onehot.npy", np.eye(3)[y])
    np.save(root / "labels_short.npy", y[:20])
    np.save(root / "labels_range.npy", np.where(np.arange(30) == 2, 5, y))

    # Image folders: one with an empty class sub-folder, one holding a truncated PNG.
    for name in ("a", "b"):
        (root / "empty_class" / name).mkdir(parents=True)
    for index in range(3):
        _png(root / "empty_class" / "a" / f"{index}.png", np.full((8, 8), 40 * index, np.uint8))
    (root / "truncated").mkdir()
    _png(root / "truncated" / "good.png", np.zeros((8, 8), np.uint8))
    _png(root / "whole.png", rng.integers(0, 255, (8, 8), dtype=np.uint8))
    data = (root / "whole.png").read_bytes()
    (root / "truncated" / "cut.png").write_bytes(data[: len(data) // 2])
    (root / "cut.png").write_bytes(data[: len(data) // 2])

    # Small Keras classifiers to point predict and evaluate at.
    keras.utils.set_random_seed(0)
    vector_model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
    vector_model.save(root / "vector.keras")
    # A bias, so that the class depends on the inputs' scale (uint8 or divided by 255).
    image_model = keras.Sequential(
        [
            keras.Input((8, 8, 1)),
            keras.layers.Flatten(),
            keras.layers.Dense(3, bias_initializer=keras.initializers.RandomNormal(stddev=1.0)),
        ]
    )
    image_model.save(root / "image.keras")

    # A run directory whose report.json is corrupt.
    (root / "corrupt_run").mkdir()
    (root / "corrupt_run" / RunReport.FINAL_NAME).write_text('{"status": "completed", ')
    return root


def train(*argv):
    return ["train", "--out", "{out}", *QUICK, *argv]


# (argv, expected exit status, words the error message must contain). `{f}` is the folder
# of the `files` fixture, `{out}` a fresh --out that must not exist afterwards.
CASES = {
    # A1: labels that are not integer class ids of shape [N].
    "train one-hot labels": (
        train("--dataset", "{f}/onehot.npz"), FAILED,
        ["onehot.npz", "integer class ids of shape [N]", "one-hot"],
    ),
    "tune one-hot labels": (
        ["tune", "--out", "{out}", "--dataset", "{f}/onehot.npz", "--max-trials", "1"], FAILED,
        ["onehot.npz", "integer class ids of shape [N]"],
    ),
    "evaluate one-hot --labels": (
        ["evaluate", "{f}/vector.keras", "--inputs", "{f}/inputs.npy",
         "--labels", "{f}/labels_onehot.npy"], FAILED,
        ["--labels", "integer class ids of shape [N]", "(30, 3)"],
    ),
    # A2: a stray label, an empty class folder.
    "train stray label 99": (
        train("--dataset", "{f}/stray99.npz"), FAILED, ["stray99.npz", "99", "without any sample"],
    ),
    "tune stray label 99": (
        ["tune", "--out", "{out}", "--dataset", "{f}/stray99.npz", "--max-trials", "1"], FAILED,
        ["stray99.npz", "99"],
    ),
    "train empty class folder": (
        train("--dataset", "{f}/empty_class"), FAILED, ["empty_class/b", "hold no images"],
    ),
    # A3: NaN or inf in x.
    "train NaN in x": (
        train("--dataset", "{f}/nan.npz"), FAILED, ["nan.npz", "2 NaN or inf", "x[3, 1]"],
    ),
    "train inf in x": (
        train("--dataset", "{f}/inf.npz"), FAILED, ["inf.npz", "1 NaN or inf", "x[4, 2]"],
    ),
    "evaluate NaN in --inputs": (
        ["evaluate", "{f}/vector.keras", "--inputs", "{f}/inputs_nan.npy",
         "--labels", "{f}/labels_short.npy"], FAILED, ["inputs_nan.npy", "2 NaN or inf"],
    ),
    "predict NaN in input": (
        ["predict", "{f}/vector.keras", "{f}/nan.npz"], FAILED, ["nan.npz", "NaN or inf"],
    ),
    # A4: string labels, a file that is not an archive, fractional labels, wrong lengths.
    "train string labels": (
        train("--dataset", "{f}/string_labels.npz"), FAILED,
        ["string_labels.npz", "integer class ids", "<U3"],
    ),
    "train not an archive": (
        train("--dataset", "{f}/not_an_archive.npz"), FAILED,
        ["not_an_archive.npz", "expected a NumPy .npz archive"],
    ),
    "predict not an archive": (
        ["predict", "{f}/vector.keras", "{f}/not_an_archive.npz"], FAILED,
        ["not_an_archive.npz", ".npz archive"],
    ),
    "evaluate float --labels": (
        ["evaluate", "{f}/vector.keras", "--inputs", "{f}/inputs.npy",
         "--labels", "{f}/labels_float.npy"], FAILED, ["--labels", "integer class ids", "0.5"],
    ),
    "evaluate --labels of another length": (
        ["evaluate", "{f}/vector.keras", "--inputs", "{f}/inputs.npy",
         "--labels", "{f}/labels_short.npy"], FAILED, ["--labels", "one per input", "N=30"],
    ),
    "evaluate --labels out of range": (
        ["evaluate", "{f}/vector.keras", "--inputs", "{f}/inputs.npy",
         "--labels", "{f}/labels_range.npy"], FAILED, ["--labels", "[0, 3)", "5"],
    ),
    # A5: every numeric option finite.
    "--temperature inf": (train("--temperature", "inf"), USAGE, ["--temperature", "finite"]),
    "--temperature nan": (train("--temperature", "nan"), USAGE, ["--temperature", "finite"]),
    "--learning-rate inf": (train("--learning-rate", "inf"), USAGE, ["--learning-rate", "inf"]),
    "--learning-rate nan": (train("--learning-rate", "nan"), USAGE, ["--learning-rate", "nan"]),
    "--meta-learning-rate inf": (
        train("--meta-learning-rate", "inf"), USAGE, ["--meta-learning-rate", "finite"],
    ),
    "--noise rate nan": (train("--noise", "symmetric:nan"), USAGE, ["--noise", "[0, 1]"]),
    "tune --validation-fraction inf": (
        ["tune", "--out", "{out}", "--validation-fraction", "inf"], USAGE,
        ["--validation-fraction", "(0, 1)"],
    ),
    # A10, A11: unreadable images and reports name the file.
    "predict truncated PNG": (
        ["predict", "{f}/image.keras", "{f}/cut.png"], FAILED, ["cut.png", "Could not read"],
    ),
    "predict folder with a truncated PNG": (
        ["predict", "{f}/image.keras", "{f}/truncated"], FAILED, ["truncated/cut.png"],
    ),
    "inspect corrupt report.json": (
        ["inspect", "{f}/corrupt_run"], FAILED, ["corrupt_run/report.json", "not valid JSON"],
    ),
    # B14: errors found after loading leave no directory and use the command line's words.
    "--batch-size 1": (train("--batch-size", "1"), USAGE, ["--batch-size=1", "at least 2"]),
    "--meta-batch-size 1": (
        train("--meta-batch-size", "1"), USAGE, ["--meta-batch-size=1", "at least 2"],
    ),
    "--meta-size too large": (
        train("--meta-size", "5000"), FAILED, ["`--meta-size`", "--meta-size=5000"],
    ),
    "--limit-train too small for a meta set": (
        train("--limit-train", "12", "--meta-size", "1"), FAILED, ["--limit-train", "at least 2"],
    ),
    "--selection-size with the paper's meta-set rule": (
        train("--snapshot-selection", "meta-set", "--selection-size", "10"), USAGE,
        ["--selection-size=10", "--snapshot-selection='meta-set'"],
    ),
    "--selection-size too large": (
        train("--snapshot-selection", "held-out", "--selection-size", "149"), FAILED,
        ["`--selection-size`", "--selection-size=149"],
    ),
    "--selection-size 1": (
        train("--snapshot-selection", "held-out", "--selection-size", "1"), FAILED,
        ["--selection-size=1", "at least 2"],
    ),
    "held-out selection on too little data": (
        train("--snapshot-selection", "held-out", "--limit-train", "15"), FAILED,
        ["--snapshot-selection='held-out'", "at least 20", "--limit-train=15"],
    ),
    "--snapshot-selection unknown": (
        train("--snapshot-selection", "best"), USAGE, ["held-out", "meta-set"],
    ),
    "asymmetric noise without --class-map": (
        train("--noise", "asymmetric:0.4"), FAILED, ["--class-map"],
    ),
    "--resume with nothing to resume": (train("--resume"), USAGE, ["no unfinished run"]),
    "--virtual-step head with --method ce": (
        train("--method", "ce", "--virtual-step", "head"), USAGE,
        ["--virtual-step=head", "--method=ce", "no"],
    ),
    "tune --virtual-step head with --method ce": (
        ["tune", "--out", "{out}", "--method", "ce", "--virtual-step", "head"], USAGE,
        ["--virtual-step=head", "--method=ce"],
    ),
    "--weight-normalization with --method ce": (
        train("--method", "ce", "--weight-normalization", "class"), USAGE,
        ["--weight-normalization=class", "--method=ce", "no"],
    ),
    "--weight-normalization with --method clid-vri": (
        train("--method", "clid-vri", "--weight-normalization", "batch"), USAGE,
        ["--weight-normalization=batch", "--method=clid-vri"],
    ),
    "tune --weight-normalization with --method clid-vri": (
        ["tune", "--out", "{out}", "--method", "clid-vri", "--weight-normalization", "class"],
        USAGE, ["--weight-normalization=class", "--method=clid-vri"],
    ),
    "--weight-normalization unknown": (
        train("--weight-normalization", "sample"), USAGE, ["batch", "class", "'sample'"],
    ),
    "--resume with --overwrite": (
        train("--resume", "--overwrite"), USAGE, ["--overwrite", "--resume", "not both"],
    ),
}


@pytest.mark.parametrize("argv, status, words", list(CASES.values()), ids=list(CASES))
def test_a_bad_input_is_refused_with_its_name(files, tmp_path, capsys, argv, status, words):
    out = tmp_path / "out"
    argv = [arg.format(f=files, out=out) for arg in argv]
    code, _, err = run_cli(capsys, argv)
    assert code == status, err
    assert "Traceback" not in err
    for word in words:
        assert word.format(f=files) in err, f"{word!r} not in {err!r}"
    # Python's spellings of the library's arguments never reach the command line's user.
    for python_name in ("meta_size=", "overwrite=True", "image_size=(h, w)", "batch_size="):
        assert python_name not in err
    assert not out.exists(), "a refused run must leave no directory behind"


@pytest.mark.parametrize(
    "tf_config, words",
    [("{bad", ["TF_CONFIG", "valid JSON"]), ('["worker"]', ["TF_CONFIG", "'cluster'"])],
)
def test_a_bad_tf_config_is_refused_before_anything_is_written(
    tmp_path, capsys, monkeypatch, tf_config, words
):
    monkeypatch.setenv("TF_CONFIG", tf_config)
    out = tmp_path / "out"
    code, _, err = run_cli(capsys, ["train", "--out", str(out), "--distribute", "multiworker"])
    assert code == USAGE
    assert all(word in err for word in words), err
    assert not out.exists()


def test_tune_refuses_to_resume_a_search_with_other_options(tmp_path, capsys):
    out = tmp_path / "search_dir"
    (out / "search").mkdir(parents=True)
    settings = {"dataset": "digits", "noise": "symmetric:0.2", "backbone": ["mlp"]}
    (out / "search_settings.json").write_text(json.dumps(settings))
    code, _, err = run_cli(
        capsys,
        ["tune", "--out", str(out), "--noise", "symmetric:0.4", "--backbone", "small_cnn",
         "--labeled-fraction", "0.5"],
    )  # fmt: skip
    assert code == USAGE
    for word in ("--noise 'symmetric:0.2' then, 'symmetric:0.4' now", "--backbone", "--overwrite",
                 "--labeled-fraction None then, 0.5 now"):  # fmt: skip
        assert word in err, err


def test_tune_compares_the_weight_normalization_a_search_came_to(tmp_path, capsys):
    from clidmu_tf.cli.main import build_parser
    from clidmu_tf.cli.tune import SEARCH_SETTINGS

    out = tmp_path / "search_dir"
    (out / "search").mkdir(parents=True)
    args = build_parser().parse_args(["tune", "--out", str(out)])
    settings = {key: getattr(args, key) for key in SEARCH_SETTINGS}
    # A search started before the option existed normalised Meta-Weight-Net's weights over
    # the batch; the default has become "class".
    del settings["weight_normalization"]
    (out / "search_settings.json").write_text(json.dumps(settings))
    code, _, err = run_cli(capsys, ["tune", "--out", str(out)])
    assert code == USAGE
    assert "--weight-normalization 'batch' then, 'class' now" in err, err
    # A search recorded with the default it came to is refused the other value.
    settings["weight_normalization"] = "class"
    (out / "search_settings.json").write_text(json.dumps(settings))
    code, _, err = run_cli(capsys, ["tune", "--out", str(out), "--weight-normalization", "batch"])
    assert code == USAGE
    assert "--weight-normalization 'class' then, 'batch' now" in err, err


def test_evaluate_scales_uint8_inputs_as_predict_does(files, tmp_path, capsys):
    images = np.random.default_rng(1).integers(0, 256, (40, 8, 8, 1), dtype=np.uint8)
    np.save(tmp_path / "images.npy", images)
    code, csv_text, _ = run_cli(
        capsys, ["predict", str(files / "image.keras"), str(tmp_path / "images.npy")]
    )
    assert code == 0
    predicted = [int(line.split(",")[1]) for line in csv_text.strip().splitlines()[1:]]
    np.save(tmp_path / "labels.npy", np.array(predicted))
    code, report, _ = run_cli(
        capsys,
        ["evaluate", str(files / "image.keras"), "--inputs", str(tmp_path / "images.npy"),
         "--labels", str(tmp_path / "labels.npy")],
    )  # fmt: skip
    assert code == 0
    # predict's own classes score 1.0 only if evaluate reads the images the same way.
    assert json.loads(report)["accuracy"] == 1.0
    unscaled = keras.saving.load_model(files / "image.keras").predict(
        images.astype("float32"), verbose=0
    )
    assert np.mean(unscaled.argmax(axis=1) == np.array(predicted)) < 1.0
    # One .npz holding both: --inputs reads its x, --labels its y.
    np.savez(tmp_path / "both.npz", x=images, y=np.array(predicted))
    code, report, err = run_cli(
        capsys,
        ["evaluate", str(files / "image.keras"), "--inputs", str(tmp_path / "both.npz"),
         "--labels", str(tmp_path / "both.npz")],
    )  # fmt: skip
    assert code == 0, err
    assert json.loads(report)["accuracy"] == 1.0


# B13: the lock on --out.

# Holds --out's lock as a `train` process does (filelock, its pid in the file), without
# importing TensorFlow, so that it starts in a moment.
HOLD_LOCK = """
import os, sys, time, filelock
os.makedirs(sys.argv[1], exist_ok=True)
path = os.path.join(sys.argv[1], sys.argv[2])
with filelock.FileLock(path, timeout=0):
    with open(path, "w") as handle:
        handle.write(f"{os.getpid()}\\n")
    print("locked", flush=True)
    time.sleep(120)
"""


def test_a_second_train_on_the_same_out_is_refused_while_the_first_runs(tmp_path, capsys):
    out = tmp_path / "run"
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_LOCK, str(out), RunDirectory.LOCK],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        code, _, err = run_cli(capsys, ["train", "--out", str(out), "--overwrite", *QUICK])
        assert code == FAILED
        assert f"pid {holder.pid}" in err and "is writing to" in err
        # The other run's report is not this one's failure: no advice to --resume it.
        assert "--resume" not in err
    finally:
        holder.kill()
        holder.wait()
    assert os.listdir(out) == [RunDirectory.LOCK]


def test_the_lock_of_a_killed_process_is_detected_as_stale(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    run = RunDirectory(tmp_path / "run")
    os.makedirs(run.path)
    # What a killed run leaves: the lock file with its pid, held by nobody.
    with open(run.join(RunDirectory.LOCK), "w") as handle:
        handle.write(f"{dead.pid}\n")
    with run.lock():
        assert run.stale_lock_pid == dead.pid
        with open(run.join(RunDirectory.LOCK)) as handle:
            assert int(handle.read()) == os.getpid()
    assert not os.path.exists(run.join(RunDirectory.LOCK))


# B12, B14: --overwrite and failures.


def _fake_finished_run(path):
    os.makedirs(path / "snapshots")
    (path / RunReport.FINAL_NAME).write_text(json.dumps({"status": "completed", "config": {}}))
    (path / "model.keras").write_text("the earlier model")
    (path / "notes.txt").write_text("my notes")


def test_overwrite_checks_the_new_data_before_touching_the_earlier_run(files, tmp_path, capsys):
    out = tmp_path / "run"
    _fake_finished_run(out)
    code, _, err = run_cli(
        capsys,
        ["train", "--out", str(out), "--overwrite", "--dataset", str(files / "onehot.npz"), *QUICK],
    )
    assert code == FAILED and "one-hot" in err
    assert (out / "model.keras").read_text() == "the earlier model"
    assert sorted(os.listdir(out)) == ["model.keras", "notes.txt", "report.json", "snapshots"]


def test_a_run_that_fails_while_training_gives_the_earlier_run_back(tmp_path, capsys, monkeypatch):
    from clidmu_tf.cli import training_job

    def fail(self):
        raise RuntimeError("the accelerator caught fire")

    monkeypatch.setattr(training_job.TrainingJob, "_train_method", fail)
    out = tmp_path / "run"
    _fake_finished_run(out)
    code, _, err = run_cli(capsys, ["train", "--out", str(out), "--overwrite", *QUICK])
    assert code == FAILED and "caught fire" in err
    assert (out / "model.keras").read_text() == "the earlier model"
    assert sorted(os.listdir(out)) == ["model.keras", "notes.txt", "report.json", "snapshots"]


def test_overwrite_replaces_only_the_files_a_run_writes(tmp_path, capsys):
    out = tmp_path / "run"
    _fake_finished_run(out)
    (out / "figure.png").write_bytes(b"mine")
    code, _, err = run_cli(capsys, ["train", "--out", str(out), "--overwrite", *QUICK])
    assert code == 0, err
    assert (out / "notes.txt").read_text() == "my notes"
    assert (out / "figure.png").read_bytes() == b"mine"
    assert RunReport.load(out)["status"] == "completed"
    assert not (out / RunDirectory.REPLACED).exists() and not (out / RunDirectory.RESUME).exists()


def test_a_diverging_run_stops_at_once_and_leaves_no_model(tmp_path, capsys):
    out = tmp_path / "run"
    argv = ["train", "--out", str(out), *QUICK, "--epochs", "3", "--learning-rate", "1e6",
            "--lr-schedule", "constant"]  # fmt: skip
    code, _, err = run_cli(capsys, argv)
    assert code == FAILED
    assert "diverged" in err and "--learning-rate 1000000.0" in err and "epoch 1" in err
    partial = json.loads((out / RunReport.PARTIAL_NAME).read_text())
    assert partial["status"] == "failed" and partial["method"]["epochs"] == []
    # Nothing that predict would serve as a result.
    assert not (out / "model.keras").exists() and not (out / RunReport.FINAL_NAME).exists()
    code, _, err = run_cli(capsys, ["predict", str(out), str(out / "training_labels.npz")])
    assert code == FAILED and "did not finish" in err


# B15: SIGKILL, then --resume.

RESUMABLE = [
    "--limit-train", "150", "--backbone", "mlp", "--epochs", "4", "--batch-size", "50",
    "--top-k", "3", "--baseline", "none", "--export-formats", "none", "--verbose", "0",
]  # fmt: skip


def _kill_after_epoch(out, phase, epoch, process):
    metadata = out / RunDirectory.RESUME / phase / "training_metadata.json"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        assert process.poll() is None, "the run ended before it could be killed"
        try:
            if json.loads(metadata.read_text())["epoch"] >= epoch:
                break
        except (OSError, ValueError, KeyError):
            pass
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()


@pytest.mark.slow  # two trainings and a killed process, over a minute
def test_a_killed_run_resumes_to_the_result_of_an_uninterrupted_one(tmp_path, capsys):
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    env = {**os.environ, "TF_NUM_INTRAOP_THREADS": "1", "TF_NUM_INTEROP_THREADS": "1"}

    def start(out):
        return subprocess.Popen(
            [sys.executable, "-m", "clidmu_tf", "train", "--out", str(out), *RESUMABLE],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip

    uninterrupted, process = start(whole), start(killed)
    _kill_after_epoch(killed, "method", 2, process)
    assert RunReport.load(killed, allow_unfinished=True)["status"] == "running"
    # The killed run's snapshots export, with a warning.
    code, _, err = run_cli(
        capsys, ["export", str(killed), "--out", str(tmp_path / "export"), "--formats", "onnx"]
    )
    assert code == 0 and "did not finish" in err
    # Without --resume the directory is refused; with it the run ends as if never stopped.
    assert run_cli(capsys, ["train", "--out", str(killed), *RESUMABLE])[0] == USAGE
    code, _, err = run_cli(capsys, ["train", "--out", str(killed), *RESUMABLE, "--resume"])
    assert code == 0, err
    assert uninterrupted.wait() == 0, uninterrupted.stderr.read()
    expected, resumed = RunReport.load(whole), RunReport.load(killed)
    assert resumed["status"] == "completed"
    for report in (expected, resumed):
        report["epochs"] = [e["epoch"] for e in report["method"]["epochs"]]
        report["snapshot_epochs"] = [m["epoch"] for m in report["ensemble"]["members"]]
    assert resumed["epochs"] == expected["epochs"] == [1, 2, 3, 4]
    assert resumed["snapshot_epochs"] == expected["snapshot_epochs"]
    for key in ("test_accuracy", "ensemble_test_accuracy"):
        assert abs(resumed[key] - expected[key]) <= 0.005, key
    assert not (killed / RunDirectory.RESUME).exists()


def test_resume_refuses_other_options(tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    report = {"status": "running", "config": {"epochs": 4, "seed": 0}}
    (out / RunReport.PARTIAL_NAME).write_text(json.dumps(report))
    code, _, err = run_cli(capsys, ["train", "--out", str(out), *QUICK, "--resume"])
    assert code == FAILED
    assert "--epochs 4 then, 1 now" in err and "--overwrite" in err
    assert "The run failed" not in err


def _directory_state(path):
    """Every file under `path` with its bytes and modification time."""
    return {
        str(file.relative_to(path)): (file.read_bytes(), file.stat().st_mtime_ns)
        for file in sorted(path.rglob("*"))
        if file.is_file()
    }


def test_resume_compares_what_the_options_came_to_and_a_refusal_changes_nothing(
    tmp_path, capsys
):
    out = tmp_path / "run"
    # A run that fails in its first batch (diverged), leaving a partial report to resume.
    diverging = [*QUICK, "--learning-rate", "1e6", "--lr-schedule", "constant",
                 "--snapshot-selection", "held-out"]  # fmt: skip
    code, _, err = run_cli(capsys, ["train", "--out", str(out), *diverging])
    assert code == FAILED and "diverged" in err
    partial = RunReport.load(out, allow_unfinished=True)
    resolved = partial["resolved_options"]
    assert resolved["selection_size"] == partial["data"]["num_selection"] == 15
    # The defaults the first run resolved, now given explicitly: the same settings, so the
    # run is continued (and fails the same way), not refused.
    same = [
        "--selection-size", "15", "--augment", "none", "--meta-learning-rate", "0.001",
        "--meta-size", str(resolved["meta_size"]),
        "--meta-batch-size", str(resolved["meta_batch_size"]),
        "--labeled-fraction", "1", "--weight-normalization", "class",
    ]  # fmt: skip
    code, _, err = run_cli(capsys, ["train", "--out", str(out), *diverging, *same, "--resume"])
    assert code == FAILED and "diverged" in err and "differ" not in err, err
    # The failed resume says so in the report, with its own error.
    resumed = RunReport.load(out, allow_unfinished=True)
    assert resumed["status"] == "failed" and "diverged" in resumed["error"]["message"]
    # Other values are still refused, naming what each came to, and nothing changes.
    before = _directory_state(out)
    argv = ["train", "--out", str(out), *diverging, "--selection-size", "16", "--resume"]
    code, _, err = run_cli(capsys, argv)
    assert code == FAILED
    assert "--selection-size None (came to 15) then, 16 now" in err, err
    assert "The run failed" not in err
    assert _directory_state(out) == before
    # A run started before --weight-normalization existed normalised over the batch.
    partial = RunReport.load(out, allow_unfinished=True)
    del partial["resolved_options"]["weight_normalization"]
    (out / RunReport.PARTIAL_NAME).write_text(json.dumps(partial))
    code, _, err = run_cli(capsys, ["train", "--out", str(out), *diverging, "--resume"])
    assert code == FAILED
    assert "--weight-normalization None (came to 'batch') then, None (came to 'class') now" in err
    argv = ["train", "--out", str(out), *diverging, "--weight-normalization", "batch", "--resume"]
    code, _, err = run_cli(capsys, argv)
    assert code == FAILED and "diverged" in err and "differ" not in err, err
    # So did one whose report predates the resolved values (compared as given).
    partial = RunReport.load(out, allow_unfinished=True)
    del partial["resolved_options"], partial["config"]["weight_normalization"]
    (out / RunReport.PARTIAL_NAME).write_text(json.dumps(partial))
    code, _, err = run_cli(capsys, ["train", "--out", str(out), *diverging, "--resume"])
    assert code == FAILED and "--weight-normalization 'batch' then, None now" in err, err


def test_a_failed_resume_is_marked_failed_and_can_be_resumed_again(tmp_path, capsys, monkeypatch):
    from clidmu_tf.cli import training_job

    out = tmp_path / "run"
    _fake_finished_run(out)

    def fail(self):
        raise RuntimeError("the accelerator caught fire")

    # An --overwrite run killed while training leaves the earlier run set aside, and a
    # running report (simulated here by a run that fails after setting the earlier one aside).
    monkeypatch.setattr(training_job.TrainingJob, "_evaluate", fail)
    monkeypatch.setattr(training_job.TrainingJob, "_fail", lambda self, error: None)
    assert run_cli(capsys, ["train", "--out", str(out), "--overwrite", *QUICK])[0] == FAILED
    assert RunReport.load(out, allow_unfinished=True)["status"] == "running"
    assert (out / RunDirectory.REPLACED).is_dir()
    monkeypatch.undo()
    monkeypatch.setattr(training_job.TrainingJob, "_evaluate", fail)
    code, _, err = run_cli(capsys, ["train", "--out", str(out), *QUICK, "--resume"])
    assert code == FAILED and "caught fire" in err
    report = RunReport.load(out, allow_unfinished=True)
    assert report["status"] == "failed" and "caught fire" in report["error"]["message"]
    # What it continues from is kept: resumed once more, it ends the run.
    assert (out / RunDirectory.REPLACED).is_dir()
    monkeypatch.undo()
    code, _, err = run_cli(capsys, ["train", "--out", str(out), *QUICK, "--resume"])
    assert code == 0, err
    assert RunReport.load(out)["status"] == "completed"
    assert not (out / RunDirectory.REPLACED).exists()


def test_export_verifies_a_model_with_large_logits_at_its_own_precision(tmp_path):
    from clidmu_tf.export import export_ensemble

    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
    kernel, bias = model.layers[0].get_weights()
    # Logits in the tens of thousands: float32 rounding alone differs by more than 1e-5.
    model.layers[0].set_weights([kernel * 3e4, bias])
    x = np.random.default_rng(0).random((64, 4)).astype("float32")
    card = export_ensemble(model, tmp_path / "export", formats=("onnx",), verification_inputs=x)
    results = card["verification"]["results"]
    assert all(r["predicted_class_mismatches"] == 0 for r in results)
    assert all(r["logit_tolerance"] > 1e-2 for r in results)


@pytest.mark.parametrize(
    "library_message, words, absent",
    [
        ("Pass `image_size=(height, width)` to resize them.", ["`--image-size HxW`"], ["("]),
        ("Received: meta_size=5000; pass overwrite=True", ["--meta-size=5000", "--overwrite"],
         ["True"]),
        ("prepare it (or `tfds.builder('mnist', data_dir=...).download_and_prepare()`).",
         ["data_dir=..."], ["--data-dir"]),
        ("if the empty classes are intended, pass num_classes=100 (and class_names) "
         "explicitly.", ["class_names array of 100 names"], ["num_classes="]),
    ],
)
def test_library_messages_use_the_command_line_spelling(library_message, words, absent):
    message = cli_utils.cli_spelling(library_message)
    assert all(word in message for word in words), message
    assert not any(word in message for word in absent), message


@pytest.mark.parametrize(
    "kept, words",
    [
        ([{"epoch": 1}, {"epoch": 2}], ["epochs 1, 2 are kept", "clidmu-tf export"]),
        ([], ["no snapshot was kept"]),
    ],
)
def test_divergence_is_caught_at_an_epoch_end_by_a_label_free_signal(kept, words):
    from clidmu_tf.cli.divergence_guard import DivergenceGuard

    guard = DivergenceGuard(1000.0, "method", kept_snapshots=lambda: kept)
    guard.on_epoch_end(0, {"loss": 1e30, "clid": 4.2, "val_clid": 4.0})  # finite: goes on
    with pytest.raises(RuntimeError) as error:
        guard.on_epoch_end(1, {"loss": 7e34, "clid": float("nan"), "val_loss": 1.0})
    message = str(error.value)
    assert "diverged" in message and "clid" in message and "epoch 2" in message
    assert "--learning-rate 1000.0" in message
    assert all(word in message for word in words), message
