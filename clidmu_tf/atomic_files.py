"""Writing files so that a crash leaves either the old file or the new one, never half of one.

Shared by the snapshot store (weights, manifest, CSV), the training dynamics recorder and
the run report.
"""

import os
import uuid

# Keras chooses the weights format by this double suffix, so it must survive the temp name.
KERAS_WEIGHTS_SUFFIX = ".weights.h5"


def temporary_path(path):
    """A unique sibling of `path` with the same suffix, for writing before `os.replace`.

    It lives in the same directory so that the final `os.replace` is a rename on one file
    system, which is atomic; the suffix is kept because Keras picks the weights format by it.
    """
    directory, name = os.path.split(path)
    suffix = KERAS_WEIGHTS_SUFFIX if name.endswith(KERAS_WEIGHTS_SUFFIX) else os.path.splitext(name)[1]
    stem = name[: len(name) - len(suffix)]
    return os.path.join(directory, f".{stem}.{uuid.uuid4().hex}.tmp{suffix}")


def sync_file(path):
    """Flushes a file written by another library to disk before it is renamed into place."""
    with open(path, "rb+") as handle:
        os.fsync(handle.fileno())


def write_text_atomically(path, text):
    """Writes `text` to `path` so that a crash leaves either the old or the new file."""
    write_bytes_atomically(path, text.encode("utf-8"))


def write_bytes_atomically(path, data):
    """Writes the bytes `data` to `path` so that a crash leaves either the old or the new file."""
    temporary = temporary_path(path)
    try:
        with open(temporary, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)


def save_weights_atomically(model, path):
    """Saves `model`'s weights to `path` through a temporary file and a rename."""
    temporary = temporary_path(path)
    try:
        model.save_weights(temporary)
        sync_file(temporary)
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)


def read_arrays(path):
    """The arrays of an `.npz` file, read whole into a dict (the file is closed after)."""
    import numpy as np

    with np.load(path) as arrays:
        return {key: arrays[key] for key in arrays.files}
