"""tfds datasets read from a prepared `data_dir`, and CIFAR-N human labels.

Nothing here downloads: a dataset that is not prepared fails at once with instructions.

CIFAR-N label files (`CIFAR-10_human.pt`, `CIFAR-100_human.pt`, from
github.com/UCSC-REAL/cifar-10-100n) list one label per training image in the order of the
original CIFAR python batches (`data_batch_1` ... `data_batch_5`). tfds stores the images
in another, shuffled order but keeps each image's original position in its `id` feature
(`"train_16399"`); the labels are aligned through it.
"""

import pathlib

import numpy as np

from clidmu_tf.pipelines.in_memory_dataset import InMemoryDataset
from clidmu_tf.pipelines.splits import stratified_split

CIFAR_N_LABELS = {
    "cifar10_n": ("worse_label", "aggre_label", "random_label1", "random_label2", "random_label3"),
    "cifar100_n": ("noisy_label",),
}
# The key each label file and tfds use for the original CIFAR labels.
_CLEAN_KEYS = ("clean_label", "fine_label")
# tfds cifar100_n calls the human label `noise_label`; the label file calls it `noisy_label`.
_TFDS_FEATURE = {"noisy_label": "noise_label"}
_CIFAR_IMAGES = {"cifar10_n": "cifar10", "cifar100_n": "cifar100"}


def load_tfds(
    tfds_name,
    *,
    data_dir,
    test_fraction,
    seed,
    augmentation="none",
    class_map=None,
    stream=False,
):
    """Reads a prepared tfds image-classification dataset.

    With `stream`, a dataset whose inputs are fixed-size uint8 images (a tfds `Image`
    feature) keeps only the encoded images and the labels in memory, and is decoded in the
    `tf.data` pipeline (a `StreamedDataset`); other datasets, and every dataset without
    `stream`, are read whole into an `InMemoryDataset`. Both give the same labels, splits
    and decoded pixels.
    """
    builder = prepared_builder(tfds_name, data_dir)
    image_key, label_key = builder.info.supervised_keys or ("image", "label")
    splits = builder.info.splits
    if "train" not in splits:
        raise ValueError(
            f"The tfds dataset {tfds_name!r} has no 'train' split. Its splits: {sorted(splits)}"
        )
    features = builder.info.features
    image_feature = features[image_key] if image_key in features.keys() else None
    decoders = _stream_decoders(image_key, image_feature, stream)
    keys = (image_key, label_key)
    train = _read_split(builder, "train", keys, decoders=decoders)
    if "test" in splits:
        test = _read_split(builder, "test", keys, decoders=decoders)
        x_train, y_train = train[image_key], train[label_key]
        x_test, y_test = test[image_key], test[label_key]
    else:
        held_out, kept = stratified_split(
            train[label_key], size=round(test_fraction * len(train[label_key])), seed=seed
        )
        x_train, y_train = train[image_key][kept], train[label_key][kept]
        x_test, y_test = train[image_key][held_out], train[label_key][held_out]
    label_feature = features[label_key]
    return _dataset(
        x_train,
        x_test,
        image_shape=image_feature.shape if decoders else None,
        name=tfds_name,
        y_train=y_train,
        y_test=y_test,
        num_classes=label_feature.num_classes,
        class_names=getattr(label_feature, "names", None),
        augmentation=augmentation,
        class_map=class_map,
    )


def load_cifar_n(
    name, *, data_dir, label_file, human_label, augmentation, class_map, stream=False
):
    """CIFAR-10N / CIFAR-100N: CIFAR images with human noisy labels and the clean ones.

    The images come from the prepared tfds `cifar10_n` / `cifar100_n`, or, with
    `label_file`, from tfds `cifar10` / `cifar100`, the file's labels aligned through each
    image's original position.

    With `stream`, only the encoded images and the labels are held (a `StreamedDataset`,
    decoded in the `tf.data` pipeline), else everything is read into an `InMemoryDataset`.
    Both hold the human labels as `y_train` and the original ones as `y_train_clean`, and
    give the same labels, test split and decoded pixels.
    """
    human_label = human_label or CIFAR_N_LABELS[name][0]
    if label_file is None:
        if human_label not in CIFAR_N_LABELS[name]:
            raise ValueError(
                f"Received an invalid value for `human_label`, expected one of "
                f"{list(CIFAR_N_LABELS[name])}. Received: human_label={human_label!r}"
            )
        builder = prepared_builder(name, data_dir)
        decoders = _stream_decoders("image", builder.info.features["image"], stream)
        feature = _TFDS_FEATURE.get(human_label, human_label)
        train = _read_split(builder, "train", ("image", "label", feature), decoders=decoders)
        noisy, clean, images = train[feature], train["label"], train["image"]
    else:
        file_labels = read_human_labels(label_file)
        if human_label not in file_labels or human_label in _CLEAN_KEYS:
            raise ValueError(
                f"Received an invalid value for `human_label`: the label file has no "
                f"{human_label!r}. Its human labels: "
                f"{sorted(key for key in file_labels if key not in _CLEAN_KEYS)}"
            )
        builder = prepared_builder(_CIFAR_IMAGES[name], data_dir, for_cifar_n=name)
        decoders = _stream_decoders("image", builder.info.features["image"], stream)
        train = _read_split(builder, "train", ("id", "image", "label"), decoders=decoders)
        positions = original_positions(train["id"])
        noisy = align_by_position(file_labels, human_label, positions, label_file)
        clean, images = train["label"], train["image"]
        _check_clean_labels(file_labels, positions, clean, label_file)
    test = _read_split(builder, "test", ("image", "label"), decoders=decoders)
    label_feature = builder.info.features["label"]
    return _dataset(
        images,
        test["image"],
        image_shape=builder.info.features["image"].shape if decoders else None,
        name=name,
        y_train=noisy,
        y_test=test["label"],
        num_classes=label_feature.num_classes,
        class_names=label_feature.names,
        y_train_clean=clean,
        augmentation=augmentation,
        class_map=class_map,
    )


def read_human_labels(path):
    """Reads a CIFAR-N label file into a dict of 1-D int arrays.

    Accepts the released `.pt` files (needs PyTorch), or the same dict saved with
    `np.save` (`.npy`) or `np.savez` (`.npz`). `.pt` and `.npy` files are unpickled: read
    only files you trust.

    Args:
        path: path of the file.

    Returns:
        A dict such as `{"clean_label": ..., "worse_label": ..., "aggre_label": ...}`.

    Raises:
        FileNotFoundError: if the file does not exist.
        ImportError: for a `.pt` file when PyTorch is not installed.
        ValueError: for another format or content that is not a dict of label arrays.
    """
    path = pathlib.Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"The CIFAR-N label file {str(path)!r} does not exist.")
    suffix = path.suffix.lower()
    if suffix == ".pt":
        try:
            import torch
        except ImportError as error:
            raise ImportError(
                f"Reading {path.name} needs PyTorch (`pip install torch`). Or convert it "
                "once elsewhere: `np.save('CIFAR-10_human.npy', torch.load(path))`, and pass "
                "the .npy file."
            ) from error
        content = torch.load(path, map_location="cpu", weights_only=False)
    elif suffix == ".npy":
        content = np.load(path, allow_pickle=True)
        content = content.item() if content.dtype == object and content.shape == () else content
    elif suffix == ".npz":
        with np.load(path) as archive:
            content = {key: archive[key] for key in archive.files}
    else:
        raise ValueError(
            f"Received an invalid value for `label_file`, expected a .pt, .npy or .npz "
            f"file. Received: label_file={str(path)!r}"
        )
    if not isinstance(content, dict) or not content:
        raise ValueError(
            f"The CIFAR-N label file {str(path)!r} must hold a dict of label arrays. "
            f"Received: {type(content).__name__}"
        )
    labels = {}
    for key, values in content.items():
        array = np.asarray(values.numpy() if hasattr(values, "numpy") else values)
        if array.ndim == 1 and np.issubdtype(array.dtype, np.integer):
            labels[str(key)] = array.astype(np.int64)
    return labels


def original_positions(ids):
    """Parses tfds CIFAR ids (`b"train_16399"`) into original positions (16399)."""
    positions = np.array(
        [int((i.decode() if isinstance(i, bytes) else str(i)).rsplit("_", 1)[1]) for i in ids]
    )
    if len(np.unique(positions)) != len(positions):
        raise ValueError("The tfds image ids repeat: the images cannot be aligned with labels.")
    return positions


def align_by_position(file_labels, key, positions, label_file):
    """Picks the label file's `key` labels at the images' original positions."""
    labels = file_labels[key]
    if positions.max(initial=-1) >= len(labels):
        raise ValueError(
            f"The label file {str(label_file)!r} has {len(labels)} labels, but the images "
            f"reach original position {positions.max()}: the file belongs to another dataset."
        )
    return labels[positions]


def prepared_builder(tfds_name, data_dir, *, for_cifar_n=None):
    """Returns the tfds builder of a dataset prepared in `data_dir`, or raises at once."""
    import tensorflow_datasets as tfds

    try:
        builder = tfds.builder(tfds_name, data_dir=data_dir)
    except tfds.core.DatasetNotFoundError as error:
        raise ValueError(f"tfds has no dataset named {tfds_name!r}.") from error
    if builder.is_prepared():
        return builder
    where = "tfds's default data_dir" if data_dir is None else f"data_dir={str(data_dir)!r}"
    target = "" if data_dir is None else f" --data_dir {data_dir}"
    if tfds_name in CIFAR_N_LABELS:
        how = (
            f"tfds builds {tfds_name} from label files you download by hand: see "
            "github.com/UCSC-REAL/cifar-10-100n and tfds's manual-download instructions for "
            f"{tfds_name}, then `tfds build {tfds_name}{target} --manual_dir <files>` on a "
            "machine with network access. Or pass `label_file=` (CIFAR-10_human.pt / .npy) "
            f"with a prepared {_CIFAR_IMAGES[tfds_name]}."
        )
    else:
        how = (
            f"Prepare it on a machine with network access with `tfds build "
            f"{tfds_name}{target}` (or `tfds.builder({tfds_name!r}, data_dir=...)"
            ".download_and_prepare()`) and copy the folder here."
        )
    needed_by = f" (needed by {for_cifar_n} with a label file)" if for_cifar_n else ""
    raise FileNotFoundError(
        f"The tfds dataset {tfds_name!r}{needed_by} is not prepared in {where} (looked in "
        f"{builder.data_dir}). clidmu_tf never downloads. {how}"
    )


def _dataset(x_train, x_test, *, image_shape, **fields):
    """A `StreamedDataset` of the encoded images `x_train` / `x_test` when `image_shape`
    (their decoded shape) is given, else an `InMemoryDataset` of the decoded ones."""
    if image_shape is None:
        return InMemoryDataset(x_train=x_train, x_test=x_test, **fields)
    # Imported here: it loads TensorFlow, which the command line loads only once the
    # arguments are checked.
    from clidmu_tf.pipelines.streamed_dataset import StreamedDataset

    return StreamedDataset(
        train_files=x_train, test_files=x_test, image_shape=image_shape, encoded=True, **fields
    )


def _stream_decoders(image_key, image_feature, stream):
    """The tfds decoders that leave the `image_key` images encoded, for `stream` and images
    `decode_images` decodes as tfds does; else None (tfds decodes everything)."""
    import tensorflow_datasets as tfds

    if not (stream and _streamable(image_feature)):
        return None
    return {image_key: tfds.decode.SkipDecoding()}


def _streamable(image_feature):
    """Whether a tfds feature is fixed-size uint8 grayscale or RGB images, which
    `decode_images` decodes as tfds does."""
    import tensorflow_datasets as tfds

    if not isinstance(image_feature, tfds.features.Image):
        return False
    shape = image_feature.shape
    return (
        image_feature.np_dtype == np.uint8
        and len(shape) == 3
        and None not in shape
        and shape[-1] in (1, 3)
    )


def _read_split(builder, split, keys, decoders=None):
    """The `keys` features of a whole split as arrays; the images stay encoded (an object
    array of bytes) where `decoders` skips their decoding."""
    import tensorflow_datasets as tfds

    dataset = builder.as_dataset(
        split=split, batch_size=-1, shuffle_files=False, decoders=decoders
    )
    arrays = tfds.as_numpy(dataset)
    missing = [key for key in keys if key not in arrays]
    if missing:
        raise ValueError(
            f"The tfds dataset {builder.name!r} has no feature {missing[0]!r}. "
            f"Its features: {sorted(arrays)}"
        )
    return {key: arrays[key] for key in keys}


def _check_clean_labels(file_labels, positions, clean, label_file):
    key = next((key for key in _CLEAN_KEYS if key in file_labels), None)
    if key is None:
        return
    file_clean = align_by_position(file_labels, key, positions, label_file)
    disagree = int(np.sum(file_clean != clean))
    if disagree:
        raise ValueError(
            f"The label file {str(label_file)!r} does not match the images: its {key!r} "
            f"disagrees with the tfds labels on {disagree} of {len(clean)} images."
        )
