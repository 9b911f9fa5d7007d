from clidmu_tf.meta_models.meta_weight_net import MetaWeightNet
from clidmu_tf.meta_models.vri_rectifier import VRIRectifier

__all__ = ["MetaWeightNet", "VRIRectifier"]
