"""The `report.json` of a `clidmu-tf train` run, written so that no unfinished run looks done."""

import contextlib
import datetime
import importlib.metadata
import json
import math
import os
import platform
import time

import numpy as np

from clidmu_tf.atomic_files import write_text_atomically

STATUSES = ("running", "interrupted", "failed", "completed")
# Libraries whose versions decide whether a run can be reproduced.
VERSIONED_PACKAGES = (
    "clidmu-tf",
    "tensorflow",
    "tensorflow-cpu",
    "keras",
    "numpy",
    "tensorflow-datasets",
    "keras-tuner",
    "onnx",
    "tf2onnx",
    "onnxruntime",
    "scikit-learn",
)


class RunReport:
    """The record of one training run, kept in `report.partial.json` until the run ends.

    While the run is going, every `save()` rewrites `report.partial.json` (atomically), with
    `"status": "running"`. `finish("completed")` or `finish("interrupted")` writes
    `report.json` and removes the partial file; `finish("failed")` keeps only the partial
    file, marked failed with the error. So `report.json` exists only for a run that ended on
    its own or was stopped on purpose, and its `status` says which.

    Args:
        directory: the run directory.
        config: a JSON-serialisable dict of the run's settings.

    Example:

    >>> import tempfile
    >>> report = RunReport(tempfile.mkdtemp(), {"epochs": 1})
    >>> report["test_accuracy"] = 0.9
    >>> with report.timed("train"):
    ...     pass
    >>> path = report.finish("completed")
    >>> RunReport.load(report.directory)["status"]
    'completed'
    """

    FINAL_NAME = "report.json"
    PARTIAL_NAME = "report.partial.json"

    def __init__(self, directory, config):
        self.directory = os.fspath(directory)
        self._started = time.perf_counter()
        self.data = {
            "status": "running",
            "started_at": _now(),
            "finished_at": None,
            "config": dict(config),
            "versions": library_versions(),
            "timings": {},
        }

    def __getitem__(self, key):
        return self.data[key]

    def __setitem__(self, key, value):
        self.data[key] = value

    def __contains__(self, key):
        return key in self.data

    def get(self, key, default=None):
        return self.data.get(key, default)

    @contextlib.contextmanager
    def timed(self, stage):
        """Records the wall time of the `with` block under `timings[stage]`, in seconds.

        The time is recorded even when the block raises, so an interrupted stage still shows
        how long it ran.
        """
        start = time.perf_counter()
        try:
            yield
        finally:
            self.data["timings"][stage] = round(time.perf_counter() - start, 3)

    def save(self):
        """Rewrites `report.partial.json` with the current content; returns its path."""
        path = os.path.join(self.directory, self.PARTIAL_NAME)
        _write_json_atomically(path, self.data)
        return path

    def finish(self, status, error=None):
        """Ends the run with `status` and writes the final file; returns the path written.

        Args:
            status: `"completed"`, `"interrupted"` or `"failed"`.
            error: for `"failed"`, a description of what went wrong.

        Returns:
            The path of `report.json`, or of `report.partial.json` for a failed run.
        """
        if status not in STATUSES[1:]:
            raise ValueError(
                "Received an invalid value for `status`, expected one of "
                f"{list(STATUSES[1:])}. Received: status={status!r}"
            )
        self.data["status"] = status
        self.data["finished_at"] = _now()
        self.data["timings"]["total"] = round(time.perf_counter() - self._started, 3)
        if error is not None:
            self.data["error"] = error
        if status == "failed":
            return self.save()
        path = os.path.join(self.directory, self.FINAL_NAME)
        _write_json_atomically(path, self.data)
        partial = os.path.join(self.directory, self.PARTIAL_NAME)
        if os.path.exists(partial):
            os.remove(partial)
        return path

    @classmethod
    def continued(cls, directory):
        """The report of an unfinished run in `directory`, to continue it (`train --resume`).

        Returns:
            A `RunReport` holding the partial report's content, with `"status": "running"`
            again; its timings keep counting from now.

        Raises:
            FileNotFoundError: when the directory holds no `report.partial.json`.
            ValueError: when the file is not valid JSON.
        """
        report = cls(directory, {})
        path = os.path.join(report.directory, cls.PARTIAL_NAME)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"{directory!r} holds no unfinished run ({cls.PARTIAL_NAME}).")
        report.data = _read_json(path)
        report.data.update(status="running", finished_at=None)
        report.data.pop("error", None)
        return report

    @classmethod
    def load(cls, directory, allow_unfinished=False):
        """Reads the `report.json` of a run directory.

        Args:
            directory: the run directory.
            allow_unfinished: whether to return the `report.partial.json` of a run that did
                not finish (killed, or failed) instead of raising; its `"status"` says so.

        Returns:
            The report as a dict.

        Raises:
            FileNotFoundError: when the directory holds no `report.json` (and, with
                `allow_unfinished`, no partial report either); the message says whether the
                run is still going or failed.
            ValueError: when the report is not valid JSON (the message names the file).
        """
        directory = os.fspath(directory)
        path = os.path.join(directory, cls.FINAL_NAME)
        if os.path.isfile(path):
            return _read_json(path)
        partial = os.path.join(directory, cls.PARTIAL_NAME)
        if os.path.isfile(partial):
            data = _read_json(partial)
            if allow_unfinished:
                return data
            raise FileNotFoundError(
                f"The run in {directory!r} did not finish (status "
                f"{data.get('status', 'unknown')!r} in {cls.PARTIAL_NAME}); it has no "
                f"{cls.FINAL_NAME}. Continue it with the same `clidmu-tf train` command and "
                "--resume, or export the snapshots it kept with `clidmu-tf export`."
            )
        raise FileNotFoundError(
            f"{directory!r} is not a clidmu-tf run directory: it holds no {cls.FINAL_NAME}. "
            "Create one with `clidmu-tf train --out DIR`."
        )


def _read_json(path):
    try:
        with open(path, encoding="utf-8") as handle:
            data = json.load(handle)
    except (ValueError, UnicodeDecodeError) as error:
        raise ValueError(
            f"The run report {path!r} is corrupt (not valid JSON: {error}). Train the run "
            "again, or restore the file."
        ) from None
    if not isinstance(data, dict) or "config" not in data:
        raise ValueError(
            f"The run report {path!r} is corrupt: expected a JSON object with a 'config' entry."
        )
    return data


def library_versions():
    """The installed versions of the libraries a run depends on, plus Python's."""
    versions = {"python": platform.python_version()}
    for package in VERSIONED_PACKAGES:
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            continue
    return versions


def _now():
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def _jsonable(value):
    """`value` as plain JSON: NumPy values become Python ones, NaN and infinities None (a
    diverged loss must not make the report unreadable to strict JSON parsers)."""
    if isinstance(value, dict):
        return {key: _jsonable(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(item) for item in value]
    if isinstance(value, np.ndarray):
        return _jsonable(value.tolist())
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _write_json_atomically(path, data):
    """Writes `data` as strict JSON, so readers never see a half-written report."""
    write_text_atomically(path, json.dumps(_jsonable(data), indent=2, allow_nan=False) + "\n")
