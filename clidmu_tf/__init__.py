"""clidmu-tf: train Keras classifiers on noisy labels without a clean validation set.

CLID-MU (Hu et al., KDD 2025) steers a meta-model with CLID, a label-free score of how well
a batch's embedding structure agrees with its output structure.
"""

from clidmu_tf import backbones
from clidmu_tf.losses import CLIDLoss, clid_loss
from clidmu_tf.meta_models import MetaWeightNet, VRIRectifier
from clidmu_tf.metrics import CLID
from clidmu_tf.models import CLIDMUModel, paper_meta_optimizer

__version__ = "0.1.0"

__all__ = [
    "CLID",
    "CLIDLoss",
    "CLIDMUModel",
    "MetaWeightNet",
    "VRIRectifier",
    "backbones",
    "clid_loss",
    "paper_meta_optimizer",
]
