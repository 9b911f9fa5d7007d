"""Datasets: offline ones, tfds from a prepared data_dir (built here), CIFAR-N alignment,
image folders and arrays."""

import dataclasses
import socket
import time
from unittest import mock

import numpy as np
import pytest
import tensorflow_datasets as tfds
from PIL import Image
from tensorflow_datasets.image_classification import cifar
from tensorflow_datasets.image_classification.cifar10_n import cifar10_n

from clidmu_tf.cli.data_sources import load_source_dataset
from clidmu_tf.pipelines import InMemoryDataset
from clidmu_tf.pipelines import StreamedDataset
from clidmu_tf.pipelines import from_arrays
from clidmu_tf.pipelines import list_datasets
from clidmu_tf.pipelines import load_dataset
from clidmu_tf.pipelines import load_image_folder
from clidmu_tf.pipelines import make_training_data
from clidmu_tf.pipelines import read_human_labels

NUM_TRAIN, NUM_TEST = 120, 30


def clean_label(position):
    return (position * 7) % 10


def worse_label(position):
    """The human label: wrong for every third image, so some labels are right."""
    return (clean_label(position) + (position % 3 == 0)) % 10


def image_of(position):
    """An image that carries its original position in its pixels."""
    image = np.zeros((32, 32, 3), dtype=np.uint8)
    image[..., 0], image[..., 1] = position % 256, position // 256
    return image


def position_of(images):
    return images[:, 0, 0, 0].astype(int) + 256 * images[:, 0, 0, 1].astype(int)


def fake_cifar10_splits(self, dl_manager):
    def examples(prefix, count):
        for position in range(count):
            yield position, {
                "id": f"{prefix}{position:05d}",
                "image": image_of(position),
                "label": clean_label(position),
            }

    return {"train": examples("train_", NUM_TRAIN), "test": examples("test_", NUM_TEST)}


def fake_cifar10_n_splits(self, dl_manager):
    def examples(prefix, count, train):
        for position in range(count):
            human = worse_label(position) if train else -1
            yield position, {
                "id": f"{prefix}{position:05d}",
                "image": image_of(position),
                "label": clean_label(position),
                "worse_label": human,
                "aggre_label": clean_label(position) if train else -1,
                "random_label1": human,
                "random_label2": human,
                "random_label3": human,
                **{f"worker{i}_id": -1 for i in (1, 2, 3)},
                **{f"worker{i}_time": -1.0 for i in (1, 2, 3)},
            }

    return {
        "train": examples("train_", NUM_TRAIN, True),
        "test": examples("test_", NUM_TEST, False),
    }


def prepare(name, builder_class, split_generators, data_dir):
    """Prepares a tfds dataset from local examples: what `tfds build` leaves on disk."""
    with mock.patch.object(builder_class, "_split_generators", split_generators):
        tfds.builder(name, data_dir=data_dir).download_and_prepare(
            download_config=tfds.download.DownloadConfig(
                compute_stats=tfds.download.ComputeStatsMode.SKIP
            )
        )


@pytest.fixture(scope="module")
def tfds_dir(tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("tfds")
    prepare("cifar10", cifar.Cifar10, fake_cifar10_splits, data_dir)
    prepare("cifar10_n", cifar10_n.Cifar10N, fake_cifar10_n_splits, data_dir)
    return data_dir


@pytest.fixture
def no_network(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("the code tried to open a network connection")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


def write_label_file(path, **overrides):
    positions = np.arange(NUM_TRAIN)
    labels = {
        "clean_label": clean_label(positions),
        "worse_label": worse_label(positions),
        "aggre_label": clean_label(positions),
        "random_label1": (positions + 5) % 10,
        **overrides,
    }
    if path.suffix == ".npz":
        np.savez(path, **labels)
    else:
        np.save(path, labels, allow_pickle=True)
    return path


def test_registry_lists_its_names_and_rejects_unknown_ones():
    names = list_datasets()
    for name in ("digits", "mnist_5k", "cifar10", "cifar100", "cifar10_n", "cifar100_n"):
        assert name in names
    with pytest.raises(ValueError, match=r"Unknown dataset 'cifar11'\. Known datasets: \["):
        load_dataset("cifar11")
    with pytest.raises(ValueError, match="'digits'"):
        load_dataset("imagenet")


def test_digits_offline_split_is_stratified_and_seeded(no_network):
    data = load_dataset("digits")
    assert data.input_shape == (8, 8, 1) and data.num_classes == 10
    assert data.x_train.dtype == np.float32
    assert 0.0 <= data.x_train.min() and data.x_train.max() == 1.0
    assert len(data.y_train) + len(data.y_test) == 1797
    assert len(data.y_test) == round(0.2 * 1797)
    train_share = np.bincount(data.y_train) / np.bincount(np.r_[data.y_train, data.y_test])
    np.testing.assert_allclose(train_share, 0.8, atol=0.01)
    again = load_dataset("digits")
    np.testing.assert_array_equal(again.y_test, data.y_test)
    other = load_dataset("digits", seed=1)
    assert not np.array_equal(other.y_test, data.y_test)
    # Small greyscale digits are augmented with 1-pixel shifts by default.
    assert data.augmentation == "shift"


def test_mnist_5k_ships_real_digits_offline(no_network):
    data = load_dataset("mnist_5k", test_fraction=0.1)
    assert data.input_shape == (28, 28, 1) and data.x_train.dtype == np.uint8
    assert len(data.y_train) == 4500 and len(data.y_test) == 500
    assert np.all(np.bincount(data.y_test) == 50)
    assert data.class_map == "mnist" and data.augmentation == "shift"
    # Real handwriting: the mean "1" has less ink than the mean "0".
    inputs = data.inputs()
    assert inputs.max() == 1.0
    assert inputs[data.y_train == 1].mean() < 0.6 * inputs[data.y_train == 0].mean()


def test_tfds_without_prepared_data_fails_fast_without_network(tmp_path, no_network):
    started = time.perf_counter()
    with pytest.raises(FileNotFoundError) as error:
        load_dataset("cifar10", data_dir=tmp_path)
    assert time.perf_counter() - started < 5
    message = str(error.value)
    assert "'cifar10'" in message and "not prepared" in message
    assert f"tfds build cifar10 --data_dir {tmp_path}" in message
    with pytest.raises(FileNotFoundError, match="UCSC-REAL/cifar-10-100n"):
        load_dataset("cifar10_n", data_dir=tmp_path)
    with pytest.raises(FileNotFoundError, match="needed by cifar100_n with a label file"):
        load_dataset(
            "cifar100_n",
            data_dir=tmp_path,
            label_file=write_label_file(tmp_path / "labels.npy", noisy_label=np.zeros(9, int)),
        )


def test_unknown_tfds_name(tmp_path, no_network):
    with pytest.raises(ValueError, match="tfds has no dataset named 'not_a_dataset'"):
        load_dataset("tfds:not_a_dataset", data_dir=tmp_path)


def test_prepared_tfds_dataset_loads(tfds_dir, no_network):
    data = load_dataset("cifar10", data_dir=tfds_dir)
    assert data.input_shape == (32, 32, 3) and data.x_train.dtype == np.uint8
    assert len(data.y_train) == NUM_TRAIN and len(data.y_test) == NUM_TEST
    np.testing.assert_array_equal(data.y_train, clean_label(position_of(data.x_train)))
    assert data.augmentation == "cifar" and data.class_map == "cifar10"
    assert len(data.class_names) == 10
    generic = load_dataset("tfds:cifar10", data_dir=tfds_dir)
    assert generic.augmentation == "none" and len(generic.y_train) == NUM_TRAIN


@pytest.mark.parametrize("suffix", [".npy", ".npz"])
def test_cifar_n_label_file_is_aligned_through_the_original_positions(
    tfds_dir, tmp_path, suffix, no_network
):
    label_file = write_label_file(tmp_path / f"CIFAR-10_human{suffix}")
    data = load_dataset("cifar10_n", data_dir=tfds_dir, label_file=label_file)
    positions = position_of(data.x_train)
    # tfds stores the images in another order than the label file lists them ...
    assert not np.array_equal(positions, np.arange(NUM_TRAIN))
    # ... and every image still gets the label the file gives its original position.
    np.testing.assert_array_equal(data.y_train, worse_label(positions))
    np.testing.assert_array_equal(data.y_train_clean, clean_label(positions))
    np.testing.assert_array_equal(data.clean_train_labels, data.y_train_clean)
    aggregate = load_dataset(
        "cifar10_n", data_dir=tfds_dir, label_file=label_file, human_label="random_label1"
    )
    np.testing.assert_array_equal(aggregate.y_train, (position_of(aggregate.x_train) + 5) % 10)
    np.testing.assert_array_equal(data.y_test, clean_label(position_of(data.x_test)))


def test_cifar_n_label_file_mismatches_are_caught(tfds_dir, tmp_path):
    wrong_clean = write_label_file(
        tmp_path / "shifted.npy", clean_label=clean_label(np.arange(NUM_TRAIN) + 1)
    )
    with pytest.raises(ValueError, match=r"does not match the images: its 'clean_label'"):
        load_dataset("cifar10_n", data_dir=tfds_dir, label_file=wrong_clean)
    short = write_label_file(
        tmp_path / "short.npy",
        clean_label=np.zeros(10, int),
        worse_label=np.zeros(10, int),
        aggre_label=np.zeros(10, int),
        random_label1=np.zeros(10, int),
    )
    with pytest.raises(ValueError, match="has 10 labels, but the images reach"):
        load_dataset("cifar10_n", data_dir=tfds_dir, label_file=short)
    good = write_label_file(tmp_path / "good.npy")
    with pytest.raises(ValueError, match=r"has no 'worst'\. Its human labels: \['aggre_label'"):
        load_dataset("cifar10_n", data_dir=tfds_dir, label_file=good, human_label="worst")
    (tmp_path / "labels.csv").write_text("0,1")
    with pytest.raises(ValueError, match="expected a .pt, .npy or .npz"):
        load_dataset("cifar10_n", data_dir=tfds_dir, label_file=tmp_path / "labels.csv")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_dataset("cifar10_n", data_dir=tfds_dir, label_file=tmp_path / "missing.npy")
    with pytest.raises(ValueError, match="apply to 'cifar10_n' and 'cifar100_n' only"):
        load_dataset("cifar10", data_dir=tfds_dir, label_file=good)


def test_pt_label_files_need_torch(tmp_path):
    path = tmp_path / "CIFAR-10_human.pt"
    path.write_bytes(b"not really a torch file")
    try:
        import torch  # noqa: F401
    except ImportError:
        with pytest.raises(ImportError, match=r"needs PyTorch \(`pip install torch`\)"):
            read_human_labels(path)
    else:
        pytest.skip("PyTorch is installed")


class TinyShapes(tfds.core.GeneratorBasedBuilder):
    """Grayscale 6x5 images of 3 classes and a train split only, generated here: the test
    split is then held out of it."""

    VERSION = tfds.core.Version("1.0.0")

    def _info(self):
        return self.dataset_info_from_configs(
            features=tfds.features.FeaturesDict(
                {
                    "image": tfds.features.Image(shape=(6, 5, 1)),
                    "label": tfds.features.ClassLabel(num_classes=3),
                }
            ),
            supervised_keys=("image", "label"),
        )

    def _split_generators(self, dl_manager):
        return {"train": self._generate_examples()}

    def _generate_examples(self):
        rng = np.random.default_rng(0)
        for index in range(60):
            pixels = rng.integers(0, 256, (6, 5, 1), dtype=np.uint8)
            yield index, {"image": pixels, "label": index % 3}


@pytest.fixture(scope="module")
def tiny_shapes_dir(tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("tiny_shapes")
    TinyShapes(data_dir=data_dir).download_and_prepare(
        download_config=tfds.download.DownloadConfig(
            compute_stats=tfds.download.ComputeStatsMode.SKIP
        )
    )
    return data_dir


@pytest.mark.parametrize(
    "name, directory, noise",
    [("cifar10", "tfds_dir", "instance"), ("tfds:tiny_shapes", "tiny_shapes_dir", "symmetric")],
)
def test_a_streamed_tfds_dataset_is_the_one_loaded_in_memory(
    name, directory, noise, request, no_network
):
    data_dir = request.getfixturevalue(directory)
    memory = load_dataset(name, data_dir=data_dir, seed=2)
    streamed = load_dataset(name, data_dir=data_dir, seed=2, stream=True)
    assert isinstance(memory, InMemoryDataset) and isinstance(streamed, StreamedDataset)
    # Only the encoded images and the labels are held: no array of decoded pixels.
    assert streamed.encoded and streamed.train_files.dtype == object
    assert all(image[:4] == b"\x89PNG" for image in streamed.train_files)
    for field in dataclasses.fields(streamed):
        value = getattr(streamed, field.name)
        assert not (isinstance(value, np.ndarray) and value.ndim > 1), field.name
    for attribute in ("input_shape", "num_classes", "class_names", "augmentation", "class_map"):
        assert getattr(streamed, attribute) == getattr(memory, attribute), attribute
    np.testing.assert_array_equal(streamed.y_train, memory.y_train)
    np.testing.assert_array_equal(streamed.y_test, memory.y_test)
    np.testing.assert_array_equal(streamed.pixels(), memory.x_train)
    np.testing.assert_array_equal(streamed.pixels(split="test"), memory.x_test)
    options = {"noise": noise, "noise_rate": 0.4, "meta_size": 10, "batch_size": 16, "seed": 3}
    expected = make_training_data(memory, **options)
    got = make_training_data(streamed, **options)
    assert got.noise_report.num_flipped == expected.noise_report.num_flipped > 0
    for field in ("train_indices", "meta_indices", "train_noisy_labels", "meta_inputs"):
        np.testing.assert_array_equal(getattr(got, field), getattr(expected, field), err_msg=field)
    for (x, y), (x_expected, y_expected) in zip(got.evaluation, expected.evaluation, strict=True):
        np.testing.assert_array_equal(x.numpy(), x_expected.numpy())
        np.testing.assert_array_equal(y.numpy(), y_expected.numpy())
    indices = got.train_indices[:20]
    np.testing.assert_array_equal(
        np.concatenate(list(got.input_stream(indices, 8).as_numpy_iterator())),
        memory.inputs(indices),
    )


def test_the_command_line_streams_tfds_images_and_holds_the_rest(
    tfds_dir, cifar_n_label_file, no_network
):
    assert isinstance(load_source_dataset("cifar10", data_dir=str(tfds_dir)), StreamedDataset)
    assert isinstance(
        load_source_dataset("cifar10", data_dir=str(tfds_dir), stream=False), InMemoryDataset
    )
    # CIFAR-N, in both its forms, streams with its clean labels; offline sets stay in memory.
    for options in ({}, {"label_file": str(cifar_n_label_file)}):
        data = load_source_dataset("cifar10_n", data_dir=str(tfds_dir), **options)
        assert isinstance(data, StreamedDataset) and data.y_train_clean is not None, options
        data = load_source_dataset("cifar10_n", data_dir=str(tfds_dir), stream=False, **options)
        assert isinstance(data, InMemoryDataset), options
    assert isinstance(load_source_dataset("digits"), InMemoryDataset)


@pytest.fixture(scope="module")
def cifar_n_label_file(tmp_path_factory):
    return write_label_file(tmp_path_factory.mktemp("cifar_n") / "CIFAR-10_human.npz")


@pytest.mark.parametrize("form", ["tfds cifar10_n", "cifar10 + label file"])
def test_a_streamed_cifar_n_is_the_one_loaded_in_memory(
    form, tfds_dir, cifar_n_label_file, no_network
):
    options = {"data_dir": tfds_dir}
    if form == "cifar10 + label file":
        options["label_file"] = cifar_n_label_file
    memory = load_dataset("cifar10_n", **options)
    streamed = load_dataset("cifar10_n", stream=True, **options)
    assert isinstance(memory, InMemoryDataset) and isinstance(streamed, StreamedDataset)
    # Only the encoded images and the labels are held: no array of decoded pixels.
    assert streamed.encoded and all(image[:4] == b"\x89PNG" for image in streamed.train_files)
    for field in dataclasses.fields(streamed):
        value = getattr(streamed, field.name)
        assert not (isinstance(value, np.ndarray) and value.ndim > 1), field.name
    for attribute in ("input_shape", "num_classes", "class_names", "augmentation", "class_map"):
        assert getattr(streamed, attribute) == getattr(memory, attribute), attribute
    # The human labels train, the original ones stay beside them, aligned with the images.
    positions = position_of(memory.x_train)
    np.testing.assert_array_equal(streamed.y_train, worse_label(positions))
    np.testing.assert_array_equal(streamed.y_train_clean, clean_label(positions))
    for labels in ("y_train", "y_train_clean", "clean_train_labels", "y_test"):
        np.testing.assert_array_equal(
            getattr(streamed, labels), getattr(memory, labels), err_msg=labels
        )
    np.testing.assert_array_equal(streamed.pixels(), memory.x_train)
    np.testing.assert_array_equal(streamed.pixels(split="test"), memory.x_test)
    # The clean labels score the human ones (the noise report) and feed the clean-meta
    # baselines, the same both ways.
    settings = {"meta_size": 10, "batch_size": 16, "seed": 3, "meta_objective": "ce_clean"}
    expected = make_training_data(memory, **settings)
    got = make_training_data(streamed, **settings)
    assert got.noise_report.kind == "observed" and got.noise_report.num_flipped > 0
    assert got.noise_report.to_dict() == expected.noise_report.to_dict()
    for field in ("train_indices", "meta_indices", "train_noisy_labels", "train_clean_labels",
                  "meta_labels", "meta_inputs"):  # fmt: skip
        np.testing.assert_array_equal(getattr(got, field), getattr(expected, field), err_msg=field)
    # Noise injected on top of CIFAR-N corrupts the original labels, both ways.
    injected = {"kind": "symmetric", "rate": 0.4, "seed": 1}
    noisy, report = streamed.corrupt_train_labels(**injected)
    expected_noisy, expected_report = memory.corrupt_train_labels(**injected)
    np.testing.assert_array_equal(noisy, expected_noisy)
    assert report.to_dict() == expected_report.to_dict()
    assert report.num_flipped == np.sum(noisy != memory.y_train_clean) > 0


def test_both_datasets_check_the_clean_labels_alike():
    images = [b"x"] * 4
    common = {"name": "x", "y_train": [0, 1, 0, 1], "y_test": [0, 1], "num_classes": 2}
    streamed = {"train_files": images, "test_files": images[:2], "image_shape": (2, 2, 1),
                "encoded": True, **common}  # fmt: skip
    memory = {"x_train": np.zeros((4, 2)), "x_test": np.zeros((2, 2)), **common}
    for bad, message in (
        ([0, 1, 0], r"`y_train_clean`: .* one per input \(N=4\)"),
        ([0, 1, 0, 2], r"`y_train_clean`, expected class ids in \[0, 2\)"),
        ([[1, 0], [0, 1], [1, 0], [0, 1]], r"`y_train_clean`: .*one-hot"),
    ):
        for dataset, fields in ((StreamedDataset, streamed), (InMemoryDataset, memory)):
            with pytest.raises(ValueError, match=message):
                dataset(y_train_clean=bad, **fields)
    for dataset, fields in ((StreamedDataset, streamed), (InMemoryDataset, memory)):
        data = dataset(y_train_clean=[1, 1, 0, 0], **fields)
        assert data.y_train_clean.dtype == np.int32
        np.testing.assert_array_equal(data.clean_train_labels, [1, 1, 0, 0])
        np.testing.assert_array_equal(dataset(**fields).clean_train_labels, [0, 1, 0, 1])


def test_encoded_images_must_be_bytes_and_are_not_resized():
    options = {"name": "x", "y_train": [0], "y_test": [0], "num_classes": 1,
               "image_shape": (2, 2, 1), "encoded": True}  # fmt: skip
    with pytest.raises(ValueError, match=r"`train_files`, expected encoded image bytes"):
        StreamedDataset(train_files=["a.png"], test_files=[b"x"], **options)
    with pytest.raises(ValueError, match="`resized` applies to files only"):
        StreamedDataset(train_files=[b"x"], test_files=[b"x"], resized=True, **options)


def test_prepared_tfds_cifar10_n_reads_its_human_labels(tfds_dir, no_network):
    data = load_dataset("cifar10_n", data_dir=tfds_dir)
    positions = position_of(data.x_train)
    np.testing.assert_array_equal(data.y_train, worse_label(positions))
    np.testing.assert_array_equal(data.y_train_clean, clean_label(positions))
    aggregate = load_dataset("cifar10_n", data_dir=tfds_dir, human_label="aggre_label")
    np.testing.assert_array_equal(aggregate.y_train, aggregate.y_train_clean)
    with pytest.raises(ValueError, match=r"`human_label`, expected one of \['worse_label'"):
        load_dataset("cifar10_n", data_dir=tfds_dir, human_label="noisy_label")


def write_png(path, size, value, mode="RGB"):
    path.parent.mkdir(parents=True, exist_ok=True)
    channels = 3 if mode == "RGB" else 1
    array = np.full((size[0], size[1], channels), value, dtype=np.uint8).squeeze()
    Image.fromarray(array, mode=None).save(path)


def make_folder(root, sizes=((6, 5),), mode="RGB", per_class=5):
    for label, name in enumerate(["cat", "bird", "ant"]):
        for index in range(per_class):
            size = sizes[index % len(sizes)]
            write_png(root / name / f"{index}.png", size, 40 * label + index, mode)
    (root / "notes.txt").write_text("not an image")
    return root


def test_image_folder_loads_classes_in_sorted_order(tmp_path):
    data = load_image_folder(make_folder(tmp_path / "pets"), test_fraction=0.2)
    assert data.class_names == ("ant", "bird", "cat")
    assert data.input_shape == (6, 5, 3) and data.x_train.dtype == np.uint8
    assert len(data.y_train) == 12 and len(data.y_test) == 3
    assert data.name == "pets"
    # Pixel values identify the folder: "cat" images hold 0..4, "bird" 40..44, "ant" 80..84.
    everything = np.r_[data.y_train, data.y_test]
    pixels = np.r_[data.x_train[:, 0, 0, 0], data.x_test[:, 0, 0, 0]]
    np.testing.assert_array_equal(everything, 2 - pixels // 40)


def test_image_folder_grayscale_resize_and_test_directory(tmp_path):
    make_folder(tmp_path / "train", sizes=((6, 5), (8, 8)), mode="L")
    make_folder(tmp_path / "test", sizes=((9, 9),), mode="L", per_class=2)
    with pytest.raises(ValueError, match=r"mixed sizes.*Pass `image_size=\(height, width\)`"):
        load_image_folder(tmp_path / "train")
    data = load_image_folder(
        tmp_path / "train", image_size=(4, 4), test_directory=tmp_path / "test"
    )
    assert data.input_shape == (4, 4, 1)
    assert len(data.y_train) == 15 and len(data.y_test) == 6
    rgb = load_image_folder(tmp_path / "test", image_size=(4, 4), color_mode="rgb")
    assert rgb.input_shape == (4, 4, 3)


def test_image_folder_errors(tmp_path):
    (tmp_path / "empty" / "cat").mkdir(parents=True)
    with pytest.raises(ValueError, match="Found no images in"):
        load_image_folder(tmp_path / "empty")
    with pytest.raises(ValueError, match="is not a folder"):
        load_image_folder(tmp_path / "missing")
    broken = make_folder(tmp_path / "broken")
    (broken / "cat" / "bad.png").write_bytes(b"garbage")
    with pytest.raises(ValueError, match="Could not read the image"):
        load_image_folder(broken)
    with pytest.raises(ValueError, match="`color_mode`"):
        load_image_folder(broken, color_mode="cmyk")


def test_arrays_split_and_validation():
    x = np.random.default_rng(0).random((100, 3)).astype(np.float32)
    y = np.arange(100) % 4
    data = from_arrays(x, y, test_fraction=0.25, seed=1)
    assert data.num_classes == 4 and len(data.y_test) == 25
    assert np.all(np.bincount(data.y_test) >= 6)
    with pytest.warns(UserWarning, match=r"2 of its 6 classes have no training sample \(4, 5\)"):
        explicit = from_arrays(x, y, x_test=x[:5], y_test=y[:5], num_classes=6)
    assert explicit.num_classes == 6 and len(explicit.y_train) == 100
    with pytest.raises(ValueError, match=r"`x` and `y` must have the same length\. Received: "):
        from_arrays(x, y[:-1])
    with pytest.raises(ValueError, match=r"`y_train`, expected class ids in \[0, 3\)"):
        from_arrays(x, y, num_classes=3)
    with pytest.raises(ValueError, match=r"`test_fraction`, expected a float in \(0, 1\)"):
        from_arrays(x, y, test_fraction=1.0)
    with pytest.raises(ValueError, match="Pass both `x_test` and `y_test`"):
        from_arrays(x, y, x_test=x)
    mixed = [np.zeros((4, 4, 3), np.uint8), np.zeros((5, 4, 3), np.uint8)] * 5
    with pytest.raises(ValueError, match="Received images of mixed sizes"):
        from_arrays(mixed, np.arange(10) % 2)
    resized = from_arrays(mixed, np.arange(10) % 2, image_size=(3, 3), test_fraction=0.2)
    assert resized.input_shape == (3, 3, 3) and resized.x_train.dtype == np.uint8
    with pytest.raises(ValueError, match="empty dataset"):
        from_arrays(np.zeros((0, 3)), np.zeros(0, int))
