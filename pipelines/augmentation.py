"""A switchable image augmentation policy that runs inside `tf.data`."""

import numbers

from clidmu_tf.validation import check_bool, invalid_value


class Augmentation:
    """Random flip, padded crop, RandAugment and cutout, applied per sample to a batch.

    The stages run in that order, each only when switched on. Randomness is stateless: the
    batch and a seed of shape `[2]` determine the output, so a `tf.data` pipeline that
    draws seeds from `tf.data.Dataset.random(seed=...)` is reproducible and still differs
    from epoch to epoch.

    Named recipes (`Augmentation.from_recipe`):

    - `"none"`: no augmentation (image folders, arrays).
    - `"cifar"`: flip and 4-pixel padded crop, the standard CIFAR training augmentation
      the paper uses.
    - `"cifar_strong"`: `"cifar"` plus RandAugment (2 ops) and a 16-pixel cutout, the
      strong augmentation of the FixMatch-style semi-supervised runs.
    - `"svhn"`: padded crop without flipping (digits must not be mirrored).
    - `"shift"`: shifts of at most one pixel (a 1-pixel padded crop), no flipping: mild
      enough for 8x8 digits, where a 4-pixel crop loses half the image.

    Args:
        flip: bool, mirror left-right with probability 1/2.
        crop_padding: int >= 0, zero-pad by this many pixels and crop back at random.
        rand_augment_ops: int >= 0, the number of RandAugment rounds (0 switches it off).
        cutout_size: int >= 0, the side of the square cutout (0 switches it off).

    Example:

    >>> import tensorflow as tf
    >>> augmentation = Augmentation.from_recipe("cifar")
    >>> images = tf.random.uniform([8, 32, 32, 3])
    >>> augmentation(images, seed=tf.constant([1, 2])).shape
    TensorShape([8, 32, 32, 3])
    """

    RECIPES = {
        "none": {},
        "cifar": {"flip": True, "crop_padding": 4},
        "cifar_strong": {
            "flip": True,
            "crop_padding": 4,
            "rand_augment_ops": 2,
            "cutout_size": 16,
        },
        "svhn": {"crop_padding": 4},
        "shift": {"crop_padding": 1},
    }

    def __init__(self, *, flip=False, crop_padding=0, rand_augment_ops=0, cutout_size=0):
        flip = check_bool("flip", flip)
        for name, value in (
            ("crop_padding", crop_padding),
            ("rand_augment_ops", rand_augment_ops),
            ("cutout_size", cutout_size),
        ):
            if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 0:
                raise invalid_value(name, "a non-negative integer", value)
        self.flip = flip
        self.crop_padding = int(crop_padding)
        self.rand_augment_ops = int(rand_augment_ops)
        self.cutout_size = int(cutout_size)

    @classmethod
    def from_recipe(cls, recipe):
        """Returns the named recipe's augmentation (see the class docstring)."""
        if recipe not in cls.RECIPES:
            raise invalid_value("recipe", f"one of {sorted(cls.RECIPES)}", recipe)
        return cls(**cls.RECIPES[recipe])

    @property
    def is_identity(self):
        return not (self.flip or self.crop_padding or self.rand_augment_ops or self.cutout_size)

    def check_input_shape(self, input_shape):
        """Raises if this augmentation cannot apply to samples of `input_shape`."""
        if self.is_identity:
            return
        if len(input_shape) != 3:
            raise ValueError(
                "Image augmentation needs samples of shape (height, width, channels). "
                f"Received: input_shape={tuple(input_shape)} with {self!r}"
            )
        if self.rand_augment_ops and input_shape[-1] not in (1, 3):
            raise ValueError(
                "RandAugment needs 1 or 3 channels. "
                f"Received: input_shape={tuple(input_shape)}"
            )

    def __call__(self, images, seed):
        # Imported here, not with the module: the recipes and their checks need no
        # TensorFlow, so the command line validates `--augment` before loading it.
        import tensorflow as tf

        from clidmu_tf.pipelines import augment

        flip_seed, crop_seed, rand_augment_seed, cutout_seed = tf.unstack(
            tf.random.experimental.stateless_split(seed, 4)
        )
        if self.flip:
            images = augment.random_flip(images, flip_seed)
        if self.crop_padding:
            images = augment.random_padded_crop(images, self.crop_padding, crop_seed)
        if self.rand_augment_ops:
            images = augment.rand_augment(images, self.rand_augment_ops, rand_augment_seed)
        if self.cutout_size:
            images = augment.cutout(images, self.cutout_size, cutout_seed)
        return images

    def get_config(self):
        return {
            "flip": self.flip,
            "crop_padding": self.crop_padding,
            "rand_augment_ops": self.rand_augment_ops,
            "cutout_size": self.cutout_size,
        }

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    def __eq__(self, other):
        return isinstance(other, Augmentation) and self.get_config() == other.get_config()

    def __hash__(self):
        return hash(tuple(sorted(self.get_config().items())))

    def __repr__(self):
        options = ", ".join(f"{key}={value!r}" for key, value in self.get_config().items())
        return f"Augmentation({options})"
