"""`clidmu-tf train --distribute multiworker`: two worker processes on 127.0.0.1, and the
TF_CONFIG checks."""

import json
import os
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

from clidmu_tf.cli import cli_utils, cluster
from clidmu_tf.cli.run_report import RunReport
from tests.test_cli import MIRRORED_ON_TWO_CPUS, TINY, run_cli

# Loose enough for the order of the cross-worker sums, tight enough that a worker training on
# other data, another batch split or unsynchronised weights fails (those move the losses by
# more than 1e-2 after two epochs).
RELATIVE_TOLERANCE = 1e-3
# Each process takes about a minute on an idle two-core machine, several under load.
JOB_SECONDS = 540
# The job of the test: 200 digits, batches of 50, two epochs, no export (the export is
# a chief-only file copy, tested elsewhere).
JOB = ["train", "--baseline", "none", "--export-formats", "none", *TINY]


def free_loopback_ports(count):
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def quiet_environment(**extra):
    return {
        **os.environ,
        "TF_CPP_MIN_LOG_LEVEL": "2",
        "TF_NUM_INTRAOP_THREADS": "1",
        "TF_NUM_INTEROP_THREADS": "1",
        **extra,
    }


@pytest.mark.slow
def test_two_workers_on_loopback_match_one_process_with_the_same_global_batch(tmp_path):
    workers = [f"127.0.0.1:{port}" for port in free_loopback_ports(2)]
    outs = [tmp_path / "chief_run", tmp_path / "worker_run"]
    scratch = [tmp_path / "tmp0", tmp_path / "tmp1"]
    reference = tmp_path / "reference_run"
    log_paths = [tmp_path / name for name in ("worker0.log", "worker1.log", "reference.log")]
    processes = []
    try:
        for index in range(2):
            scratch[index].mkdir()
            tf_config = {"cluster": {"worker": workers}, "task": {"type": "worker", "index": index}}
            processes.append(
                subprocess.Popen(
                    [sys.executable, "-m", "clidmu_tf", *JOB, "--distribute", "multiworker",
                     "--out", str(outs[index])],
                    env=quiet_environment(
                        TF_CONFIG=json.dumps(tf_config), TMPDIR=str(scratch[index])
                    ),
                    stdout=log_paths[index].open("w"),
                    stderr=subprocess.STDOUT,
                )
            )  # fmt: skip
        # One process, two replicas over the same global batch of 50: the reference.
        processes.append(
            subprocess.Popen(
                [sys.executable, "-c", MIRRORED_ON_TWO_CPUS, *JOB, "--distribute", "mirrored",
                 "--out", str(reference)],
                env=quiet_environment(),
                stdout=log_paths[2].open("w"),
                stderr=subprocess.STDOUT,
            )
        )  # fmt: skip
        deadline = time.monotonic() + JOB_SECONDS
        for process in processes:
            process.wait(timeout=max(1.0, deadline - time.monotonic()))
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.wait()
    logs = [path.read_text() for path in log_paths]
    for process, log in zip(processes, logs):
        assert process.returncode == 0, log[-3000:]

    chief = RunReport.load(outs[0])
    assert chief["status"] == "completed"
    assert (chief["distribution"]["replicas"], chief["distribution"]["workers"]) == (2, 2)
    # Only the chief wrote a run directory; the other worker's copy was removed.
    assert not outs[1].exists()
    assert list(scratch[1].iterdir()) == []
    assert "not the chief" in logs[1]

    expected = RunReport.load(reference)
    assert expected["distribution"]["replicas"] == 2
    for got, want in zip(chief["method"]["epochs"], expected["method"]["epochs"], strict=True):
        for key in ("loss", "meta_loss", "clid", "test_loss", "meta_clid"):
            np.testing.assert_allclose(got[key], want[key], rtol=RELATIVE_TOLERANCE, err_msg=key)
    # One test sample more or less right at most, out of 359.
    assert abs(chief["test_accuracy"] - expected["test_accuracy"]) <= 1 / 359 + 1e-9
    assert chief["ensemble"]["members"] == expected["ensemble"]["members"] or all(
        abs(a["clid"] - b["clid"]) <= RELATIVE_TOLERANCE * abs(b["clid"])
        for a, b in zip(chief["ensemble"]["members"], expected["ensemble"]["members"])
    )


@pytest.mark.parametrize(
    "value, expected",
    [
        ('{"cluster": {"worker": ["127.0.0.1:1"]}', "JSON"),
        ("[1, 2]", "a JSON object"),
        ('{"task": {"type": "worker", "index": 0}}', "'cluster'"),
        ('{"cluster": {"worker": []}, "task": {"type": "worker", "index": 0}}', "non-empty"),
        ('{"cluster": {"worker": ["127.0.0.1:1"]}}', "'task'"),
        ('{"cluster": {"worker": ["127.0.0.1:1"]}, "task": {"type": "ps", "index": 0}}', "'task'"),
        (
            '{"cluster": {"worker": ["127.0.0.1:1", "127.0.0.1:2"]}, '
            '"task": {"type": "worker", "index": 2}}',
            "[0, 2)",
        ),
        (
            '{"cluster": {"worker": ["127.0.0.1:1"]}, "task": {"type": "worker", "index": "0"}}',
            "[0, 1)",
        ),
        # Values that passed the check, then failed late or waited for ever.
        ('{"cluster": {"worker": ["127.0.0.1:99999"]}, "task": {"type": "worker", "index": 0}}',
         "port 1-65535"),
        ('{"cluster": {"worker": ["127.0.0.1:7", "127.0.0.1:7"]}, "task": {"type": "worker", '
         '"index": 0}}', "an address of its own"),
        ('{"cluster": {"ps": ["127.0.0.1:8"], "worker": ["127.0.0.1:7"]}, "task": {"type": '
         '"worker", "index": 0}}', "not ['ps']"),
        ('{"cluster": {"chief": ["127.0.0.1:8", "127.0.0.1:9"], "worker": ["127.0.0.1:7"]}, '
         '"task": {"type": "worker", "index": 0}}', "at most one 'chief'"),
    ],
)
def test_a_malformed_tf_config_is_refused_naming_it(tmp_path, capsys, monkeypatch, value, expected):
    monkeypatch.setenv("TF_CONFIG", value)
    out = tmp_path / "run"
    status, _, err = run_cli(capsys, "train", "--out", str(out), "--distribute", "multiworker")
    assert status == cli_utils.EXIT_USAGE
    message = " ".join(err.split())
    assert "TF_CONFIG" in message and expected in message
    assert value[:30] in message
    assert not out.exists()


def test_the_chief_is_the_chief_task_else_worker_zero():
    def config(task_type, index, jobs=("worker",)):
        return {"cluster": {job: ["h:1", "h:2"] for job in jobs}, "task": {"type": task_type, "index": index}}

    assert cluster.is_chief(config("worker", 0))
    assert not cluster.is_chief(config("worker", 1))
    assert cluster.is_chief(config("chief", 0, jobs=("chief", "worker")))
    assert not cluster.is_chief(config("worker", 0, jobs=("chief", "worker")))


def test_a_huge_error_message_is_cut_on_the_terminal(tmp_path, capsys, monkeypatch):
    from clidmu_tf.cli import training_job

    def fail(self):
        raise ValueError("Attempt to convert a value (PerReplica:{" + "0.5, " * 10_000 + "})")

    monkeypatch.setattr(training_job.TrainingJob, "run", fail)
    status, _, err = run_cli(capsys, "train", "--out", str(tmp_path / "run"))
    assert status == cli_utils.EXIT_FAILED
    assert "Attempt to convert" in err and "more characters" in err
    assert len(err) < 3000
