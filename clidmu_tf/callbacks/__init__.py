"""Training callbacks: the CLID snapshot ensemble of the paper's section 6."""

from clidmu_tf.callbacks.clid_snapshot_ensemble import CLIDSnapshotEnsemble
from clidmu_tf.callbacks.snapshot_store import load_snapshot_ensemble, read_snapshot_manifest

__all__ = ["CLIDSnapshotEnsemble", "load_snapshot_ensemble", "read_snapshot_manifest"]
