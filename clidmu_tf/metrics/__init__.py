from clidmu_tf.metrics.clid import CLID

__all__ = ["CLID"]
