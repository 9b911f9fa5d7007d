import functools
import threading
import weakref

import keras
import numpy as np
import tensorflow as tf
from keras import ops

from clidmu_tf.backbones.from_model import from_model
from clidmu_tf.backbones.logits_layer import logits_layer
from clidmu_tf.losses.clid_loss import batch_clid
from clidmu_tf.meta_models.meta_weight_net import MetaWeightNet
from clidmu_tf.meta_models.vri_rectifier import VRIRectifier
from clidmu_tf.metrics.clid import CLID
from clidmu_tf.models.guarded_update import apply_if_usable
from clidmu_tf.validation import (
    DEFAULT_WEIGHT_NORMALIZATION,
    check_choice,
    check_class_ids,
    check_finite_inputs,
    check_meta_batch_size,
    check_non_negative_float,
    check_positive_float,
    check_positive_int,
    check_virtual_step,
    resolve_weight_normalization,
)

META_MODELS = ("wnet", "vri")
META_OBJECTIVES = ("clid", "ce_clean", "ce_noisy", "mae_noisy", "none")
LABELLED_META_OBJECTIVES = ("ce_clean", "ce_noisy", "mae_noisy")
VIRTUAL_STEPS = ("full", "head")
DATASET_ITERATORS = (tf.data.Iterator, tf.distribute.DistributedIterator)


def default_optimizer():
    """The paper's classifier optimiser, SGD(0.05, momentum 0.9, weight decay 5e-4).

    PyTorch's SGD adds weight decay to the gradient before momentum; Keras's is decoupled.
    With momentum 0.9 the authors' 5e-4 acts like about 5e-3 in Keras, which is used here.
    """
    return keras.optimizers.SGD(learning_rate=0.05, momentum=0.9, weight_decay=5e-3)


# The meta optimisers' default learning rates, shared by `compile()`, `clidmu-tf train` and
# the tuning search's defaults. Meta-Weight-Net: Adam 1e-3, measured against SGD 1e-3, 1e-2,
# 1e-1 and a normalised meta-gradient in BENCHMARKS.md ("Accuracy grid"). VRI: Adam 1e-2,
# the VRI authors' setting. Both are Adam: its steps do not scale with the meta-gradient,
# whose size changes with the data, the backbone and the training length.
DEFAULT_META_LEARNING_RATES = {"wnet": 1e-3, "vri": 1e-2}
META_WEIGHT_DECAY = 5e-4


def default_meta_optimizer(meta_model, learning_rate=None):
    """The meta optimiser used unless `compile` is given one.

    Meta-Weight-Net: Adam at 1e-3 (weight decay 5e-4), not the paper's SGD at 1e-5. With SGD
    the meta-model's steps scale with the meta-gradient, whose size depends on the data and
    the run: the paper's 1e-5, tuned for 100 epochs of CIFAR, leaves the meta-model where it
    started on short runs (training equals plain cross-entropy), and on the accuracy grid
    (BENCHMARKS.md, "Accuracy grid") SGD 1e-3 gained nothing, 1e-1 fell back and 1e-2 helped
    on one backbone; Adam's steps do not depend on that scale, and Adam 1e-3 was ahead with
    both backbones. `paper_meta_optimizer()` (`compile(meta_optimizer="paper")`) gives the
    paper's setting.
    VRI: Adam at 1e-2 (weight decay 5e-4), the VRI authors' setting.

    Args:
        meta_model: the `CLIDMUModel`'s meta-model.
        learning_rate: a positive float replacing the default rate, or None.

    Returns:
        A new, unbuilt Keras optimiser.
    """
    kind = "vri" if isinstance(meta_model, VRIRectifier) else "wnet"
    rate = DEFAULT_META_LEARNING_RATES[kind] if learning_rate is None else learning_rate
    return keras.optimizers.Adam(learning_rate=rate, weight_decay=META_WEIGHT_DECAY)


def paper_meta_optimizer():
    """The Meta-Weight-Net optimiser of the paper's runs: SGD(1e-5), weight decay 5e-4.

    Without momentum Keras's decoupled weight decay equals PyTorch's coupled one.
    """
    return keras.optimizers.SGD(learning_rate=1e-5, weight_decay=META_WEIGHT_DECAY)


def _logs_for_workers(logs):
    """The step's logs, each given a length-1 axis when several workers train together.

    Keras (3.15) averages a step's logs over the workers of a `MultiWorkerMirroredStrategy`
    with `strategy.reduce("MEAN", value, axis=0)`, which fails on a scalar; over a length-1
    axis it gives the scalar mean.
    """
    strategy = tf.distribute.get_strategy()
    if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy) or (
        strategy.num_replicas_in_sync == len(strategy.extended.worker_devices)
    ):
        return logs
    return {name: ops.reshape(value, (1,)) for name, value in logs.items()}


def _cross_entropy(labels, logits):
    return keras.losses.sparse_categorical_crossentropy(
        labels, ops.cast(logits, "float32"), from_logits=True
    )


class _BackgroundRelease:
    """Holds the dataset iterator of the current epoch and destroys it on another thread.

    Destroying a `tf.data` iterator that has been read joins its autotuning thread, which can
    take seconds after a long epoch (measured up to 5 s here, about 10 s reported), and
    TensorFlow releases the GIL meanwhile. `CLIDMUModel` keeps the last reference to each
    epoch's iterator here, so that neither the next epoch nor the return of `fit` waits.
    A plain object on purpose: Keras and TensorFlow do not track it as a model dependency.
    """

    def __init__(self):
        self.iterator = None

    def hold(self, iterator):
        if iterator is not self.iterator:
            # A new epoch: Keras has let go of the previous iterator.
            self.release()
            self.iterator = iterator

    def release(self):
        held, self.iterator = [self.iterator], None
        if held[0] is not None:
            thread = threading.Thread(target=held.clear, name="release_dataset_iterator")
            thread.daemon = True
            thread.start()


@keras.saving.register_keras_serializable(package="clidmu_tf")
class CLIDMUModel(keras.Model):
    """A classifier trained on noisy labels with CLID-MU's meta update.

    Each training step does what the paper's Algorithm 1 does:

    1. Virtual step: the meta-model turns the batch's per-sample losses into weights
       (Meta-Weight-Net) or rectifies the logits (VRI); one plain SGD step on that loss,
       taken with the classifier's current learning rate, gives fast weights that are a
       function of the meta-model's parameters.
    2. Meta step: the fast-weight classifier runs on a meta batch; the meta loss (CLID by
       default, which needs no labels) is differentiated through the virtual step (a
       second-order gradient through nested `tf.GradientTape`s) and the meta-model is
       updated with `meta_optimizer`.
    3. Real step: the updated meta-model re-weights the same batch and the classifier is
       updated with `optimizer`.

    With `virtual_step="head"` (a deviation from method.md, whose Algorithm 1 is
    `virtual_step="full"`, the default), step 1 updates only the logits layer, the `Dense`
    layer that maps the features `[B, D]` to the logits `[B, C]`: the fast kernel is
    `W - lr * features^T @ dL/dlogits` (`[D, C]`) and the fast bias `b - lr * sum(dL/dlogits)`.
    The features of the training and the meta batch come from the backbone with the real
    weights (one training-mode forward pass of the meta batch, without gradient), so the
    fast logits of the meta batch are `meta_features @ W_fast + b_fast` and the meta-gradient
    is exact for this restricted step. CLID's feature side is the same constant as in the
    full step; only its logits side changes. No second-order pass goes through the backbone,
    so a step costs little more than a plain step; the real step is unchanged.

    BatchNorm moving statistics change only in the real step. The forward pass of the
    training batch is shared by steps 1 and 3 (same weights, same batch), so the real step
    costs one extra backward pass, not a forward and a backward.

    Data contract of `fit` (each element of the dataset):

    - `meta_objective="clid"`: `((x, y), x_meta)`; the meta batch has no labels.
    - `"ce_clean"`, `"ce_noisy"`, `"mae_noisy"`: `((x, y), (x_meta, y_meta))`.
    - `"none"`: `(x, y)`; plain cross-entropy, no meta-model.

    `y` are integer class ids of shape `[B]` (or `[B, 1]`). `evaluate` and validation data
    take plain `(x, y)` and report `loss`, `accuracy` and `clid` (CLID of the model in
    inference mode; the labels are not used for it, so `val_clid` ranks models without clean
    labels). `x` may be a dict or a tuple of inputs for a multi-input backbone.

    Before any step, `fit`, `evaluate` and `per_sample_weights` check the labels (integer
    class ids in range, one per input) and the inputs (no NaN or inf): arrays whole, a
    dataset's first batch, and `validation_data` likewise. With CLID the meta batch needs at
    least 2 samples on each replica and, under a strategy with several replicas, a size that
    splits evenly over them (`ValueError` otherwise). A batch of fewer than 2 samples is
    left out of the `clid` and `val_clid` averages, and a meta step whose meta batch is too
    small for the meta loss or whose meta-gradient is not finite is skipped (the meta-model
    and its optimiser stay as they were) and counted in the `skipped_meta_updates` log.

    Args:
        backbone: a functional (or Sequential) Keras model returning `{"logits": [B, C],
            "features": [B, D]}`, or returning logits together with `feature_layer`; a
            subclassed model is refused.
        meta_model: `"wnet"` (Meta-Weight-Net, default), `"vri"` (variational rectifier), or a
            Keras model mapping per-sample losses `[B, 1]` to weights `[B, 1]`.
        meta_objective: the meta loss, `"clid"` (default, label-free), `"ce_clean"`,
            `"ce_noisy"`, `"mae_noisy"` (baselines that read meta labels) or `"none"`.
        temperature: temperature of CLID's feature side (0.5).
        meta_every: run the meta update every `meta_every` steps; the other steps reuse the
            current meta-model. Works under `tf.distribute` strategies (the steps with and
            without the meta update are two compiled functions chosen from Python). A meta
            update (any `meta_every`) with more than one replica needs
            `steps_per_execution=1`; `fit` refuses it otherwise, before any step.
        virtual_step: `"full"` (the paper's virtual step on every backbone weight, default)
            or `"head"` (only the logits layer; see above). `"head"` needs the logits to be
            a `Dense` layer applied to the features (see
            `clidmu_tf.backbones.logits_layer.logits_layer`), and a meta objective other
            than `"none"`, which takes no virtual step.
        weight_normalization: how Meta-Weight-Net's sample weights `[B]` are scaled to sum
            to 1 in the training loss. `"batch"` (the authors' code): `w / sum(w)` over the
            batch. `"class"` (a deviation from the paper): the weights of each class, by the
            given label, are scaled to sum to the class's share of the batch, keeping their
            ratios within the class, so that no class can be weighted down as a whole. Under
            heavy noise a class the classifier has not yet learnt has high losses on all its
            samples, and the authors' normalisation can drop it for good (a whole digit lost
            on `digits`, symmetric 60%; BENCHMARKS.md, "Class collapse"). None (default):
            `DEFAULT_WEIGHT_NORMALIZATION` for a meta-model that weights samples; nothing for
            VRI and `meta_objective="none"`, which have no weights (a value is refused there).
        feature_layer: with a backbone that returns only logits, the name of its feature
            layer.
        seed: seed of the meta-model's initialisation.
        **kwargs: forwarded to `keras.Model`.

    Raises:
        ValueError: for an unknown `meta_model`, `meta_objective` or `virtual_step`, a
            `temperature` that is not a finite positive float, a non-positive `meta_every`,
            a backbone without a features output (or whose softmax output cannot be
            unwrapped to logits), with `virtual_step="head"`, logits that are not a
            `Dense` layer on the features or `meta_objective="none"`, or a
            `weight_normalization` other than `"batch"`, `"class"` and None, or given with VRI
            or `meta_objective="none"`.

    Example:

    >>> import numpy as np
    >>> import tensorflow as tf
    >>> from clidmu_tf import CLIDMUModel, backbones
    >>> model = CLIDMUModel(backbones.mlp((8,), 3, hidden_units=(16,)), seed=0)
    >>> model.compile(optimizer=keras.optimizers.SGD(0.1))
    >>> x = np.random.rand(40, 8).astype("float32")
    >>> y = np.random.randint(0, 3, 40).astype("int32")
    >>> train = tf.data.Dataset.from_tensor_slices((x, y)).batch(20)
    >>> meta = tf.data.Dataset.from_tensor_slices(x[:20]).batch(10).repeat()
    >>> history = model.fit(tf.data.Dataset.zip((train, meta)), epochs=1, verbose=0)
    >>> model.predict(x, verbose=0).shape
    (40, 3)

    Reference:
        Hu et al., "CLID-MU: Cross-Layer Information Divergence Based Meta Update Strategy
        for Learning with Noisy Labels", KDD 2025.
    """

    def __init__(
        self,
        backbone,
        meta_model="wnet",
        meta_objective="clid",
        temperature=0.5,
        meta_every=1,
        feature_layer=None,
        seed=None,
        virtual_step="full",
        weight_normalization=None,
        **kwargs,
    ):
        check_choice("meta_objective", meta_objective, META_OBJECTIVES)
        weight_normalization = resolve_weight_normalization(
            weight_normalization,
            DEFAULT_WEIGHT_NORMALIZATION,
            uses_rectifier=_is_rectifier(meta_model),
            meta_objective=meta_objective,
        )
        check_positive_float("temperature", temperature)
        check_positive_int("meta_every", meta_every)
        check_choice("virtual_step", virtual_step, VIRTUAL_STEPS)
        check_virtual_step(virtual_step, meta_objective)
        if not (isinstance(meta_model, keras.Model) or meta_model in META_MODELS):
            raise ValueError(
                "Received an invalid value for `meta_model`, expected one of "
                f"{list(META_MODELS)} or a keras.Model. Received: meta_model={meta_model!r}"
            )
        backbone = from_model(backbone, feature_layer)
        if virtual_step == "head":
            logits_layer(backbone)  # Raises if the logits are not a Dense on the features.
        super().__init__(**kwargs)
        self.backbone = backbone
        self.meta_model_name = meta_model if isinstance(meta_model, str) else None
        self.meta_model = self._resolve_meta_model(meta_model, seed)
        self.meta_objective = meta_objective
        self.temperature = temperature
        self.meta_every = meta_every
        self.virtual_step = virtual_step
        self.weight_normalization = weight_normalization
        self.seed = seed
        # The step count that decides whether the next step runs the meta update; read from
        # the optimiser when training starts (see make_train_function).
        self._meta_schedule_step = None
        self._epoch_iterator = _BackgroundRelease()
        # The datasets whose first batch `fit` has checked (see `_check_once`).
        self._checked_datasets = weakref.WeakSet()
        self.meta_optimizer = None
        self.loss_tracker = keras.metrics.Mean(name="loss")
        self.accuracy_tracker = keras.metrics.SparseCategoricalAccuracy(name="accuracy")
        self.meta_loss_tracker = keras.metrics.Mean(name="meta_loss")
        self.clid_tracker = CLID(temperature=temperature, name="clid")
        self.skipped_meta_tracker = keras.metrics.Sum(name="skipped_meta_updates")
        self._build_meta_model()
        self.build()

    @property
    def num_classes(self):
        return self.backbone.output["logits"].shape[-1]

    def _resolve_meta_model(self, meta_model, seed):
        if isinstance(meta_model, keras.Model):
            return meta_model
        if meta_model == "vri":
            return VRIRectifier(self.num_classes, seed=seed, name="vri_rectifier")
        return MetaWeightNet(seed=seed, name="meta_weight_net")

    @property
    def uses_rectifier(self):
        return isinstance(self.meta_model, VRIRectifier)

    def _build_meta_model(self):
        if self.meta_model.built:
            return
        if self.uses_rectifier:
            feature_dim = self.backbone.output["features"].shape[-1]
            self.meta_model.build(((None, feature_dim), (None,)))
        else:
            self.meta_model.build((None, 1))

    def build(self, input_shape=None):
        # Both sub-models are built in __init__ (inside the user's distribution scope).
        self.built = True

    def call(self, inputs, training=False):
        return self.backbone(inputs, training=training)["logits"]

    # Compilation and serialisation.

    def compile(self, optimizer=None, meta_optimizer=None, metrics=None, **kwargs):
        """Configures the model for training.

        Args:
            optimizer: the classifier's optimiser (name, config or instance); defaults to the
                paper's SGD(0.05, momentum 0.9), with Keras's decoupled weight decay 5e-3.
            meta_optimizer: the meta-model's optimiser; defaults to Adam(1e-3) for
                Meta-Weight-Net and Adam(1e-2) for VRI (see `default_meta_optimizer`). Pass
                `"paper"` (or `paper_meta_optimizer()`) for the paper's SGD(1e-5).
            metrics: extra metrics on `(y, logits)`, as for any Keras model.
            **kwargs: forwarded to `keras.Model.compile` (`jit_compile`, `run_eagerly`,
                `steps_per_execution`, ...). `loss` is not accepted: the training loss is the
                method's weighted cross-entropy.
        """
        if kwargs.get("loss") is not None:
            raise ValueError(
                "CLIDMUModel trains with the method's weighted cross-entropy and takes no "
                f"`loss`. Received: loss={kwargs['loss']!r}"
            )
        kwargs.pop("loss", None)
        optimizer = default_optimizer() if optimizer is None else keras.optimizers.get(optimizer)
        if meta_optimizer is None:
            meta_optimizer = default_meta_optimizer(self.meta_model)
        elif meta_optimizer == "paper":
            meta_optimizer = paper_meta_optimizer()
        else:
            meta_optimizer = keras.optimizers.get(meta_optimizer)
        _check_learning_rate(optimizer, "optimizer")
        _check_learning_rate(meta_optimizer, "meta_optimizer")
        super().compile(optimizer=optimizer, metrics=metrics, **kwargs)
        self.meta_optimizer = meta_optimizer

    def get_compile_config(self):
        config = super().get_compile_config()
        if config:
            config["meta_optimizer"] = keras.saving.serialize_keras_object(self.meta_optimizer)
        return config

    def compile_from_config(self, config):
        config = keras.saving.deserialize_keras_object(config)
        self.compile(**config)
        if self.built:
            self.build_optimizers()

    def build_optimizers(self):
        """Creates both optimisers' variables (before tracing, and before loading state)."""
        if not self.optimizer.built:
            self.optimizer.build(self.backbone.trainable_variables)
        if not self.meta_optimizer.built:
            self.meta_optimizer.build(self.meta_model.trainable_variables)

    def get_config(self):
        meta_model = self.meta_model_name or keras.saving.serialize_keras_object(self.meta_model)
        return {
            **super().get_config(),
            "backbone": keras.saving.serialize_keras_object(self.backbone),
            "meta_model": meta_model,
            "meta_objective": self.meta_objective,
            "temperature": self.temperature,
            "meta_every": self.meta_every,
            "virtual_step": self.virtual_step,
            "weight_normalization": self.weight_normalization,
            "seed": self.seed,
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        if config.get("meta_objective") == "none":
            # Saved before "head" was refused without a meta update, where it changed nothing.
            config["virtual_step"] = "full"
        config["backbone"] = keras.saving.deserialize_keras_object(config["backbone"])
        if isinstance(config["meta_model"], dict):
            config["meta_model"] = keras.saving.deserialize_keras_object(config["meta_model"])
        # Saved before the option existed: trained with the authors' normalisation. Read from
        # the deserialised meta-model, so that a subclass of VRI's rectifier counts as one.
        if "weight_normalization" not in config:
            weightless = (
                _is_rectifier(config["meta_model"]) or config.get("meta_objective") == "none"
            )
            config["weight_normalization"] = None if weightless else "batch"
        return cls(**config)

    # Training.

    def _unpack(self, data):
        """Splits a `fit` element into `(x, y, x_meta, y_meta)` per the data contract."""
        if self.meta_objective == "none":
            x, y, _ = keras.utils.unpack_x_y_sample_weight(data)
            return x, y, None, None
        # `fit` passes the dataset's pairs; `train_on_batch(x=(x, y), y=meta)` a triple whose
        # third entry is the (refused, hence None) sample weight.
        (x, y), meta, _ = keras.utils.unpack_x_y_sample_weight(data)
        if self.meta_objective in LABELLED_META_OBJECTIVES:
            x_meta, y_meta = meta
            return x, y, x_meta, y_meta
        return x, y, meta, None

    def _training_loss(self, logits, features, labels, training):
        """The training loss: modulated by the meta-model, or plain CE without meta update."""
        if self.meta_objective == "none":
            return ops.mean(_cross_entropy(labels, logits))
        if self.uses_rectifier:
            rectifier = self.meta_model([ops.stop_gradient(features), labels], training=training)
            rectifier = ops.cast(rectifier, "float32")
            per_sample = _cross_entropy(labels, rectifier * ops.cast(logits, "float32"))
            return ops.mean(per_sample)
        per_sample = _cross_entropy(labels, logits)
        weights = self.meta_model(ops.stop_gradient(per_sample)[:, None])
        # The loss stays in float32 under mixed precision, like CLID.
        weights = ops.cast(ops.squeeze(weights, axis=-1), "float32")
        return ops.sum(self._normalized_weights(weights, labels) * per_sample)

    def _normalized_weights(self, weights, labels):
        """The meta-model's weights `[B]` scaled to sum to 1 over the batch.

        `"batch"` (the authors'): `w / sum(w)`. `"class"`: each class's weights (by the given
        label) are scaled to sum to the class's share of the batch, `n_c / B`, keeping their
        ratios within the class; a class the meta-model has turned down as a whole (every
        sample's loss high because the classifier has not learnt it yet) keeps its share.
        A total of 0 (all-zero weights, of the batch or of a class) is left as it is (the
        loss is then 0 there), as the authors do.
        """
        if self.weight_normalization == "batch":
            total = ops.sum(weights)
            return ops.where(total > 0, weights / ops.where(total > 0, total, 1.0), weights)
        labels = ops.cast(ops.reshape(labels, (-1,)), "int32")
        # Per sample: the total weight and the count of the samples of its class.
        def per_class_sum(values):
            return ops.take(ops.segment_sum(values, labels, num_segments=self.num_classes), labels)

        class_total = per_class_sum(weights)
        class_count = per_class_sum(ops.ones_like(weights))
        share = class_count / ops.cast(ops.shape(weights)[0], "float32")
        return ops.where(
            class_total > 0, weights * share / ops.where(class_total > 0, class_total, 1.0), weights
        )

    def _meta_loss(self, outputs, y_meta):
        if self.meta_objective == "clid":
            # 0 for a meta batch of fewer than 2 samples; `_meta_update` then skips the step.
            return batch_clid(outputs["features"], outputs["logits"], self.temperature)[0]
        if self.meta_objective == "mae_noisy":
            probabilities = ops.softmax(ops.cast(outputs["logits"], "float32"), axis=-1)
            true_class = ops.take_along_axis(probabilities, ops.cast(y_meta, "int32")[:, None], axis=-1)
            return ops.mean(1.0 - true_class)
        return ops.mean(_cross_entropy(y_meta, outputs["logits"]))

    def _logit_gradient(self, logits, features, labels, scale):
        """d(scale * training loss)/d(logits), kept differentiable in the meta-model."""
        with tf.GradientTape() as tape:
            tape.watch(logits)
            loss = self._training_loss(logits, features, labels, training=True)
            scaled_loss = loss * scale
        return tape.gradient(scaled_loss, logits), loss

    def meta_gradients(self, train_tape, outputs, labels, x_meta, y_meta=None):
        """The virtual step and the meta loss's gradient with respect to the meta-model.

        Args:
            train_tape: a persistent `tf.GradientTape` that recorded `outputs` (read only by
                the full virtual step).
            outputs: the backbone's training-mode outputs on the training batch.
            labels: the training batch's (noisy) labels, `[B]` int32.
            x_meta: the meta batch's inputs.
            y_meta: the meta batch's labels, for the objectives that read them.

        Returns:
            `(meta_loss, gradients)`, the gradients aligned with
            `meta_model.trainable_variables` (scaled for the meta optimiser and for the
            number of replicas, as `optimizer.apply` expects).
        """
        learning_rate = ops.cast(self.optimizer.learning_rate, "float32")
        replicas = tf.distribute.get_strategy().num_replicas_in_sync
        if self.virtual_step == "head":
            # Real weights, outside the meta tape: no gradient flows into the backbone.
            real_weights = [variable.value for variable in self.backbone.trainable_variables]
            meta_features = self._stateless_outputs(real_weights, x_meta)["features"]
        with tf.GradientTape() as meta_tape:
            logit_gradient, _ = self._logit_gradient(
                outputs["logits"], outputs["features"], labels, scale=1.0
            )
            if self.virtual_step == "head":
                meta_outputs = self._fast_head_outputs(
                    outputs["features"], meta_features, logit_gradient, learning_rate
                )
            else:
                # Recorded by meta_tape: the virtual gradient is a function of the meta-model.
                gradients = train_tape.gradient(
                    outputs["logits"],
                    self.backbone.trainable_variables,
                    output_gradients=logit_gradient,
                )
                fast_weights = [
                    variable.value
                    if gradient is None
                    else variable.value - learning_rate * gradient
                    for variable, gradient in zip(self.backbone.trainable_variables, gradients)
                ]
                meta_outputs = self._stateless_outputs(fast_weights, x_meta)
            meta_loss = self._meta_loss(meta_outputs, y_meta)
            scaled_meta_loss = self.meta_optimizer.scale_loss(meta_loss / replicas)
        meta_gradients = meta_tape.gradient(scaled_meta_loss, self.meta_model.trainable_variables)
        return meta_loss, meta_gradients

    def _stateless_outputs(self, trainable_values, x):
        """A training-mode pass with the given trainable weights; moving statistics dropped."""
        outputs, _ = self.backbone.stateless_call(
            trainable_values,
            [variable.value for variable in self.backbone.non_trainable_variables],
            x,
            training=True,
        )
        return outputs

    def _fast_head_outputs(self, features, meta_features, logit_gradient, learning_rate):
        """The meta batch's outputs after a virtual SGD step on the logits layer alone.

        With `logits = features @ W + b`, the step's gradient is `features^T @ G` for `W`
        and `sum(G)` for `b`, where `G = dL/dlogits` (`[B, C]`, a function of the
        meta-model); the features are constants. Computed in float32.
        """
        head = logits_layer(self.backbone)
        features = ops.cast(ops.stop_gradient(features), "float32")
        meta_features = ops.cast(ops.stop_gradient(meta_features), "float32")
        logit_gradient = ops.cast(logit_gradient, "float32")
        fast_kernel = ops.cast(head.kernel, "float32") - learning_rate * ops.matmul(
            ops.transpose(features), logit_gradient
        )
        meta_logits = ops.matmul(meta_features, fast_kernel)
        if head.bias is not None:
            fast_bias = ops.cast(head.bias, "float32") - learning_rate * ops.sum(
                logit_gradient, axis=0
            )
            meta_logits = meta_logits + fast_bias
        return {"logits": meta_logits, "features": meta_features}

    def _meta_update(self, train_tape, outputs, labels, x_meta, y_meta, scheduled=None):
        """Returns `(meta_loss, applied)`; `applied` is 0.0 when the update was skipped.

        The update is skipped (and counted in `skipped_meta_updates`) when the
        meta-gradient is not finite, or when the meta batch is too small for the meta loss
        (CLID needs 2 samples), so that one bad batch cannot turn the meta-model into NaN.

        `scheduled`: None for a meta step, or a boolean scalar tensor that decides in the
        graph whether this step is one (`meta_every` > 1 with several steps per call). Only
        the meta-gradient is computed in that conditional: the meta optimiser's update
        synchronises replicas under any `tf.distribute` strategy, which a conditional branch
        cannot hold, so it is taken (or skipped, changing nothing) by `apply_if_usable`.
        """
        meta_variables = self.meta_model.trainable_variables
        if scheduled is None:
            meta_loss, meta_gradients = self.meta_gradients(
                train_tape, outputs, labels, x_meta, y_meta
            )
        else:

            def compute():
                meta_loss, gradients = self.meta_gradients(
                    train_tape, outputs, labels, x_meta, y_meta
                )
                # Both branches return dense tensors (VRI's label embedding has a sparse
                # gradient).
                return ops.cast(meta_loss, "float32"), [
                    ops.zeros(variable.shape, variable.dtype)
                    if gradient is None
                    else tf.convert_to_tensor(gradient)
                    for gradient, variable in zip(gradients, meta_variables)
                ]

            def skip():
                return ops.zeros((), "float32"), [
                    ops.zeros(variable.shape, variable.dtype) for variable in meta_variables
                ]

            meta_loss, meta_gradients = ops.cond(scheduled, compute, skip)
        meta_batch = ops.shape(tf.nest.flatten(x_meta)[0])[0]
        usable = meta_batch >= (2 if self.meta_objective == "clid" else 1)
        if scheduled is not None:
            usable = ops.logical_and(usable, scheduled)
        applied = apply_if_usable(self.meta_optimizer, meta_gradients, meta_variables, usable)
        return meta_loss, applied

    def _skip_meta_update(self):
        return ops.zeros((), "float32"), ops.zeros((), "float32")

    @staticmethod
    def _refuse_sample_weights(kwargs):
        for name in ("sample_weight", "class_weight"):
            if kwargs.get(name) is not None:
                # The meta-model decides each sample's weight; a second weighting would
                # silently change the method.
                raise ValueError(
                    f"CLIDMUModel learns per-sample weights itself and takes no `{name}`. "
                    f"Received: {name} of type {type(kwargs[name]).__name__}"
                )

    def train_on_batch(self, x, y=None, sample_weight=None, class_weight=None, return_dict=False):
        """One training step on one `fit` element, given as `x=(x, y)`, `y=x_meta` (CLID).

        With a labelled meta objective `y` is `(x_meta, y_meta)`; with `"none"`, plain
        `x, y`. `sample_weight` and `class_weight` are refused, as in `fit`.

        Raises:
            ValueError: for `sample_weight` or `class_weight`, and for a meta update under a
                strategy with more than one replica (use `fit` with a `tf.data.Dataset`).
        """
        self._refuse_sample_weights({"sample_weight": sample_weight, "class_weight": class_weight})
        replicas = self.distribute_strategy.num_replicas_in_sync
        if self.meta_objective != "none" and replicas > 1:
            # Keras gives every replica the whole undistributed batch here, and TensorFlow
            # (2.21) fails to run the meta update's cross-replica conditional on it.
            raise ValueError(
                "`train_on_batch` with a meta update runs on one replica; with several, train "
                "with `fit` on a tf.data.Dataset, which splits each batch over the replicas. "
                f"Received: meta_objective={self.meta_objective!r}, {replicas} replicas"
            )
        return super().train_on_batch(x, y, return_dict=return_dict)

    def fit(self, x=None, y=None, **kwargs):
        self._refuse_sample_weights(kwargs)
        replicas = self.distribute_strategy.num_replicas_in_sync
        if self.meta_objective != "none" and replicas > 1 and self.steps_per_execution > 1:
            # Several steps in one call run inside a loop in the graph, and the meta update
            # holds conditionals (the guarded update, and with `meta_every` > 1 the schedule);
            # with several replicas TensorFlow (2.21) fails to run them there ("You must feed
            # a value for placeholder tensor ... while/cond/Placeholder").
            raise ValueError(
                "A meta update with more than one replica needs `steps_per_execution=1` in "
                f"compile. Received: meta_objective={self.meta_objective!r}, meta_every="
                f"{self.meta_every}, {replicas} replicas, "
                f"steps_per_execution={self.steps_per_execution}"
            )
        self._check_once(x, lambda: self._check_fit_data(x, y))
        validation_data = kwargs.get("validation_data")
        if validation_data is not None:
            self._check_once(
                validation_data,
                lambda: self._check_evaluation_data(validation_data, "validation_data"),
            )
        if isinstance(x, tf.data.Dataset):
            # A dataset is shuffled by its pipeline; Keras would only warn about the default.
            kwargs.setdefault("shuffle", False)
        if self.compiled:
            with self.distribute_strategy.scope():
                self.build_optimizers()
        try:
            return super().fit(x, y, **kwargs)
        finally:
            self._epoch_iterator.release()

    def _check_once(self, data, check):
        """Runs `check()` unless `data` is a dataset that passed it in an earlier `fit`.

        Checking reads a dataset's first batch, which refills its shuffle buffer; a dataset
        passed again (`fit(epochs=1)` in a loop) passed already, and plain Keras spends
        nothing extra on a repeated `fit`. Datasets are held by weak reference, so the model
        does not keep a user's pipeline alive.
        """
        is_dataset = isinstance(data, tf.data.Dataset)
        if is_dataset and data in self._checked_datasets:
            return
        check()
        if is_dataset:
            self._checked_datasets.add(data)

    def _maybe_symbolic_build(self, iterator=None, data_batch=None):
        # Keras (3.15) passes a whole distributed batch to `strategy.reduce`, which takes a
        # single value: under MultiWorkerMirroredStrategy every `fit`/`evaluate` failed with
        # "Attempt to convert a value (PerReplica ...)". The build reads only shapes and
        # dtypes, so one local replica's shard serves.
        if iterator is not None and self._distribute_strategy is not None:
            for _, _, distributed_iterator in iterator:
                data_batch = tf.nest.map_structure(
                    lambda value: self._distribute_strategy.experimental_local_results(value)[0]
                    if isinstance(value, tf.distribute.DistributedValues)
                    else value,
                    next(distributed_iterator),
                )
                break
        return super()._maybe_symbolic_build(data_batch=data_batch)

    def _expected_structure(self):
        return {
            "clid": "((x, y), x_meta)",
            "none": "(x, y)",
        }.get(self.meta_objective, "((x, y), (x_meta, y_meta))")

    def _check_fit_data(self, x, y):
        """Checks the structure and the first batch of `fit` data before any training.

        Arrays are checked whole; a dataset's first element is checked (labels, NaN or inf
        in the inputs, meta batch size), as reading all of it could take an epoch.
        """
        if self.meta_objective == "none" and not isinstance(x, tf.data.Dataset):
            self._check_arrays(x, y, "x", "y")
            return
        if not isinstance(x, tf.data.Dataset):
            raise ValueError(
                f"With meta_objective={self.meta_objective!r}, `fit` reads a tf.data.Dataset "
                f"whose elements are {self._expected_structure()} (see "
                "clidmu_tf.pipelines.make_training_data). Received: x of type "
                f"{type(x).__name__}"
            )
        first = self._first_element(x, "x")
        try:
            batch_x, labels, x_meta, y_meta = self._unpack(first)
        except (TypeError, ValueError):
            raise ValueError(
                f"With meta_objective={self.meta_objective!r}, each element of the dataset must "
                f"be {self._expected_structure()}. Received an element with structure "
                f"{tf.nest.map_structure(lambda t: tuple(t.shape), first)}"
            )
        self._check_arrays(batch_x, labels, "x", "y")
        if x_meta is not None:
            check_finite_inputs(_to_numpy(x_meta), "x_meta")
            if self.meta_objective == "clid":
                check_meta_batch_size(
                    _batch_size(x_meta),
                    self.distribute_strategy.num_replicas_in_sync,
                    "the meta batch size (x_meta's first dimension)",
                )
        if y_meta is not None:
            check_class_ids(
                _to_numpy(y_meta),
                "y_meta",
                num_classes=self.num_classes,
                length=_batch_size(x_meta),
            )

    def _check_evaluation_data(self, data, name):
        """Checks `(x, y)` arrays or the first batch of a dataset given for evaluation."""
        if isinstance(data, tf.data.Dataset):
            x, y, _ = keras.utils.unpack_x_y_sample_weight(self._first_element(data, name))
            self._check_arrays(x, y, f"{name} x", f"{name} y")
        elif isinstance(data, (tuple, list)) and len(data) in (2, 3):
            self._check_arrays(data[0], data[1], f"{name}[0]", f"{name}[1]")
        else:
            raise ValueError(
                f"Received an invalid value for `{name}`, expected `(x, y)` arrays or a "
                f"tf.data.Dataset of `(x, y)` batches. Received: {name} of type "
                f"{type(data).__name__}"
            )

    def _check_arrays(self, x, y, x_name, y_name):
        """Inputs finite; labels integer class ids `[N]` in range, one per input."""
        x = _to_numpy(x)
        if _batch_size(x) is not None:
            check_finite_inputs(x, x_name)
        if y is not None:
            check_class_ids(
                _to_numpy(y),
                y_name,
                num_classes=self.num_classes,
                length=_batch_size(x),
            )

    @staticmethod
    def _first_element(dataset, name):
        try:
            return next(iter(dataset.take(1)))
        except StopIteration:
            raise ValueError(
                f"Received an empty dataset for `{name}`: it needs at least one batch."
            ) from None

    def evaluate(self, x=None, y=None, **kwargs):
        """Scores the model; `(x, y)` or the first batch of a dataset is checked first.

        Raises:
            ValueError: for labels that are not integer class ids of shape `[N]` in range,
                or inputs holding NaN or inf, before any batch is scored.
        """
        # Keras's own validation pass within `fit` reuses data that `fit` checked already.
        if not kwargs.get("_use_cached_eval_dataset"):
            if isinstance(x, tf.data.Dataset):
                self._check_evaluation_data(x, "x")
            else:
                self._check_arrays(x, y, "x", "y")
        return super().evaluate(x, y, **kwargs)

    def make_train_function(self, force=False):
        """Builds `train_function`; with `meta_every` > 1, two steps dispatched from Python.

        One compiled step runs the meta update and one does not, and each call picks one
        by the step count, so no conditional holds the meta optimiser's cross-replica update
        (which `tf.distribute` forbids) and skipped steps cost no branch. With
        `steps_per_execution` > 1 several steps run in one call, and `train_step` decides
        in the graph instead. `fit` and `train_on_batch` call this before training, so the
        step count is re-read from the optimiser then.
        """
        self._meta_schedule_step = None
        if self.train_function is not None and not force:
            return self.train_function
        if self.meta_objective == "none" or self.meta_every == 1 or self.steps_per_execution > 1:
            super().make_train_function(force=force)
            step_function = self.train_function
        else:
            with_meta = self._make_function(functools.partial(self._train_step, meta_update=True))
            without_meta = self._make_function(
                functools.partial(self._train_step, meta_update=False)
            )

            def step_function(iterator):
                if self._meta_schedule_step is None:
                    self._meta_schedule_step = int(ops.convert_to_numpy(self.optimizer.iterations))
                is_meta_step = self._meta_schedule_step % self.meta_every == 0
                logs = (with_meta if is_meta_step else without_meta)(iterator)
                self._meta_schedule_step += 1
                return logs

        def train_function(iterator):
            if isinstance(iterator, DATASET_ITERATORS):
                self._epoch_iterator.hold(iterator)
            return step_function(iterator)

        self.train_function = train_function
        return train_function

    def train_step(self, data):
        return self._train_step(data, meta_update=None)

    def _train_step(self, data, meta_update):
        """One training step. `meta_update`: True or False, or None to follow `meta_every`."""
        x, y, x_meta, y_meta = self._unpack(data)
        labels = ops.reshape(ops.cast(y, "int32"), (-1,))
        backbone_variables = self.backbone.trainable_variables
        replicas = tf.distribute.get_strategy().num_replicas_in_sync
        if self.meta_objective == "none":
            meta_update = False
        elif meta_update is None and self.meta_every == 1:
            meta_update = True

        # The one forward pass of the training batch. It updates BatchNorm's moving
        # statistics, which is the real step's update (same weights, same batch). The full
        # virtual step differentiates it a second time.
        persistent = meta_update is not False and self.virtual_step == "full"
        with tf.GradientTape(persistent=persistent) as train_tape:
            outputs = self.backbone(x, training=True)
            regularization = sum(self.backbone.losses) if self.backbone.losses else None

        if meta_update is False:
            (meta_loss, applied), is_meta_step = self._skip_meta_update(), 0.0
        elif meta_update:
            meta_loss, applied = self._meta_update(train_tape, outputs, labels, x_meta, y_meta)
            is_meta_step = 1.0
        else:
            is_meta_step = ops.equal(self.optimizer.iterations % self.meta_every, 0)
            meta_loss, applied = self._meta_update(
                train_tape, outputs, labels, x_meta, y_meta, scheduled=is_meta_step
            )
        is_meta_step = ops.cast(is_meta_step, "float32")

        # Real step: the updated meta-model re-weights the batch; no gradient to it.
        scale = self.optimizer.scale_loss(ops.ones((), "float32")) / replicas
        logit_gradient, loss = self._logit_gradient(
            outputs["logits"], outputs["features"], labels, scale
        )
        targets, target_gradients = [outputs["logits"]], [ops.stop_gradient(logit_gradient)]
        # Regularisation losses act like weight decay: only the real step applies them (the
        # virtual step is plain SGD on the weighted loss).
        if regularization is not None:
            targets.append(regularization)
            target_gradients.append(scale * ops.ones_like(regularization))
            loss = loss + regularization
        gradients = train_tape.gradient(targets, backbone_variables, output_gradients=target_gradients)
        self.optimizer.apply(gradients, backbone_variables)

        self.loss_tracker.update_state(loss)
        # Steps without a meta update (meta_every, or a skipped one) do not enter the mean
        # meta loss. The skip count is summed over replicas on reading, hence the division.
        self.meta_loss_tracker.update_state(meta_loss, sample_weight=is_meta_step * applied)
        self.skipped_meta_tracker.update_state(is_meta_step * (1.0 - applied) / replicas)
        self.accuracy_tracker.update_state(labels, outputs["logits"])
        self.clid_tracker.update_state(None, outputs)
        return _logs_for_workers(self.compute_metrics(x, labels, outputs["logits"]))

    def test_step(self, data):
        x, y, _ = keras.utils.unpack_x_y_sample_weight(data)
        labels = ops.reshape(ops.cast(y, "int32"), (-1,))
        outputs = self.backbone(x, training=False)
        self.loss_tracker.update_state(ops.mean(_cross_entropy(labels, outputs["logits"])))
        self.accuracy_tracker.update_state(labels, outputs["logits"])
        self.clid_tracker.update_state(None, outputs)
        logs = self.compute_metrics(x, labels, outputs["logits"])
        return _logs_for_workers(
            {
                name: value
                for name, value in logs.items()
                if name not in ("meta_loss", "skipped_meta_updates")
            }
        )

    def predict_step(self, data):
        x, _, _ = keras.utils.unpack_x_y_sample_weight(data)
        return self(x, training=False)

    def per_sample_weights(self, x, y, batch_size=256):
        """How much the meta-model trusts each labelled sample, in inference mode.

        For Meta-Weight-Net, the weight `V(loss)` in (0, 1) before the training loss
        normalises it (`weight_normalization`); for VRI, the rectifier's mean value at the
        given label. Low values flag samples whose labels are likely wrong.

        Args:
            x: inputs, an array (or a dict / tuple of arrays for a multi-input backbone).
            y: integer class ids, shape `[N]` (or `[N, 1]`).
            batch_size: batch size of the pass.

        Returns:
            A float32 numpy array of shape `[N]`.

        Raises:
            ValueError: for labels that are not integer class ids of shape `[N]` in range or
                not one per input, or inputs holding NaN or inf.
        """
        check_positive_int("batch_size", batch_size)
        x = _to_numpy(x)
        check_finite_inputs(x, "x")
        labels = check_class_ids(y, "y", num_classes=self.num_classes, length=_batch_size(x))
        weights = []
        for start in range(0, len(labels), batch_size):
            batch_x = tf.nest.map_structure(lambda array: array[start : start + batch_size], x)
            batch_y = labels[start : start + batch_size]
            outputs = self.backbone(batch_x, training=False)
            if self.uses_rectifier:
                rectifier = self.meta_model([outputs["features"], batch_y], training=False)
                batch_weights = ops.take_along_axis(rectifier, batch_y[:, None], axis=-1)[:, 0]
            else:
                per_sample = _cross_entropy(batch_y, outputs["logits"])
                batch_weights = self.meta_model(per_sample[:, None])[:, 0]
            weights.append(ops.convert_to_numpy(batch_weights))
        return np.concatenate(weights).astype("float32")


def _is_rectifier(meta_model):
    """Whether a `meta_model` argument (a name or a Keras model) is VRI's rectifier, which
    gives no sample weights."""
    return isinstance(meta_model, VRIRectifier) or (
        isinstance(meta_model, str) and meta_model == "vri"
    )


def _to_numpy(x):
    """Eager tensors (and nests of them) as NumPy arrays; arrays and None as they are."""
    return tf.nest.map_structure(
        lambda value: value.numpy() if isinstance(value, tf.Tensor) else value, x
    )


def _batch_size(x):
    """The number of samples in `x` (an array, a tensor, or a dict / tuple of them), or None."""
    first = tf.nest.flatten(x)[0] if x is not None else None
    shape = getattr(first, "shape", None)
    return shape[0] if shape else None


def _check_learning_rate(optimizer, name):
    """Refuses an optimiser whose (current) learning rate is negative, NaN or inf."""
    rate = float(ops.convert_to_numpy(optimizer.learning_rate))
    try:
        check_non_negative_float(f"{name}.learning_rate", rate)
    except ValueError as error:
        raise ValueError(f"{error}; a NaN or infinite rate makes every step NaN.") from None
