"""A labelled image dataset decoded as it is used, with its train and test splits."""

import dataclasses

import numpy as np
import tensorflow as tf

from clidmu_tf.pipelines.labelled_splits import LabelledSplits
from clidmu_tf.validation import (
    check_class_ids,
    invalid_value,
)


@dataclasses.dataclass(frozen=True, eq=False)
class StreamedDataset(LabelledSplits):
    """Images for training and evaluation, decoded only when read.

    The counterpart of `InMemoryDataset` for image data larger than memory once decoded: it
    holds each image still encoded, as a file path (image folders) or as the encoded bytes
    themselves (tfds datasets, `encoded=True`), and the labels; `make_training_data`
    decodes the images inside the `tf.data` pipeline (parallel reads, prefetched).
    A file is decoded and resized exactly as `load_image_folder` does (PIL, then
    `resize_pixels`); encoded bytes exactly as tfds decodes them (`tf.io.decode_image` with
    the channel count of `image_shape`). So the same data and seed give the same noisy
    labels, meta set, test split and inputs as the in-memory path.

    Attributes:
        name: str.
        train_files: array `[N]`, the training images: str paths, or with `encoded` the
            PNG / JPEG bytes (object array of bytes).
        y_train: int32 array `[N]`, their labels as the source gives them (the human
            labels for CIFAR-N).
        test_files: array `[M]`, the evaluation images, as `train_files`.
        y_test: int32 array `[M]`, their (clean) labels.
        num_classes: int.
        image_shape: `(height, width, channels)` of every decoded image, channels 1 or 3.
        resized: bool, whether every image is resized to `image_shape` (as
            `load_image_folder(image_size=...)` does), rather than read at its own size.
            Only for files.
        class_names: tuple of str, or None.
        augmentation: the default augmentation recipe (see `Augmentation.RECIPES`).
        class_map: the `corrupt_labels` asymmetric map for this data, or None.
        y_train_clean: int32 array `[N]`, the true training labels where `y_train` is known
            to be noisy (CIFAR-N), else None (`y_train` is then taken as clean). Only read
            to score label-issue detection and report the real noise rate.
        encoded: bool, whether `train_files` / `test_files` hold encoded image bytes rather
            than paths.

    Raises:
        ValueError: for an `image_shape` that is not `(height, width, 1 or 3)`, labels that
            are not class ids (`y_train_clean` too, one per training image), image and
            label counts that differ, `class_names` that do not name every class, `encoded`
            images that are not bytes, or `resized` with `encoded`.
    """

    name: str
    train_files: np.ndarray
    y_train: np.ndarray
    test_files: np.ndarray
    y_test: np.ndarray
    num_classes: int
    image_shape: tuple
    resized: bool = False
    class_names: tuple | None = None
    augmentation: str = "none"
    class_map: str | dict | None = None
    y_train_clean: np.ndarray | None = None
    encoded: bool = False

    def __post_init__(self):
        if len(self.image_shape) != 3 or self.image_shape[-1] not in (1, 3):
            raise invalid_value("image_shape", "(height, width, 1 or 3)", self.image_shape)
        if self.encoded and self.resized:
            raise ValueError(
                "Encoded images are decoded at their own size: `resized` applies to files "
                "only. Received: encoded=True, resized=True"
            )
        for split in ("train", "test"):
            files = _check_sources(getattr(self, f"{split}_files"), f"{split}_files", self.encoded)
            labels = check_class_ids(
                getattr(self, f"y_{split}"), f"y_{split}", num_classes=self.num_classes
            )
            if len(files) != len(labels):
                raise ValueError(
                    f"`{split}_files` and `y_{split}` must have the same length. Received: "
                    f"{len(files)} and {len(labels)}"
                )
            object.__setattr__(self, f"{split}_files", files)
            object.__setattr__(self, f"y_{split}", labels)
        object.__setattr__(self, "image_shape", tuple(int(side) for side in self.image_shape))
        self._check_metadata()

    @property
    def input_shape(self):
        return self.image_shape

    @property
    def pixel_scale(self):
        """The factor that maps stored pixels (uint8) to model inputs in [0, 1]."""
        return 1.0 / 255.0

    def pixels(self, indices=None, *, split="train"):
        """The uint8 images `[n, *image_shape]` of the `split` samples at `indices` (all by
        default), decoded now."""
        files = self._files(split)
        if indices is not None:
            files = files[np.asarray(indices)]
        if self.encoded:
            return decode_images(tf.constant(files, tf.string), self.image_shape).numpy()
        return read_images(files, self.image_shape, resize=self.resized)

    def inputs(self, indices=None, *, split="train"):
        """Float32 model inputs of the `split` samples at `indices` (all by default)."""
        pixels = self.pixels(indices, split=split)
        return (pixels.astype(np.float32) * np.float32(self.pixel_scale)).astype(np.float32)

    def pixel_reader(self, split="train"):
        """A function for `tf.data`: a batch of indices `[b]` to its uint8 images.

        Files are decoded by PIL in a `tf.numpy_function` (which releases the interpreter
        while PIL decodes), encoded bytes by TensorFlow's decoders; either way
        `map(..., num_parallel_calls=AUTOTUNE)` reads several batches at once.
        """
        files = tf.constant(self._files(split), tf.string)
        shape, resize = self.image_shape, self.resized

        def read(batch_indices):
            images = tf.gather(files, batch_indices)
            if self.encoded:
                return decode_images(images, shape)
            pixels = tf.numpy_function(
                lambda names: read_images(names, shape, resize=resize),
                [images],
                tf.uint8,
                stateful=False,
            )
            pixels.set_shape([None, *shape])
            return pixels

        return read

    def _files(self, split):
        if split not in ("train", "test"):
            raise invalid_value("split", "'train' or 'test'", split)
        return getattr(self, f"{split}_files")

    def __repr__(self):
        return (
            f"StreamedDataset(name={self.name!r}, train={len(self.y_train)}, "
            f"test={len(self.y_test)}, input_shape={self.input_shape}, "
            f"num_classes={self.num_classes})"
        )


def decode_images(encoded, image_shape):
    """Decodes a batch of PNG / JPEG / BMP / GIF bytes into uint8 images, as tfds decodes
    its `Image` features (`tf.io.decode_image` with the channel count of `image_shape`).

    Args:
        encoded: string tensor `[n]`.
        image_shape: `(height, width, channels)` of every image.

    Returns:
        A uint8 tensor `[n, *image_shape]`.

    Raises:
        tf.errors.InvalidArgumentError: for bytes that are no image, or an image of
            another size.
    """
    image_shape = tuple(image_shape)

    def decode(image):
        pixels = tf.io.decode_image(image, channels=image_shape[-1], expand_animations=False)
        return tf.ensure_shape(pixels, image_shape)

    return tf.map_fn(
        decode, encoded, fn_output_signature=tf.TensorSpec(image_shape, tf.uint8)
    )


def _check_sources(sources, name, encoded):
    """The images of one split as an array: str paths, or an object array of bytes."""
    if not encoded:
        return np.asarray(sources, dtype=str)
    array = np.empty(len(sources), dtype=object)
    array[:] = list(sources)
    if not all(isinstance(image, bytes) for image in array):
        kinds = sorted({type(image).__name__ for image in array})
        raise ValueError(
            f"Received an invalid value for `{name}`, expected encoded image bytes (with "
            f"encoded=True). Received: {name} holding items of type {kinds}"
        )
    return array


def read_images(files, image_shape, *, resize):
    """Decodes image files into a uint8 array `[n, *image_shape]`, as `load_image_folder`
    does: PIL, converted to the colour of `image_shape`, and, with `resize`, resized with
    `resize_pixels`.

    Raises:
        ValueError: for an unreadable image, or one of another size without `resize`.
    """
    from PIL import Image

    from clidmu_tf.pipelines.datasets import resize_pixels, to_pixels

    color_mode = "grayscale" if image_shape[-1] == 1 else "rgb"
    images = np.zeros((len(files), *image_shape), np.uint8)
    for position, name in enumerate(files):
        name = name.decode() if isinstance(name, bytes) else str(name)
        try:
            with Image.open(name) as image:
                pixels = to_pixels(image, color_mode)
        except OSError as error:
            raise ValueError(f"Could not read the image {name!r}: {error}") from error
        if resize:
            pixels = resize_pixels(pixels, image_shape[:2])
        if pixels.shape != tuple(image_shape):
            raise ValueError(
                f"The image {name!r} has shape {pixels.shape}, not {tuple(image_shape)} like the "
                "others. Pass `image_size=(height, width)` to resize them."
            )
        images[position] = pixels
    return images
