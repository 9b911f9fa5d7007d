from clidmu_tf.models.clidmu_model import CLIDMUModel, paper_meta_optimizer

__all__ = ["CLIDMUModel", "paper_meta_optimizer"]
