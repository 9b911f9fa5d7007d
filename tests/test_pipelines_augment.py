"""Augmentation ops: exact geometry, PIL agreement, seeding, recipes, use inside tf.data."""

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image
from PIL import ImageEnhance
from PIL import ImageOps

from clidmu_tf.pipelines import Augmentation
from clidmu_tf.pipelines import augment

SEED = tf.constant([3, 4], tf.int64)


def random_images(batch=64, height=12, width=10, channels=3, seed=0):
    rng = np.random.default_rng(seed)
    return tf.constant(rng.integers(0, 256, (batch, height, width, channels)) / 255.0, tf.float32)


def test_random_flip_mirrors_about_half_of_the_images():
    images = random_images(batch=400)
    flipped = augment.random_flip(images, SEED).numpy()
    original = images.numpy()
    mirrored = np.array([np.array_equal(f, o[:, ::-1]) for f, o in zip(flipped, original)])
    unchanged = np.array([np.array_equal(f, o) for f, o in zip(flipped, original)])
    assert np.all(mirrored | unchanged)
    assert 0.4 < mirrored.mean() < 0.6


def test_random_padded_crop_is_a_window_of_the_padded_image():
    images = random_images(batch=32)
    cropped = augment.random_padded_crop(images, 2, SEED).numpy()
    padded = np.pad(images.numpy(), [(0, 0), (2, 2), (2, 2), (0, 0)])
    offsets = set()
    for index in range(32):
        matches = [
            (row, col)
            for row in range(5)
            for col in range(5)
            if np.array_equal(cropped[index], padded[index, row : row + 12, col : col + 10])
        ]
        assert matches
        offsets.update(matches)
    assert len(offsets) > 5  # offsets vary per sample


def test_cutout_fills_one_clipped_square_per_image():
    images = tf.zeros([200, 16, 16, 1])
    out = augment.cutout(images, 6, SEED, fill_value=1.0).numpy()[..., 0]
    for mask in out:
        rows, cols = np.nonzero(mask)
        assert 0 < len(rows) <= 36
        # A rectangle: filled cells are exactly the box they span.
        box = mask[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1]
        assert box.all() and box.size == len(rows)
        assert rows.max() - rows.min() < 6 and cols.max() - cols.min() < 6
    assert np.mean([mask.sum() == 36 for mask in out]) > 0.3


def to_pil(image):
    return Image.fromarray(np.round(image * 255).astype(np.uint8).squeeze())


def from_pil(image, channels=3):
    array = np.asarray(image, dtype=np.float32) / 255.0
    return array.reshape(array.shape[:2] + (channels,))


@pytest.mark.parametrize(
    "name, value, reference, tolerance",
    [
        ("equalize", 0.0, ImageOps.equalize, 1e-3),
        ("auto_contrast", 0.0, ImageOps.autocontrast, 1.01),
        ("posterize", 5.5, lambda image: ImageOps.posterize(image, 5), 1e-3),
        ("solarize", 100.0, lambda image: ImageOps.solarize(image, 100), 1e-3),
        ("brightness", 0.3, lambda image: ImageEnhance.Brightness(image).enhance(0.3), 1.01),
        ("color", 0.3, lambda image: ImageEnhance.Color(image).enhance(0.3), 1.51),
        ("contrast", 0.3, lambda image: ImageEnhance.Contrast(image).enhance(0.3), 1.51),
        ("sharpness", 0.3, lambda image: ImageEnhance.Sharpness(image).enhance(0.3), 1.51),
    ],
)
def test_rand_augment_colour_ops_agree_with_pil(name, value, reference, tolerance):
    # Skewed pixel values so that equalisation and auto-contrast have work to do.
    pixels = (np.random.default_rng(1).random((16, 16, 3)) ** 2 * 200).round() / 255.0
    ours = augment._COLOR_OPS[name](tf.constant(pixels[None], tf.float32), tf.constant([value]))
    theirs = from_pil(reference(to_pil(pixels)))
    # Tolerances in pixel levels (1/255): exact ops within float error, blends within PIL's
    # integer rounding.
    assert np.max(np.abs(ours.numpy()[0] - theirs)) * 255 <= tolerance


@pytest.mark.parametrize(
    "name, value, matrix",
    [
        ("translate_y", 0.25, (1, 0, 0, 0, 1, 4)),
        ("translate_x", -0.25, (1, 0, -4, 0, 1, 0)),
    ],
)
def test_rand_augment_translations_agree_with_pil(name, value, matrix):
    pixels = np.random.default_rng(2).random((16, 16, 3)).round(2)
    names = [op for op, _, _ in augment.RAND_AUGMENT_OPS]
    ours = augment._apply_geometric(
        tf.constant(pixels[None], tf.float32),
        names,
        tf.constant([names.index(name)]),
        tf.constant([value]),
        0.0,
    )
    theirs = from_pil(to_pil(pixels).transform((16, 16), Image.AFFINE, matrix))
    np.testing.assert_allclose(ours.numpy()[0], theirs, atol=1 / 255)


def test_rand_augment_is_seeded_and_keeps_shape_and_range():
    images = random_images(batch=50, height=16, width=16)
    first = augment.rand_augment(images, 2, SEED)
    again = augment.rand_augment(images, 2, SEED)
    other = augment.rand_augment(images, 2, tf.constant([5, 6], tf.int64))
    np.testing.assert_array_equal(first.numpy(), again.numpy())
    assert not np.array_equal(first.numpy(), other.numpy())
    assert first.shape == images.shape and first.dtype == tf.float32
    assert 0.0 <= float(tf.reduce_min(first)) and float(tf.reduce_max(first)) <= 1.0
    # Ops are chosen per image: some images change, some (identity twice) may not, and
    # the changes differ between images.
    changed = np.any(first.numpy() != images.numpy(), axis=(1, 2, 3))
    assert changed.mean() > 0.5


def test_rand_augment_handles_grayscale_and_single_images():
    # With one image, most ops get an empty sub-batch.
    images = random_images(batch=1, channels=1)
    out = augment.rand_augment(images, 3, SEED)
    assert out.shape == images.shape


def test_recipes_and_config_round_trip():
    assert Augmentation.from_recipe("none").is_identity
    cifar = Augmentation.from_recipe("cifar")
    assert cifar == Augmentation(flip=True, crop_padding=4)
    strong = Augmentation.from_recipe("cifar_strong")
    assert strong.rand_augment_ops == 2 and strong.cutout_size == 16
    assert Augmentation.from_config(strong.get_config()) == strong
    assert "crop_padding=4" in repr(cifar)
    with pytest.raises(ValueError, match=r"`recipe`, expected one of"):
        Augmentation.from_recipe("imagenet")
    with pytest.raises(ValueError, match=r"`crop_padding`, expected a non-negative integer"):
        Augmentation(crop_padding=-1)
    with pytest.raises(ValueError, match=r"`flip`, expected a bool"):
        Augmentation(flip="yes")
    with pytest.raises(ValueError, match=r"needs samples of shape \(height, width, channels\)"):
        cifar.check_input_shape((64,))


def test_augmentation_runs_inside_tf_data_reproducibly():
    strong = Augmentation(flip=True, crop_padding=2, rand_augment_ops=1, cutout_size=4)
    images = random_images(batch=40, height=16, width=16)

    def pipeline():
        seeds = tf.data.Dataset.random(seed=1, rerandomize_each_iteration=True).batch(2)
        batches = tf.data.Dataset.from_tensor_slices(images).batch(20)
        return tf.data.Dataset.zip(batches, seeds).map(strong)

    first = pipeline()
    epoch_one = np.concatenate(list(first.as_numpy_iterator()))
    epoch_two = np.concatenate(list(first.as_numpy_iterator()))
    replay = np.concatenate(list(pipeline().as_numpy_iterator()))
    np.testing.assert_array_equal(epoch_one, replay)
    assert not np.array_equal(epoch_one, epoch_two)
