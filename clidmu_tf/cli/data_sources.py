"""What the command line's `--dataset` can name, checked cheaply and loaded on demand."""

import os

NPZ_SUFFIX = ".npz"


def dataset_choices():
    """The dataset names the command line accepts, with a one-line description of each."""
    from clidmu_tf.pipelines import list_datasets

    return list_datasets()


def describe_dataset_kinds():
    """One line that lists every form `--dataset` accepts, for help texts and errors."""
    return (
        f"one of {sorted(dataset_choices())}, 'tfds:<name>' for another prepared tfds "
        "dataset, a folder holding one sub-folder of images per class, or an .npz file with "
        "arrays x and y (optionally x_test, y_test, class_names)"
    )


def check_dataset_argument(dataset, data_dir=None):
    """Checks a `--dataset` value without loading anything.

    Args:
        dataset: the value of `--dataset`.
        data_dir: the value of `--data-dir` (the tfds data directory), or None.

    Returns:
        The kind of source: `"registry"`, `"tfds"`, `"folder"` or `"npz"`.

    Raises:
        ValueError: for a value that names none of them, or a `--data-dir` that does not
            exist; the message lists what is accepted.
    """
    if data_dir is not None and not os.path.isdir(data_dir):
        raise ValueError(
            f"Received an invalid value for `--data-dir`, expected an existing directory (the "
            f"tfds data directory). Received: --data-dir={data_dir!r}"
        )
    if dataset in dataset_choices():
        return "registry"
    if dataset.startswith("tfds:") and len(dataset) > len("tfds:"):
        return "tfds"
    if os.path.isdir(dataset):
        return "folder"
    if dataset.endswith(NPZ_SUFFIX):
        if not os.path.isfile(dataset):
            raise ValueError(f"The dataset file {dataset!r} does not exist.")
        return "npz"
    raise ValueError(
        "Received an invalid value for `--dataset`, expected "
        f"{describe_dataset_kinds()}. Received: --dataset={dataset!r}"
    )


def load_source_dataset(dataset, *, data_dir=None, image_size=None, label_file=None, stream=True):
    """Loads what a `--dataset` value names.

    Args:
        dataset: a registry name, `"tfds:<name>"`, a folder of class folders or an `.npz`.
        data_dir: the tfds data directory, or None for tfds's default.
        image_size: `(height, width)` to resize folder images to, or None.
        label_file: the CIFAR-N label file for `cifar10_n` / `cifar100_n`, or None.
        stream: whether a folder or a tfds image dataset (CIFAR-N included) is decoded as
            it is used (`stream_image_folder`, `load_dataset(stream=True)`) rather than
            loaded whole; both give the same data.

    Sources without a test split get the pipelines' default held-out split (seed 0), the same
    whatever the training seed, so that runs with different seeds are scored on one test set.

    Returns:
        A `StreamedDataset` for a folder or a tfds image dataset with `stream`, else an
        `InMemoryDataset`.

    Raises:
        ValueError: for an unknown source or a malformed file.
        FileNotFoundError: for a tfds dataset that is not prepared (the message says how to
            prepare it).
    """
    from clidmu_tf import pipelines

    kind = check_dataset_argument(dataset, data_dir)
    if kind in ("registry", "tfds"):
        options = {"label_file": label_file} if label_file is not None else {}
        return pipelines.load_dataset(dataset, data_dir=data_dir, stream=stream, **options)
    if label_file is not None:
        raise ValueError(
            "`--label-file` applies to cifar10_n and cifar100_n only. Received: "
            f"--dataset={dataset!r}"
        )
    if kind == "folder":
        loader = pipelines.stream_image_folder if stream else pipelines.load_image_folder
        return loader(dataset, image_size=image_size)
    return _load_npz(dataset, image_size=image_size)


def stored_dtype(dataset):
    """The dtype a dataset's inputs are stored in (uint8 for image files read from disk)."""
    import numpy as np

    from clidmu_tf.pipelines import StreamedDataset

    return np.dtype(np.uint8) if isinstance(dataset, StreamedDataset) else dataset.x_train.dtype


def load_unlabeled_like(dataset, directory, dataset_argument):
    """The images of `--unlabeled-dir` at the size and colour of `dataset`'s images.

    Args:
        dataset: the loaded `InMemoryDataset` of `--dataset`.
        directory: the `--unlabeled-dir` folder.
        dataset_argument: the `--dataset` value, for the error message.

    Returns:
        A uint8 array `[U, height, width, channels]`.

    Raises:
        ValueError: when `dataset` is not images (uint8, grayscale or RGB), or as
            `load_unlabeled_images` raises.
    """
    import numpy as np

    from clidmu_tf.pipelines import load_unlabeled_images

    shape = dataset.input_shape
    dtype = stored_dtype(dataset)
    if dtype != np.uint8 or len(shape) != 3 or shape[-1] not in (1, 3):
        raise ValueError(
            "--unlabeled-dir adds images, so the dataset must be images (uint8 pixels, "
            f"grayscale or RGB). Received: --dataset={dataset_argument!r} with inputs of shape "
            f"{shape} and dtype {dtype}"
        )
    return load_unlabeled_images(directory, image_size=shape[:2], channels=shape[-1])


def _load_npz(path, *, image_size):
    from clidmu_tf import pipelines
    from clidmu_tf.cli.input_files import read_npz

    contents = read_npz(path)
    missing = [key for key in ("x", "y") if key not in contents]
    if missing:
        raise ValueError(
            f"The dataset file {path!r} must hold arrays named 'x' and 'y' (and optionally "
            f"'x_test', 'y_test', 'class_names'). Missing: {missing}; found: "
            f"{sorted(contents)}"
        )
    class_names = contents.get("class_names")
    try:
        return pipelines.from_arrays(
            contents["x"],
            contents["y"],
            x_test=contents.get("x_test"),
            y_test=contents.get("y_test"),
            num_classes=None if class_names is None else len(class_names),
            class_names=None if class_names is None else [str(name) for name in class_names],
            name=os.path.splitext(os.path.basename(path))[0],
            image_size=image_size,
        )
    except ValueError as error:
        # The library's checks name the array (`y`, `x_test`); say which file it came from.
        raise ValueError(f"The dataset file {path!r}: {error}") from None
