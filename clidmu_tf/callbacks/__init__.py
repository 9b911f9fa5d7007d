"""Training callbacks: the CLID snapshot ensemble of the paper's section 6, and the record of
the training dynamics that label issues are ranked by."""

from clidmu_tf.callbacks.clid_snapshot_ensemble import CLIDSnapshotEnsemble
from clidmu_tf.callbacks.snapshot_store import load_snapshot_ensemble, read_snapshot_manifest
from clidmu_tf.callbacks.training_dynamics_recorder import (
    TrainingDynamicsRecorder,
    load_dynamics,
)

__all__ = [
    "CLIDSnapshotEnsemble",
    "TrainingDynamicsRecorder",
    "load_dynamics",
    "load_snapshot_ensemble",
    "read_snapshot_manifest",
]
