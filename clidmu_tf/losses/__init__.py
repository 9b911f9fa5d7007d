from clidmu_tf.losses.clid_loss import CLIDLoss, clid_loss

__all__ = ["CLIDLoss", "clid_loss"]
