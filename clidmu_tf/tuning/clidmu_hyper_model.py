import keras
import keras_tuner
import numpy as np
import tensorflow as tf

from clidmu_tf import backbones
from clidmu_tf.backbones.blocks import check_backbone_args
from clidmu_tf.models.clidmu_model import (
    DEFAULT_META_LEARNING_RATES,
    DEFAULT_WEIGHT_NORMALIZATION,
    LABELLED_META_OBJECTIVES,
    META_MODELS,
    VIRTUAL_STEPS,
    CLIDMUModel,
    default_meta_optimizer,
    default_optimizer,
)
from clidmu_tf.tuning.held_out_validation import HeldOutValidation
from clidmu_tf.validation import (
    check_bool,
    check_choice,
    check_positive_float,
    check_positive_int,
    check_virtual_step,
    resolve_weight_normalization,
)

# "ce_clean" needs a clean, labelled meta set held out of training, which a search over the
# noisy training data does not have.
TUNABLE_META_OBJECTIVES = ("clid", "ce_noisy", "mae_noisy", "none")

# The widths of each backbone at `width_multiplier=1`, and how a multiplier reaches them.
BACKBONE_BUILDERS = {
    "mlp": lambda shape, classes, scale: backbones.mlp(
        shape, classes, hidden_units=_scaled((256, 128), scale)
    ),
    "small_cnn": lambda shape, classes, scale: backbones.small_cnn(
        shape, classes, widths=_scaled((32, 64, 128), scale)
    ),
    "resnet32": lambda shape, classes, scale: backbones.resnet32(
        shape, classes, widths=_scaled((16, 32, 64), scale)
    ),
    "preact_resnet18": lambda shape, classes, scale: backbones.preact_resnet18(
        shape, classes, widths=_scaled((64, 128, 256, 512), scale)
    ),
    # WRN-28-10, the paper's CIFAR backbone; the multiplier scales the widening factor.
    "wide_resnet": lambda shape, classes, scale: backbones.wide_resnet(
        28, max(1, round(10 * scale)), shape, classes
    ),
}

# The paper's classifier learning rate per meta-model. The meta learning rates default to
# the library's (`DEFAULT_META_LEARNING_RATES`; the paper's Meta-Weight-Net runs used 1e-5,
# tuned for 100 CIFAR epochs).
DEFAULT_LEARNING_RATES = {"wnet": 0.05, "vri": 0.02}
META_SIZES = (100, 250, 500, 1000, 2000)
DEFAULT_META_SIZE = 1000
BATCH_SIZES = (32, 64, 100, 128, 256)
DEFAULT_BATCH_SIZE = 100


def _scaled(widths, scale):
    return tuple(max(1, round(width * scale)) for width in widths)


class CLIDMUHyperModel(keras_tuner.HyperModel):
    """A keras-tuner search space of `CLIDMUModel`s, built to be ranked without clean labels.

    `build(hp)` returns a compiled `CLIDMUModel`; `fit(hp, model, x, y, ...)` takes the noisy
    training data, arrays or a `tf.data.Dataset` of `(x, y)` batches, and builds the
    `((x, y), x_meta)` stream itself: the meta set is a seeded random subset of `meta_size`
    training inputs (they stay in training; their labels are not read with
    `meta_objective="clid"`).

    Search space (name, range, default: the paper's value unless noted):

    - `backbone`: the names in `backbone` (only when several are given).
    - `width_multiplier`: 0.25, 0.5, 1, 2; default 1 (the backbone's standard widths).
    - `learning_rate`: 1e-3 to 0.2, log; default 0.05 (0.02 with VRI). Classifier SGD with
      momentum 0.9 and weight decay 5e-3 (the Keras equivalent of the paper's 5e-4).
    - `batch_size` (array training data only; a dataset's batches are its own): 32, 64,
      100, 128, 256; default 100. Meta batches have the same size (capped by the meta set),
      as in the paper. Defined in `fit`, where the data is known.
    - `meta_learning_rate` (not with `"none"`): 1e-5 to 0.1, log; default 1e-3, the
      library's default (Adam; 1e-2 with VRI). The paper's Meta-Weight-Net used SGD 1e-5,
      which on short runs leaves the meta-model at its initialisation.
    - `meta_size` (not with `"none"`): 100, 250, 500, 1000, 2000; default 1000. Capped by
      the number of training samples.
    - `meta_every` (not with `"none"`): 1, 2, 5; default 1.
    - `temperature` (`"clid"` only): 0.1 to 1.5; default 0.5.

    Restrict or fix the space the keras-tuner way: pass `hyperparameters=` (for example
    `hp.Fixed("temperature", 0.5)`) with `tune_new_entries=False` to the tuner. Subclasses
    can override `build_backbone(hp)` to search their own architectures.

    Validation: `fit` turns `validation_data` into a `HeldOutValidation` callback, so the
    logs hold `val_clid` (labels unused), and with labels `val_loss` and `val_accuracy`.
    CLID's value depends on its temperature and batch composition, so every trial is scored
    at `validation_temperature` in batches of `validation_batch_size`, whatever temperature
    and batch size it trains with; Keras's built-in validation would score each trial on
    its own scale. Use `keras_tuner.Objective("val_clid", "min")` to select without labels.

    Training that diverges (a non-finite loss) stops and the trial is reported as failed
    (`keras_tuner.errors.FailedTrialError`), so it cannot be selected; keras-tuner ends a
    search after 3 failed trials in a row (`max_consecutive_failed_trials`).

    Args:
        input_shape: shape of one input sample.
        num_classes: number of classes.
        backbone: a name among `"mlp"`, `"small_cnn"`, `"resnet32"`, `"preact_resnet18"`,
            `"wide_resnet"`, or a list of names to search over (the first is the default).
        meta_model: `"wnet"` (Meta-Weight-Net, default) or `"vri"`.
        meta_objective: `"clid"` (default), or a baseline that needs no clean data:
            `"ce_noisy"`, `"mae_noisy"` (meta batches with their noisy labels) or `"none"`
            (plain cross-entropy).
        validation_temperature: the temperature `val_clid` is computed at for every trial.
        validation_batch_size: the batch size `val_clid` is computed over for every trial.
        unlabeled_inputs: None, or an array `[U, *input_shape]` of unlabelled inputs
            (semi-supervised training): the meta set is drawn from them instead of from the
            training inputs. Only with `"clid"` and `"none"`, which read no meta labels.
        seed: non-negative int or None. Seeds the meta-set choice, the shuffling and, at
            each `build`, Keras's global random state, so that trials start from the same
            initialisation and differ by their hyperparameters only.
        name: name of the hypermodel.
        tunable: whether the hyperparameters defined here join the search space (see
            `keras_tuner.HyperModel`).
        virtual_step: `"full"` (the paper's) or `"head"` (the cheaper head-only virtual step,
            see `CLIDMUModel`), the same for every trial (not searched); `"head"` needs a
            meta objective other than `"none"`.
        weight_normalization: `"batch"`, `"class"` or None, as `CLIDMUModel`'s, the same
            for every trial (not searched); refused with VRI and `meta_objective="none"`.

    Raises:
        ValueError: for an invalid shape, class count, backbone, meta-model, meta objective,
            virtual step (`"head"` with `meta_objective="none"` included), weight
            normalisation, validation setting or seed.

    Example:

    >>> import tempfile
    >>> import keras_tuner
    >>> import numpy as np
    >>> x = np.random.rand(120, 8, 8, 1).astype("float32")
    >>> y = np.random.randint(0, 10, 120)
    >>> hypermodel = CLIDMUHyperModel((8, 8, 1), 10, seed=0)
    >>> tuner = keras_tuner.RandomSearch(
    ...     hypermodel, objective=keras_tuner.Objective("val_clid", "min"),
    ...     max_trials=2, directory=tempfile.mkdtemp())
    >>> tuner.search(x[:80], y[:80], validation_data=(x[80:], y[80:]), epochs=1, verbose=0)
    >>> tuner.get_best_models()[0].predict(x, verbose=0).shape
    (120, 10)

    With `tf.data` (the batch size is then the dataset's):

    >>> import tensorflow as tf
    >>> train = tf.data.Dataset.from_tensor_slices((x[:80], y[:80])).batch(20)
    >>> val = tf.data.Dataset.from_tensor_slices((x[80:], y[80:])).batch(20)
    >>> tuner = keras_tuner.RandomSearch(
    ...     hypermodel, objective=keras_tuner.Objective("val_clid", "min"),
    ...     max_trials=1, directory=tempfile.mkdtemp())
    >>> tuner.search(train, validation_data=val, epochs=1, verbose=0)
    >>> "batch_size" in tuner.get_best_hyperparameters()[0].values
    False

    Reference:
        Hu et al., "CLID-MU: Cross-Layer Information Divergence Based Meta Update Strategy
        for Learning with Noisy Labels", KDD 2025.
    """

    def __init__(
        self,
        input_shape,
        num_classes,
        backbone="mlp",
        meta_model="wnet",
        meta_objective="clid",
        validation_temperature=0.5,
        validation_batch_size=100,
        unlabeled_inputs=None,
        seed=None,
        name=None,
        tunable=True,
        virtual_step="full",
        weight_normalization=None,
    ):
        self.input_shape = check_backbone_args(input_shape, num_classes)
        self.num_classes = num_classes
        self.backbones = _check_backbones(backbone)
        self.meta_model = check_choice("meta_model", meta_model, META_MODELS)
        self.meta_objective = check_choice(
            "meta_objective", meta_objective, TUNABLE_META_OBJECTIVES
        )
        self.validation_temperature = check_positive_float(
            "validation_temperature", validation_temperature
        )
        self.validation_batch_size = check_positive_int(
            "validation_batch_size", validation_batch_size
        )
        if seed is not None and (
            isinstance(seed, bool) or not isinstance(seed, int) or seed < 0
        ):
            raise ValueError(
                "Received an invalid value for `seed`, expected a non-negative int or None. "
                f"Received: seed={seed!r}"
            )
        if unlabeled_inputs is not None:
            if self.meta_objective not in ("clid", "none"):
                raise ValueError(
                    "Unlabelled inputs feed the meta set, so the meta objective must read no "
                    f"labels: 'clid' or 'none'. Received: meta_objective={meta_objective!r}"
                )
            unlabeled_inputs = np.asarray(unlabeled_inputs, dtype=np.float32)
            if unlabeled_inputs.shape[1:] != self.input_shape or len(unlabeled_inputs) < 2:
                raise ValueError(
                    "Received an invalid value for `unlabeled_inputs`, expected an array of at "
                    f"least 2 samples of shape {self.input_shape}. Received: unlabeled_inputs of "
                    f"shape {unlabeled_inputs.shape}"
                )
        self.unlabeled_inputs = unlabeled_inputs
        self.virtual_step = check_virtual_step(
            check_choice("virtual_step", virtual_step, VIRTUAL_STEPS), self.meta_objective
        )
        self.weight_normalization = resolve_weight_normalization(
            weight_normalization,
            DEFAULT_WEIGHT_NORMALIZATION,
            self.meta_model == "vri",
            self.meta_objective,
        )
        self.seed = seed
        super().__init__(name=name, tunable=check_bool("tunable", tunable))

    def build_backbone(self, hp):
        """Builds the classifier backbone of one trial.

        Override it to search other architectures: return a Keras model whose output is
        `{"logits": [B, num_classes], "features": [B, D]}`, defining its hyperparameters
        on `hp`.

        Args:
            hp: the trial's `keras_tuner.HyperParameters`.

        Returns:
            A backbone model for `CLIDMUModel`.
        """
        if len(self.backbones) == 1:
            name = hp.Fixed("backbone", self.backbones[0])
        else:
            name = hp.Choice("backbone", list(self.backbones), default=self.backbones[0])
        scale = hp.Choice("width_multiplier", [0.25, 0.5, 1.0, 2.0], default=1.0)
        return BACKBONE_BUILDERS[name](self.input_shape, self.num_classes, scale)

    def _training_hyperparameters(self, hp):
        """Defines (on first use) and returns the training hyperparameters as a dict.

        `build` and `fit` both read them from here, so both see the same definitions.
        """
        values = {
            "learning_rate": hp.Float(
                "learning_rate", 1e-3, 0.2, sampling="log",
                default=DEFAULT_LEARNING_RATES[self.meta_model],
            ),
        }
        if self.meta_objective != "none":
            values["meta_learning_rate"] = hp.Float(
                "meta_learning_rate", 1e-5, 0.1, sampling="log",
                default=DEFAULT_META_LEARNING_RATES[self.meta_model],
            )
            values["meta_size"] = hp.Choice(
                "meta_size", list(META_SIZES), default=DEFAULT_META_SIZE
            )
            values["meta_every"] = hp.Choice("meta_every", [1, 2, 5], default=1)
        if self.meta_objective == "clid":
            values["temperature"] = hp.Float("temperature", 0.1, 1.5, default=0.5)
        return values

    def build(self, hp):
        values = self._training_hyperparameters(hp)
        if self.seed is not None:
            keras.utils.set_random_seed(self.seed)
        model = CLIDMUModel(
            self.build_backbone(hp),
            meta_model=self.meta_model,
            meta_objective=self.meta_objective,
            temperature=values.get("temperature", 0.5),
            meta_every=values.get("meta_every", 1),
            virtual_step=self.virtual_step,
            weight_normalization=self.weight_normalization,
            seed=self.seed,
        )
        optimizer = default_optimizer()
        optimizer.learning_rate = values["learning_rate"]
        meta_optimizer = default_meta_optimizer(model.meta_model)
        if "meta_learning_rate" in values:
            meta_optimizer.learning_rate = values["meta_learning_rate"]
        model.compile(optimizer=optimizer, meta_optimizer=meta_optimizer)
        # With the optimiser variables in place, keras-tuner's checkpoints reload whole,
        # optimiser state included, into the model `get_best_models` rebuilds.
        model.build_optimizers()
        return model

    def fit(
        self, hp, model, x, y=None, validation_data=None, callbacks=None, shuffle=True, **kwargs
    ):
        """Trains one trial's model on noisy training data.

        Args:
            hp: the trial's `keras_tuner.HyperParameters`.
            model: the model `build(hp)` returned.
            x: training inputs, an array of shape `[N, *input_shape]`; or a finite
                `tf.data.Dataset` of `(x, y)` batches (`[B, *input_shape]` inputs, `[B]`
                integer labels), whose batches are used as they come: its batch size is the
                trial's, and the meta set is drawn from one pass over it (without
                `unlabeled_inputs`; with them, only its first batch is read before
                training, for the batch size).
            y: noisy integer training labels, shape `[N]`, with arrays; None with a dataset.
            validation_data: `(x_val, y_val)`, `(x_val, None)` or `x_val` alone, as arrays or
                as a `tf.data.Dataset` of such batches: scored after each epoch as `val_clid`
                (and `val_loss`, `val_accuracy` with labels).
            callbacks: Keras callbacks; keras-tuner passes its own here too.
            shuffle: with arrays, whether to reshuffle them each epoch (seeded); a dataset
                keeps its own order, as in `keras.Model.fit`.
            **kwargs: forwarded to `model.fit` (`epochs`, `verbose`, ...). The batch size is
                the `batch_size` hyperparameter or the dataset's, so `batch_size` is not
                accepted here.

        Returns:
            The `History` of `model.fit`.

        Raises:
            keras_tuner.errors.FatalValueError: (a `ValueError`, which stops the search) for
                inputs that do not match the hypermodel (a dataset of anything but `(x, y)`
                batches included) or arguments it does not take.
            keras_tuner.errors.FailedTrialError: when the training loss becomes non-finite.
        """
        for name in ("batch_size", "validation_split", "validation_batch_size", "sample_weight"):
            if name in kwargs:
                raise keras_tuner.errors.FatalValueError(
                    f"`CLIDMUHyperModel.fit` does not take `{name}`: the batch size is the "
                    "`batch_size` hyperparameter (fix it with `hp.Fixed`) and validation data "
                    f"go in `validation_data`. Received: {name}={kwargs[name]!r}"
                )
        try:
            shuffle = check_bool("shuffle", shuffle)
        except ValueError as error:
            raise keras_tuner.errors.FatalValueError(str(error)) from None
        values = self._training_hyperparameters(hp)
        if isinstance(x, tf.data.Dataset):
            if y is not None:
                raise keras_tuner.errors.FatalValueError(
                    "Received a tf.data.Dataset as `x` and labels as `y`: the dataset's "
                    "batches must hold the labels, as `(x, y)` pairs. Pass y=None."
                )
            stream = self._dataset_stream(values, self._check_dataset(x))
        else:
            if y is None:
                raise keras_tuner.errors.FatalValueError(
                    "`CLIDMUHyperModel.fit` needs the noisy training labels: pass arrays `x` "
                    "and `y`, or a tf.data.Dataset of `(x, y)` batches as `x`. Received: y=None"
                )
            x, y = self._check_arrays("x", x, "y", y)
            batch_size = hp.Choice("batch_size", list(BATCH_SIZES), default=DEFAULT_BATCH_SIZE)
            stream = self._array_stream(values, batch_size, x, y, shuffle)
        validation = []
        if validation_data is not None:
            x_val, y_val = self._unpack_validation(validation_data)
            validation.append(
                HeldOutValidation(
                    x_val,
                    y_val,
                    prefix="val_",
                    temperature=self.validation_temperature,
                    batch_size=self.validation_batch_size,
                )
            )
        # Validation scores go first, so that keras-tuner's checkpointing and the user's
        # callbacks see them in the logs.
        callbacks = validation + [keras.callbacks.TerminateOnNaN()] + list(callbacks or [])
        history = model.fit(
            stream,
            callbacks=callbacks,
            shuffle=False,
            **kwargs,
        )
        losses = history.history.get("loss", [])
        if not np.all(np.isfinite(losses)):
            raise keras_tuner.errors.FailedTrialError(
                f"Training diverged: the training loss became {losses[-1]} with "
                f"hyperparameters {hp.values}."
            )
        return history

    def _array_stream(self, values, batch_size, x, y, shuffle):
        """The `fit` stream of the model's data contract from training arrays."""
        train = tf.data.Dataset.from_tensor_slices((x, y))
        if shuffle:
            train = train.shuffle(len(x), seed=self.seed)
        train = train.batch(batch_size)
        if self.meta_objective == "none":
            return train.prefetch(tf.data.AUTOTUNE)
        if self.unlabeled_inputs is not None:
            meta = self._meta_stream(self._unlabeled_meta_set(values), None, batch_size)
            return tf.data.Dataset.zip((train, meta)).prefetch(tf.data.AUTOTUNE)
        meta_size = min(values["meta_size"], len(x))
        meta_indices = np.random.default_rng(self.seed).choice(len(x), meta_size, replace=False)
        meta = self._meta_stream(x[meta_indices], y[meta_indices], batch_size)
        return tf.data.Dataset.zip((train, meta)).prefetch(tf.data.AUTOTUNE)

    def _dataset_stream(self, values, train):
        """The `fit` stream of the model's data contract from a dataset of `(x, y)` batches."""
        if self.meta_objective == "none":
            return train.prefetch(tf.data.AUTOTUNE)
        if self.unlabeled_inputs is not None:
            # The meta set comes from the unlabelled inputs: no pass over the training data
            # (decoded from disk, perhaps), only its first batch, for the batch size.
            x_meta, y_meta = self._unlabeled_meta_set(values), None
            first = next(iter(train), None)
            if first is None:
                raise keras_tuner.errors.FatalValueError(
                    "Received an empty tf.data.Dataset as training data."
                )
            batch_size = len(first[0])
        else:
            x_meta, y_meta, batch_size = self._draw_meta_set(train, values["meta_size"])
        meta = self._meta_stream(x_meta, y_meta, batch_size)
        return tf.data.Dataset.zip((train, meta)).prefetch(tf.data.AUTOTUNE)

    def _unlabeled_meta_set(self, values):
        """A seeded uniform random subset of `meta_size` of the unlabelled inputs."""
        pool = self.unlabeled_inputs
        meta_size = min(values["meta_size"], len(pool))
        return pool[np.random.default_rng(self.seed).choice(len(pool), meta_size, replace=False)]

    def _meta_stream(self, x_meta, y_meta, batch_size):
        """Endless meta batches of the batch size (capped by the meta set), reshuffled."""
        if self.meta_objective in LABELLED_META_OBJECTIVES:
            meta = tf.data.Dataset.from_tensor_slices((x_meta, y_meta))
        else:
            meta = tf.data.Dataset.from_tensor_slices(x_meta)
        # Whole meta batches only: CLID compares the samples of a batch, and a constant
        # shape keeps the meta step from being traced twice.
        return (
            meta.shuffle(len(x_meta), seed=self.seed)
            .repeat()
            .batch(min(batch_size, len(x_meta)), drop_remainder=True)
        )

    def _draw_meta_set(self, train, meta_size):
        """A seeded uniform random subset of `meta_size` samples of a dataset, in one pass.

        Reservoir sampling (Vitter's algorithm R): the dataset's length need not be known,
        and only the subset is held in memory.

        Returns:
            `(x_meta, y_meta, batch_size)`: the subset's inputs and labels (all samples when
            the dataset holds fewer), and the dataset's largest batch, the meta batch size.
        """
        rng = np.random.default_rng(self.seed)
        x_meta = y_meta = None
        seen = batch_size = 0
        for x_batch, y_batch in train.as_numpy_iterator():
            batch_size = max(batch_size, len(x_batch))
            if x_meta is None:
                x_meta = np.empty((meta_size, *x_batch.shape[1:]), x_batch.dtype)
                y_meta = np.empty((meta_size,), y_batch.dtype)
            # Sample number `seen + i` replaces a uniformly drawn slot when that slot is
            # below `meta_size`; the first `meta_size` samples fill the slots in order.
            positions = seen + np.arange(len(x_batch))
            slots = np.where(positions < meta_size, positions, rng.integers(0, positions + 1))
            for i in np.flatnonzero(slots < meta_size):
                x_meta[slots[i]], y_meta[slots[i]] = x_batch[i], y_batch[i]
            seen += len(x_batch)
        if not seen:
            raise keras_tuner.errors.FatalValueError(
                "Received an empty tf.data.Dataset as training data."
            )
        kept = min(seen, meta_size)
        return x_meta[:kept], y_meta[:kept], batch_size

    def _check_dataset(self, dataset):
        """Checks that `dataset` yields finite `(x, y)` batches that fit the hypermodel."""
        spec = dataset.element_spec
        expected_x = tf.TensorShape([None, *self.input_shape])
        if not (
            isinstance(spec, tuple)
            and len(spec) == 2
            and all(isinstance(part, tf.TensorSpec) for part in spec)
            and expected_x.is_compatible_with(spec[0].shape)
            and spec[1].shape.is_compatible_with([None])
            and spec[1].dtype.is_integer
        ):
            raise keras_tuner.errors.FatalValueError(
                "Received an invalid value for `x`, expected a tf.data.Dataset of `(x, y)` "
                f"batches: inputs of shape [B, {', '.join(map(str, self.input_shape))}] (the "
                "hypermodel's `input_shape`) and integer labels of shape [B], for example "
                "`tf.data.Dataset.from_tensor_slices((x, y)).batch(100)`; the hypermodel "
                "builds the meta stream itself. Received: a dataset of "
                f"element_spec={spec}"
            )
        if dataset.cardinality() == tf.data.INFINITE_CARDINALITY:
            raise keras_tuner.errors.FatalValueError(
                "Received an infinite tf.data.Dataset as training data: the meta set is drawn "
                "from one pass over it, and an epoch is one pass. Pass it without `.repeat()`."
            )
        return dataset

    def _unpack_validation(self, validation_data):
        if isinstance(validation_data, tf.data.Dataset):
            validation_data = dataset_arrays("validation_data", validation_data)
        if isinstance(validation_data, (tuple, list)):
            if len(validation_data) != 2:
                raise keras_tuner.errors.FatalValueError(
                    "Received an invalid value for `validation_data`, expected `(x_val, "
                    "y_val)`, `(x_val, None)` or `x_val`. Received: a sequence of "
                    f"{len(validation_data)} items"
                )
            x_val, y_val = validation_data
        else:
            x_val, y_val = validation_data, None
        return self._check_arrays("x_val", x_val, "y_val", y_val)

    def _check_arrays(self, x_name, x, y_name, y):
        """Checks inputs against the hypermodel; returns them as NumPy arrays."""
        x = np.asarray(x)
        if x.shape[1:] != self.input_shape:
            raise keras_tuner.errors.FatalValueError(
                f"Received an invalid value for `{x_name}`, expected an array of shape "
                f"[N, {', '.join(map(str, self.input_shape))}] (the hypermodel's "
                f"`input_shape`). Received: {x_name} of shape {x.shape}"
            )
        if y is None:
            return x, None
        y = np.asarray(y)
        if y.ndim != 1 or len(y) != len(x) or not np.issubdtype(y.dtype, np.integer):
            raise keras_tuner.errors.FatalValueError(
                f"Received an invalid value for `{y_name}`, expected integer labels of "
                f"shape [{len(x)}] (one per sample of `{x_name}`). Received: {y_name} of "
                f"shape {y.shape} and dtype {y.dtype}"
            )
        if y.size and (y.min() < 0 or y.max() >= self.num_classes):
            raise keras_tuner.errors.FatalValueError(
                f"Received an invalid value for `{y_name}`, expected class ids in "
                f"[0, {self.num_classes}). Received: {y_name} with values in "
                f"[{y.min()}, {y.max()}]"
            )
        return x, y.astype("int32")


def _check_backbones(backbone):
    names = [backbone] if isinstance(backbone, str) else backbone
    if (
        not isinstance(names, (list, tuple))
        or not names
        or any(name not in BACKBONE_BUILDERS for name in names)
    ):
        raise ValueError(
            "Received an invalid value for `backbone`, expected one of "
            f"{sorted(BACKBONE_BUILDERS)} or a non-empty list of them. Received: "
            f"backbone={backbone!r}"
        )
    return tuple(names)


def dataset_arrays(name, dataset):
    """The batches of a finite dataset of `x` or `(x, y)` batches, joined into arrays.

    Returns:
        `x` or `(x, y)` as NumPy arrays, as the dataset's elements are.

    Raises:
        keras_tuner.errors.FatalValueError: for an infinite or empty dataset, or elements of
            another structure.
    """
    spec = dataset.element_spec
    pairs = isinstance(spec, tuple) and len(spec) == 2
    if not (pairs or isinstance(spec, tf.TensorSpec)):
        raise keras_tuner.errors.FatalValueError(
            f"Received an invalid value for `{name}`, expected a tf.data.Dataset of `x` or "
            f"`(x, y)` batches. Received: a dataset of element_spec={spec}"
        )
    if dataset.cardinality() == tf.data.INFINITE_CARDINALITY:
        raise keras_tuner.errors.FatalValueError(
            f"Received an infinite tf.data.Dataset as `{name}`; pass it without `.repeat()`."
        )
    batches = list(dataset.as_numpy_iterator())
    if not batches:
        raise keras_tuner.errors.FatalValueError(f"Received an empty tf.data.Dataset as `{name}`.")
    if pairs:
        return tuple(np.concatenate(part) for part in zip(*batches))
    return np.concatenate(batches)
