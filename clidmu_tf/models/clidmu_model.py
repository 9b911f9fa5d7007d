import keras
import numpy as np
import tensorflow as tf
from keras import ops

from clidmu_tf.backbones.from_model import from_model
from clidmu_tf.losses.clid_loss import clid_loss
from clidmu_tf.meta_models.meta_weight_net import MetaWeightNet
from clidmu_tf.meta_models.vri_rectifier import VRIRectifier
from clidmu_tf.metrics.clid import CLID
from clidmu_tf.validation import check_choice, check_positive_float, check_positive_int

META_MODELS = ("wnet", "vri")
META_OBJECTIVES = ("clid", "ce_clean", "ce_noisy", "mae_noisy", "none")
LABELLED_META_OBJECTIVES = ("ce_clean", "ce_noisy", "mae_noisy")


def default_optimizer():
    """The paper's classifier optimiser, SGD(0.05, momentum 0.9, weight decay 5e-4).

    PyTorch's SGD adds weight decay to the gradient before momentum; Keras's is decoupled.
    With momentum 0.9 the authors' 5e-4 acts like about 5e-3 in Keras, which is used here.
    """
    return keras.optimizers.SGD(learning_rate=0.05, momentum=0.9, weight_decay=5e-3)


def default_meta_optimizer(meta_model):
    """The meta optimiser used unless `compile` is given one.

    Meta-Weight-Net: SGD at 1e-3 (weight decay 5e-4). The paper's 1e-5 is tuned for 100 epochs
    of CIFAR at batch 100; on small runs (a few thousand steps) it leaves the meta-model where
    it started, so training equals plain cross-entropy. `paper_meta_optimizer()` gives the
    paper's setting. VRI: Adam at 1e-2 (weight decay 5e-4), the VRI authors' setting.
    """
    if isinstance(meta_model, VRIRectifier):
        return keras.optimizers.Adam(learning_rate=1e-2, weight_decay=5e-4)
    return keras.optimizers.SGD(learning_rate=1e-3, weight_decay=5e-4)


def paper_meta_optimizer():
    """The Meta-Weight-Net optimiser of the paper's runs: SGD(1e-5), weight decay 5e-4.

    Without momentum Keras's decoupled weight decay equals PyTorch's coupled one.
    """
    return keras.optimizers.SGD(learning_rate=1e-5, weight_decay=5e-4)


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

    BatchNorm moving statistics change only in the real step. The forward pass of the
    training batch is shared by steps 1 and 3 (same weights, same batch), so the real step
    costs one extra backward pass, not a forward and a backward.

    Data contract of `fit` (each element of the dataset):

    - `meta_objective="clid"`: `((x, y), x_meta)`; the meta batch has no labels.
    - `"ce_clean"`, `"ce_noisy"`, `"mae_noisy"`: `((x, y), (x_meta, y_meta))`.
    - `"none"`: `(x, y)`; plain cross-entropy, no meta-model.

    `y` are integer class ids of shape `[B]`. `evaluate` and validation data take plain
    `(x, y)` and report `loss`, `accuracy` and `clid` (CLID of the model in inference mode;
    the labels are not used for it, so `val_clid` ranks models without clean labels).

    Args:
        backbone: a Keras model returning `{"logits": [B, C], "features": [B, D]}`, or a
            functional model returning logits together with `feature_layer`.
        meta_model: `"wnet"` (Meta-Weight-Net, default), `"vri"` (variational rectifier), or a
            Keras model mapping per-sample losses `[B, 1]` to weights `[B, 1]`.
        meta_objective: the meta loss, `"clid"` (default, label-free), `"ce_clean"`,
            `"ce_noisy"`, `"mae_noisy"` (baselines that read meta labels) or `"none"`.
        temperature: temperature of CLID's feature side (0.5).
        meta_every: run the meta update every `meta_every` steps; the other steps reuse the
            current meta-model.
        feature_layer: with a backbone that returns only logits, the name of its feature
            layer.
        seed: seed of the meta-model's initialisation.
        **kwargs: forwarded to `keras.Model`.

    Raises:
        ValueError: for an unknown `meta_model` or `meta_objective`, a non-positive
            `temperature` or `meta_every`, or a backbone without a features output.

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
        **kwargs,
    ):
        check_choice("meta_objective", meta_objective, META_OBJECTIVES)
        check_positive_float("temperature", temperature)
        check_positive_int("meta_every", meta_every)
        if not (isinstance(meta_model, keras.Model) or meta_model in META_MODELS):
            raise ValueError(
                "Received an invalid value for `meta_model`, expected one of "
                f"{list(META_MODELS)} or a keras.Model. Received: meta_model={meta_model!r}"
            )
        backbone = from_model(backbone, feature_layer)
        super().__init__(**kwargs)
        self.backbone = backbone
        self.meta_model_name = meta_model if isinstance(meta_model, str) else None
        self.meta_model = self._resolve_meta_model(meta_model, seed)
        self.meta_objective = meta_objective
        self.temperature = temperature
        self.meta_every = meta_every
        self.seed = seed
        self.meta_optimizer = None
        self.loss_tracker = keras.metrics.Mean(name="loss")
        self.accuracy_tracker = keras.metrics.SparseCategoricalAccuracy(name="accuracy")
        self.meta_loss_tracker = keras.metrics.Mean(name="meta_loss")
        self.clid_tracker = CLID(temperature=temperature, name="clid")
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
            meta_optimizer: the meta-model's optimiser; defaults to SGD(1e-3) for
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
            "seed": self.seed,
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["backbone"] = keras.saving.deserialize_keras_object(config["backbone"])
        if isinstance(config["meta_model"], dict):
            config["meta_model"] = keras.saving.deserialize_keras_object(config["meta_model"])
        return cls(**config)

    # Training.

    def _unpack(self, data):
        """Splits a `fit` element into `(x, y, x_meta, y_meta)` per the data contract."""
        if self.meta_objective == "none":
            x, y, _ = keras.utils.unpack_x_y_sample_weight(data)
            return x, y, None, None
        (x, y), meta = data
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
        total = ops.sum(weights)
        # All-zero weights are left as they are (the loss is then 0), as the authors do.
        weights = ops.where(total > 0, weights / ops.where(total > 0, total, 1.0), weights)
        return ops.sum(weights * per_sample)

    def _meta_loss(self, outputs, y_meta):
        if self.meta_objective == "clid":
            return clid_loss(outputs["features"], outputs["logits"], self.temperature)
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
            train_tape: a persistent `tf.GradientTape` that recorded `outputs`.
            outputs: the backbone's training-mode outputs on the training batch.
            labels: the training batch's (noisy) labels, `[B]` int32.
            x_meta: the meta batch's inputs.
            y_meta: the meta batch's labels, for the objectives that read them.

        Returns:
            `(meta_loss, gradients)`, the gradients aligned with
            `meta_model.trainable_variables` (scaled for the meta optimiser and for the
            number of replicas, as `optimizer.apply` expects).
        """
        backbone_variables = self.backbone.trainable_variables
        learning_rate = ops.cast(self.optimizer.learning_rate, "float32")
        replicas = tf.distribute.get_strategy().num_replicas_in_sync
        with tf.GradientTape() as meta_tape:
            logit_gradient, _ = self._logit_gradient(
                outputs["logits"], outputs["features"], labels, scale=1.0
            )
            # Recorded by meta_tape: the virtual gradient is a function of the meta-model.
            gradients = train_tape.gradient(
                outputs["logits"], backbone_variables, output_gradients=logit_gradient
            )
            fast_weights = [
                variable.value if gradient is None else variable.value - learning_rate * gradient
                for variable, gradient in zip(backbone_variables, gradients)
            ]
            # Training-mode pass with the fast weights; its moving statistics are dropped.
            meta_outputs, _ = self.backbone.stateless_call(
                fast_weights,
                [variable.value for variable in self.backbone.non_trainable_variables],
                x_meta,
                training=True,
            )
            meta_loss = self._meta_loss(meta_outputs, y_meta)
            scaled_meta_loss = self.meta_optimizer.scale_loss(meta_loss / replicas)
        meta_gradients = meta_tape.gradient(scaled_meta_loss, self.meta_model.trainable_variables)
        return meta_loss, meta_gradients

    def _meta_update(self, train_tape, outputs, labels, x_meta, y_meta):
        meta_loss, meta_gradients = self.meta_gradients(train_tape, outputs, labels, x_meta, y_meta)
        self.meta_optimizer.apply(meta_gradients, self.meta_model.trainable_variables)
        return meta_loss

    def _skip_meta_update(self):
        return ops.zeros((), "float32")

    def fit(self, x=None, y=None, **kwargs):
        for name in ("sample_weight", "class_weight"):
            if kwargs.get(name) is not None:
                # The meta-model decides each sample's weight; a second weighting would
                # silently change the method.
                raise ValueError(
                    f"CLIDMUModel learns per-sample weights itself and takes no `{name}`. "
                    f"Received: {name} of type {type(kwargs[name]).__name__}"
                )
        replicas = self.distribute_strategy.num_replicas_in_sync
        if self.meta_every > 1 and replicas > 1:
            # The skipped meta update is a tf.cond around the meta optimiser, and a
            # cross-replica synchronisation cannot sit inside a conditional branch.
            raise ValueError(
                "`meta_every` > 1 is not supported under a distribution strategy with more "
                f"than one replica. Received: meta_every={self.meta_every}, "
                f"{replicas} replicas"
            )
        self._check_fit_data(x, y)
        if isinstance(x, tf.data.Dataset):
            # A dataset is shuffled by its pipeline; Keras would only warn about the default.
            kwargs.setdefault("shuffle", False)
        if self.compiled:
            with self.distribute_strategy.scope():
                self.build_optimizers()
        return super().fit(x, y, **kwargs)

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
        """Checks the structure and the first batch of `fit` data before any training."""
        if self.meta_objective == "none" and not isinstance(x, tf.data.Dataset):
            if y is not None:
                self._check_labels(np.asarray(y), "y")
            return
        if not isinstance(x, tf.data.Dataset):
            raise ValueError(
                f"With meta_objective={self.meta_objective!r}, `fit` reads a tf.data.Dataset "
                f"whose elements are {self._expected_structure()} (see "
                "clidmu_tf.pipelines.make_training_data). Received: x of type "
                f"{type(x).__name__}"
            )
        try:
            first = next(iter(x.take(1)))
        except StopIteration:
            raise ValueError("Received an empty dataset: `fit` needs at least one batch.")
        try:
            batch_x, labels, x_meta, y_meta = self._unpack(first)
        except (TypeError, ValueError):
            raise ValueError(
                f"With meta_objective={self.meta_objective!r}, each element of the dataset must "
                f"be {self._expected_structure()}. Received an element with structure "
                f"{tf.nest.map_structure(lambda t: tuple(t.shape), first)}"
            )
        if len(labels.shape) > 1 and not (len(labels.shape) == 2 and labels.shape[1] == 1):
            raise ValueError(
                "Labels must be integer class ids of shape [batch] (sparse). Received: y.shape="
                f"{tuple(labels.shape)}"
            )
        if labels.shape[0] != batch_x.shape[0]:
            raise ValueError(
                f"`x` and `y` of a batch must have the same length. Received: x.shape="
                f"{tuple(batch_x.shape)}, y.shape={tuple(labels.shape)}"
            )
        self._check_labels(labels.numpy(), "y")
        if x_meta is not None:
            meta_size = tf.nest.flatten(x_meta)[0].shape[0]
            if self.meta_objective == "clid" and meta_size < 2:
                raise ValueError(
                    "CLID compares the samples of a meta batch with each other and needs at "
                    f"least 2 per batch. Received: meta batch size {meta_size}"
                )
        if y_meta is not None:
            self._check_labels(y_meta.numpy(), "y_meta")

    def _check_labels(self, labels, name):
        labels = labels.reshape(-1)
        if labels.size and (labels.min() < 0 or labels.max() >= self.num_classes):
            raise ValueError(
                f"Labels `{name}` must lie in [0, {self.num_classes}). Received: values from "
                f"{labels.min()} to {labels.max()}"
            )

    def train_step(self, data):
        x, y, x_meta, y_meta = self._unpack(data)
        labels = ops.reshape(ops.cast(y, "int32"), (-1,))
        backbone_variables = self.backbone.trainable_variables
        replicas = tf.distribute.get_strategy().num_replicas_in_sync

        # The one forward pass of the training batch. It updates BatchNorm's moving
        # statistics, which is the real step's update (same weights, same batch).
        with tf.GradientTape(persistent=True) as train_tape:
            outputs = self.backbone(x, training=True)
            regularization = sum(self.backbone.losses) if self.backbone.losses else None

        if self.meta_objective == "none":
            meta_loss, is_meta_step = self._skip_meta_update(), 0.0
        elif self.meta_every == 1:
            meta_loss = self._meta_update(train_tape, outputs, labels, x_meta, y_meta)
            is_meta_step = 1.0
        else:
            is_meta_step = ops.equal(self.optimizer.iterations % self.meta_every, 0)
            meta_loss = ops.cond(
                is_meta_step,
                lambda: self._meta_update(train_tape, outputs, labels, x_meta, y_meta),
                self._skip_meta_update,
            )

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
        # Steps without a meta update do not dilute the mean meta loss.
        self.meta_loss_tracker.update_state(meta_loss, sample_weight=ops.cast(is_meta_step, "float32"))
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
            {name: value for name, value in logs.items() if name != "meta_loss"}
        )

    def predict_step(self, data):
        x, _, _ = keras.utils.unpack_x_y_sample_weight(data)
        return self(x, training=False)

    def per_sample_weights(self, x, y, batch_size=256):
        """How much the meta-model trusts each labelled sample, in inference mode.

        For Meta-Weight-Net, the weight `V(loss)` in (0, 1) before the per-batch
        normalisation; for VRI, the rectifier's mean value at the given label. Low values
        flag samples whose labels are likely wrong.

        Args:
            x: inputs, an array.
            y: integer labels, shape `[N]`.
            batch_size: batch size of the pass.

        Returns:
            A float32 numpy array of shape `[N]`.
        """
        labels = np.asarray(y).reshape(-1).astype("int32")
        if len(labels) != len(x):
            raise ValueError(
                "`x` and `y` must have the same length. Received: "
                f"len(x)={len(x)}, len(y)={len(labels)}"
            )
        check_positive_int("batch_size", batch_size)
        weights = []
        for start in range(0, len(labels), batch_size):
            batch_x = x[start : start + batch_size]
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
