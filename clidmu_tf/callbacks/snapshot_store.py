"""The on-disk store of a CLID snapshot ensemble, and the ensemble rebuilt from it.

A snapshot directory holds one `.weights.h5` file per kept epoch and a JSON manifest,
`clid_snapshots.json`, that names them and carries the backbone's config. The manifest alone
is enough to rebuild the ensemble in another process (`load_snapshot_ensemble`), which is what
exporting a finished run does.
"""

import json
import math
import os

import keras

from clidmu_tf.atomic_files import write_text_atomically

MANIFEST_NAME = "clid_snapshots.json"
CSV_NAME = "meta_clid.csv"
MANIFEST_FORMAT = "clidmu_tf.clid_snapshot_ensemble"
MANIFEST_VERSION = 1
WEIGHTS_SUFFIX = ".weights.h5"


def snapshot_file_name(epoch):
    return f"clid_snapshot_epoch_{epoch:04d}{WEIGHTS_SUFFIX}"


def write_manifest(directory, manifest):
    write_text_atomically(os.path.join(directory, MANIFEST_NAME), json.dumps(manifest, indent=2))


def write_clid_csv(directory, history, monitor="meta_clid"):
    """Rewrites the per-epoch CLID log, a view of the manifest's history; its second column is
    named after the CLID that ranked the epochs (`monitor`)."""
    rows = [f"epoch,{monitor}"] + [f"{entry['epoch']},{entry['clid']!r}" for entry in history]
    write_text_atomically(os.path.join(directory, CSV_NAME), "\n".join(rows) + "\n")


def read_snapshot_manifest(directory):
    """Reads the manifest of a snapshot directory written by `CLIDSnapshotEnsemble`.

    Args:
        directory: the callback's `directory`.

    Returns:
        A dict with `"snapshots"` (the kept epochs, lowest CLID first, each
        `{"epoch", "clid", "file"}`), `"history"` (every epoch's `{"epoch", "clid"}`),
        `"top_k"`, `"temperature"` and `"backbone"` (the serialised backbone).

    Raises:
        FileNotFoundError: if the directory holds no manifest, that is no snapshot was
            written yet.
        ValueError: if the manifest is not a valid snapshot manifest.
    """
    path = os.path.join(os.fspath(directory), MANIFEST_NAME)
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"No CLID snapshot exists in {os.fspath(directory)!r} (no {MANIFEST_NAME}): train "
            "with the CLIDSnapshotEnsemble callback for at least one epoch first."
        )
    try:
        with open(path, encoding="utf-8") as handle:
            manifest = json.load(handle)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f"The snapshot manifest {path!r} cannot be read: {error}") from error
    required = ("format", "version", "snapshots", "history", "backbone")
    if not isinstance(manifest, dict) or any(key not in manifest for key in required):
        raise ValueError(
            f"The snapshot manifest {path!r} is not a CLIDSnapshotEnsemble manifest: it needs "
            f"the keys {list(required)}."
        )
    if manifest["format"] != MANIFEST_FORMAT or manifest["version"] != MANIFEST_VERSION:
        raise ValueError(
            f"The snapshot manifest {path!r} has format {manifest['format']!r} version "
            f"{manifest['version']!r}; this library reads {MANIFEST_FORMAT!r} version "
            f"{MANIFEST_VERSION}."
        )
    return manifest


def load_member(directory, backbone_config, snapshot):
    """Rebuilds one member: the backbone from its config with the snapshot's weights."""
    path = os.path.join(directory, snapshot["file"])
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"The snapshot of epoch {snapshot['epoch']} is missing: {path!r} is listed in "
            f"{MANIFEST_NAME} but does not exist."
        )
    config = json.loads(json.dumps(backbone_config))
    # Members share one functional graph, so each needs its own name.
    config["config"]["name"] = f"snapshot_epoch_{snapshot['epoch']:04d}"
    member = keras.saving.deserialize_keras_object(config)
    try:
        member.load_weights(path)
    except Exception as error:
        raise ValueError(
            f"The snapshot of epoch {snapshot['epoch']} cannot be loaded from {path!r} (a "
            f"corrupt file, or weights of another model): {error}"
        ) from error
    return member


def load_snapshot_ensemble(directory, name="clid_snapshot_ensemble"):
    """Rebuilds the CLID snapshot ensemble from a snapshot directory alone.

    Each kept epoch becomes a member: the backbone rebuilt from the config in the manifest,
    with that epoch's weights. The ensemble is a functional Keras model whose output is the
    mean of the members' logits, `[N, C]`, the rule of the method (section 6 of the paper's
    method). It uses only built-in Keras layers, so it saves to `.keras` and exports like
    any functional model.

    Args:
        directory: a directory written by `CLIDSnapshotEnsemble`.
        name: name of the returned model.

    Returns:
        A `keras.Model` mapping the backbone's inputs (one tensor, or a dict or tuple of
        tensors for a multi-input backbone) to the mean logits.

    Raises:
        FileNotFoundError: if no snapshot was written yet, or a listed snapshot file is gone.
        ValueError: if the manifest or a snapshot file is corrupt, or the manifest lists no
            snapshot.

    Example:

    >>> ensemble = load_snapshot_ensemble("runs/demo/snapshots")  # doctest: +SKIP
    >>> ensemble.predict(x).shape  # doctest: +SKIP
    (N, num_classes)
    """
    directory = os.fspath(directory)
    manifest = read_snapshot_manifest(directory)
    if not manifest["snapshots"]:
        raise ValueError(
            f"The snapshot manifest in {directory!r} lists no snapshot: every epoch so far had "
            "a non-finite CLID."
        )
    members = [load_member(directory, manifest["backbone"], s) for s in manifest["snapshots"]]
    # The ensemble takes the backbone's inputs in their structure: one tensor, or a dict or
    # tuple of them for a multi-input backbone.
    if len(members[0].inputs) == 1:
        backbone_input = members[0].inputs[0]
        inputs = keras.Input(
            shape=tuple(backbone_input.shape[1:]), dtype=backbone_input.dtype, name="inputs"
        )
    else:
        inputs = keras.tree.map_structure(
            lambda tensor: keras.Input(
                shape=tuple(tensor.shape[1:]), dtype=tensor.dtype, name=tensor.name
            ),
            members[0].input,
        )
    logits = [member(inputs, training=False)["logits"] for member in members]
    mean_logits = keras.layers.Average(name="mean_logits")(logits)
    return keras.Model(inputs, mean_logits, name=name)


def rank_snapshots(snapshots, top_k):
    """The `top_k` entries with the lowest finite CLID; a tie goes to the earlier epoch."""
    finite = [entry for entry in snapshots if math.isfinite(entry["clid"])]
    return sorted(finite, key=lambda entry: (entry["clid"], entry["epoch"]))[:top_k]
