"""The `clidmu-tf` command line as a command-line tool: arguments are read and checked before
TensorFlow loads, TensorFlow's own log messages are hidden unless asked for, and progress
written to a file is one line per epoch."""

import io
import json
import logging
import os
import subprocess
import sys
import time

import keras
import numpy as np
import pytest
from absl import logging as absl_logging

from clidmu_tf import CLIDMUModel, __version__, backbones
from clidmu_tf.cli import cli_utils, training_job
from clidmu_tf.cli.main import main

HEAVY_MODULES = ("tensorflow", "keras", "keras_tuner", "tf2onnx", "tensorflow_datasets")

# Runs `main` on each argument list in a fresh interpreter, then reports the exit statuses and
# which heavy packages got imported.
STARTUP_SCRIPT = """
import json
import sys

from clidmu_tf.cli.main import main

statuses = []
for argv in json.loads(sys.argv[1]):
    try:
        statuses.append(main(argv))
    except SystemExit as exit:
        statuses.append(exit.code)
heavy = sorted(name for name in json.loads(sys.argv[2]) if name in sys.modules)
print(json.dumps({"statuses": statuses, "heavy": heavy}))
"""


def test_help_version_and_argument_errors_do_not_import_tensorflow(tmp_path):
    not_empty = tmp_path / "not_empty"
    not_empty.mkdir()
    (not_empty / "notes.txt").write_text("mine")
    out = str(tmp_path / "run")
    missing = str(tmp_path / "missing")
    cases = [
        (["--help"], 0),
        (["--version"], 0),
        (["train", "--help"], 0),
        (["train", "--out", out, "--epoch", "3"], 2),
        (["train", "--out", out, "--noise", "flip:0.2"], 2),
        (["train", "--out", out, "--dataset", "no_such_dataset"], 2),
        (["train", "--out", out, "--augment", "no_such_recipe"], 2),
        (["train", "--out", str(not_empty)], 2),
        (["tune", "--out", out, "--class-map", "mnist"], 2),
        (["export", missing], 1),
        (["evaluate", missing, "--inputs", "x.npy"], 2),
        (["inspect", missing], 1),
        (["predict", missing, "x.npy"], 1),
        (["predict", str(not_empty), missing], 1),
        (["predict", str(not_empty), str(not_empty / "notes.txt")], 1),
    ]
    result = subprocess.run(
        [
            sys.executable, "-c", STARTUP_SCRIPT,
            json.dumps([argv for argv, _ in cases]), json.dumps(HEAVY_MODULES),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    outcome = json.loads(result.stdout.strip().splitlines()[-1])
    assert outcome["statuses"] == [status for _, status in cases], result.stderr
    assert outcome["heavy"] == []
    assert f"clidmu-tf {__version__}" in result.stdout


def test_help_answers_within_seconds():
    # Generous on a busy machine (importing TensorFlow alone takes about 5 s on an idle one);
    # the best of three runs, so that one slow start does not fail the suite.
    seconds = []
    for _ in range(3):
        start = time.perf_counter()
        result = subprocess.run(
            [sys.executable, "-m", "clidmu_tf", "--help"], capture_output=True, text=True
        )
        seconds.append(time.perf_counter() - start)
        assert result.returncode == 0 and "COMMAND" in result.stdout
        assert result.stderr == ""
    assert min(seconds) < 3.0, seconds


def test_predict_hides_tensorflow_log_messages_and_loads_a_clidmu_model(tmp_path):
    # A CLIDMUModel saved here and read back in a fresh process: its classes must register
    # with Keras although `import clidmu_tf` alone no longer imports them.
    model = CLIDMUModel(backbones.mlp((8,), 3, hidden_units=(16,)), seed=0)
    x = np.random.default_rng(0).normal(size=(5, 8)).astype("float32")
    model(x)
    model.save(tmp_path / "model.keras")
    np.save(tmp_path / "x.npy", x)
    # The test session sets TF_CPP_MIN_LOG_LEVEL itself (conftest.py); the command line must
    # be quiet without it.
    env = {key: value for key, value in os.environ.items() if key != "TF_CPP_MIN_LOG_LEVEL"}
    result = subprocess.run(
        [sys.executable, "-m", "clidmu_tf", "predict", str(tmp_path / "model.keras"),
         str(tmp_path / "x.npy")],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert len(result.stdout.strip().splitlines()) == 1 + len(x)
    # C++ log lines look like "I0000 00:00:1795971878.891437 345 cpu_feature_guard.cc:227] ...".
    assert result.stderr == ""


@pytest.fixture
def tensorflow_loggers():
    """Restores the levels of the loggers that `quiet_tensorflow` sets."""
    names = ("tensorflow", "absl", "tf2onnx")
    levels = {name: logging.getLogger(name).level for name in names}
    absl_verbosity = absl_logging.get_verbosity()
    yield names
    absl_logging.set_verbosity(absl_verbosity)
    for name, level in levels.items():
        logging.getLogger(name).setLevel(level)


def test_quiet_tensorflow_by_default_keeps_the_users_level(monkeypatch, tensorflow_loggers):
    monkeypatch.delenv("TF_CPP_MIN_LOG_LEVEL", raising=False)
    cli_utils.quiet_tensorflow(1)
    assert os.environ["TF_CPP_MIN_LOG_LEVEL"] == "2"
    assert all(logging.getLogger(name).level == logging.ERROR for name in tensorflow_loggers)
    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "0")
    cli_utils.quiet_tensorflow(0)
    assert os.environ["TF_CPP_MIN_LOG_LEVEL"] == "0"


def test_verbose_2_leaves_tensorflow_logging_alone(monkeypatch, tensorflow_loggers):
    monkeypatch.delenv("TF_CPP_MIN_LOG_LEVEL", raising=False)
    for name in tensorflow_loggers:
        logging.getLogger(name).setLevel(logging.NOTSET)
    cli_utils.quiet_tensorflow(2)
    assert "TF_CPP_MIN_LOG_LEVEL" not in os.environ
    assert all(logging.getLogger(name).level == logging.NOTSET for name in tensorflow_loggers)


class Terminal(io.StringIO):
    def isatty(self):
        return True


def test_fit_verbosity_is_one_line_per_epoch_off_a_terminal():
    assert cli_utils.fit_verbosity(1, stream=io.StringIO()) == 2
    assert cli_utils.fit_verbosity(1, stream=Terminal()) == 1
    assert cli_utils.fit_verbosity(0, stream=io.StringIO()) == 0
    assert cli_utils.fit_verbosity(2, stream=Terminal()) == 2


def test_keras_writes_no_carriage_returns_at_the_chosen_verbosity(capsys):
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    model.compile(optimizer="sgd", loss="mse")
    x, y = np.zeros((40, 4), "float32"), np.zeros((40, 2), "float32")
    # capsys's standard output is no terminal, as a log file is not.
    model.fit(x, y, batch_size=4, epochs=3, verbose=cli_utils.fit_verbosity(1))
    lines = capsys.readouterr().out
    assert "\r" not in lines and "\b" not in lines
    assert lines.count("Epoch ") == 3 and lines.count("10/10") == 3
    # What it replaces: the progress bar redraws itself, even into a file.
    model.fit(x, y, batch_size=4, epochs=1, verbose=1)
    assert "\r" in capsys.readouterr().out


def test_train_passes_the_chosen_verbosity_to_fit(tmp_path, monkeypatch, capsys):
    seen = {}

    class StoppedJob:
        def __init__(self, config, directory, overwrite=False, verbose=1, resume=False):
            seen["verbose"] = verbose
            raise RuntimeError("stopped before any work")

    monkeypatch.setattr(training_job, "TrainingJob", StoppedJob)
    assert main(["train", "--out", str(tmp_path / "run")]) == cli_utils.EXIT_FAILED
    assert "stopped before any work" in capsys.readouterr().err
    assert seen["verbose"] == 2
