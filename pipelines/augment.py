"""Batched, stateless image augmentations in TensorFlow, for use inside `tf.data`.

Every function takes a float32 batch `[B, H, W, C]` with values in [0, 1] and a `seed` of
shape `[2]` (a stateless seed, as `tf.random.stateless_uniform` takes), draws its
randomness per sample, and returns a batch of the same shape. The same seed gives the same
output, so a pipeline that feeds seeds from `tf.data.Dataset.random(seed=...)` is
reproducible.
"""

import math

import tensorflow as tf

# RandAugment's operations and value ranges as in USB / FixMatch (the code CLID-MU builds
# on): each chosen op draws its value uniformly in [low, high] per sample.
RAND_AUGMENT_OPS = (
    ("auto_contrast", 0.0, 1.0),
    ("brightness", 0.05, 0.95),
    ("color", 0.05, 0.95),
    ("contrast", 0.05, 0.95),
    ("equalize", 0.0, 1.0),
    ("identity", 0.0, 1.0),
    ("posterize", 4.0, 8.0),
    ("rotate", -30.0, 30.0),
    ("sharpness", 0.05, 0.95),
    ("shear_x", -0.3, 0.3),
    ("shear_y", -0.3, 0.3),
    ("solarize", 0.0, 256.0),
    ("translate_x", -0.3, 0.3),
    ("translate_y", -0.3, 0.3),
)
_GEOMETRIC_OPS = ("rotate", "shear_x", "shear_y", "translate_x", "translate_y")
_GRAY_WEIGHTS = (0.299, 0.587, 0.114)


def random_flip(images, seed):
    """Mirrors each image left-right with probability 1/2."""
    flip = tf.random.stateless_uniform([tf.shape(images)[0]], seed) < 0.5
    return tf.where(flip[:, None, None, None], tf.reverse(images, axis=[2]), images)


def random_padded_crop(images, padding, seed):
    """Zero-pads each side by `padding` pixels, then crops back at a random offset."""
    if padding == 0:
        return images
    batch = tf.shape(images)[0]
    height, width = images.shape[1], images.shape[2]
    padded = tf.pad(images, [[0, 0], [padding, padding], [padding, padding], [0, 0]])
    offsets = tf.random.stateless_uniform(
        [batch, 2], seed, minval=0, maxval=2 * padding + 1, dtype=tf.int32
    )
    rows = offsets[:, :1] + tf.range(height)[None, :]
    cols = offsets[:, 1:] + tf.range(width)[None, :]
    cropped = tf.gather(padded, rows, axis=1, batch_dims=1)
    return tf.gather(cropped, cols, axis=2, batch_dims=1)


def cutout(images, size, seed, fill_value=0.5):
    """Fills one `size` x `size` square per image, centred anywhere, clipped at the borders.

    As in DeVries & Taylor (2017); the default fill, mid-grey, stands in for the dataset
    mean that their normalised images filled with 0.
    """
    if size == 0:
        return images
    batch = tf.shape(images)[0]
    height, width = images.shape[1], images.shape[2]
    centres = tf.random.stateless_uniform([batch, 2], seed) * [float(height), float(width)]
    corners = tf.cast(centres, tf.int32) - size // 2
    rows = tf.range(height)[None, :] - corners[:, :1]
    cols = tf.range(width)[None, :] - corners[:, 1:]
    row_hit = (rows >= 0) & (rows < size)
    col_hit = (cols >= 0) & (cols < size)
    mask = row_hit[:, :, None, None] & col_hit[:, None, :, None]
    return tf.where(mask, tf.cast(fill_value, images.dtype), images)


def rand_augment(images, num_ops, seed, fill_value=0.0):
    """RandAugment with the operation chosen per sample.

    Applies `num_ops` rounds; in each round every image gets one operation drawn uniformly
    from `RAND_AUGMENT_OPS`, with its value drawn uniformly in the op's range (USB's
    parameterisation, which has no global magnitude). Geometric ops use nearest-neighbour
    sampling and fill uncovered pixels with `fill_value`.

    Reference:
        Cubuk et al., "RandAugment: Practical automated data augmentation with a reduced
        search space", NeurIPS 2020.
    """
    batch = tf.shape(images)[0]
    names = [name for name, _, _ in RAND_AUGMENT_OPS]
    lows = tf.constant([low for _, low, _ in RAND_AUGMENT_OPS])
    highs = tf.constant([high for _, _, high in RAND_AUGMENT_OPS])
    for round_seed in tf.unstack(tf.random.experimental.stateless_split(seed, num_ops)):
        choice_seed, value_seed = tf.unstack(tf.random.experimental.stateless_split(round_seed))
        choice = tf.random.stateless_uniform(
            [batch], choice_seed, minval=0, maxval=len(names), dtype=tf.int32
        )
        low, high = tf.gather(lows, choice), tf.gather(highs, choice)
        values = low + (high - low) * tf.random.stateless_uniform([batch], value_seed)
        result = _apply_geometric(images, names, choice, values, fill_value)
        for index, name in enumerate(names):
            if name in _COLOR_OPS:
                # Only the images that drew this op go through it: 4x faster than running
                # every op on the whole batch and selecting.
                members = tf.where(tf.equal(choice, index))
                chosen = _COLOR_OPS[name](
                    tf.gather_nd(images, members), tf.gather_nd(values, members)
                )
                result = tf.tensor_scatter_nd_update(result, members, chosen)
        images = result
    return images


def _blend(degenerate, images, factor):
    factor = factor[:, None, None, None]
    return tf.clip_by_value(degenerate + factor * (images - degenerate), 0.0, 1.0)


def _grayscale(images):
    if images.shape[-1] == 1:
        return images
    return tf.reduce_sum(images * tf.constant(_GRAY_WEIGHTS), axis=-1, keepdims=True)


def _auto_contrast(images, values):
    low = tf.reduce_min(images, axis=[1, 2], keepdims=True)
    high = tf.reduce_max(images, axis=[1, 2], keepdims=True)
    spread = high - low
    stretched = (images - low) / tf.where(spread > 0, spread, 1.0)
    return tf.where(spread > 0, stretched, images)


def _brightness(images, values):
    return _blend(tf.zeros_like(images), images, values)


def _color(images, values):
    return _blend(tf.broadcast_to(_grayscale(images), tf.shape(images)), images, values)


def _contrast(images, values):
    mean = tf.reduce_mean(_grayscale(images), axis=[1, 2, 3], keepdims=True)
    return _blend(tf.broadcast_to(mean, tf.shape(images)), images, values)


def _equalize(images, values):
    # Histogram equalisation per image and channel, as PIL.ImageOps.equalize does it: all
    # B * C histograms come from one bincount over offset pixel values.
    batch = tf.shape(images)[0]
    channels = images.shape[-1]
    levels = tf.cast(tf.round(images * 255.0), tf.int32)
    per_channel = tf.reshape(tf.transpose(levels, [0, 3, 1, 2]), [batch * channels, -1])
    offsets = tf.range(batch * channels)[:, None] * 256
    histograms = tf.reshape(
        tf.math.bincount(per_channel + offsets, minlength=batch * channels * 256),
        [batch * channels, 256],
    )
    last_nonzero = tf.reduce_max(
        tf.where(histograms > 0, tf.range(256)[None, :], 0), axis=1, keepdims=True
    )
    last_count = tf.gather(histograms, last_nonzero, batch_dims=1)
    step = (tf.reduce_sum(histograms, axis=1, keepdims=True) - last_count) // 255
    safe_step = tf.maximum(step, 1)
    lookup = (tf.cumsum(histograms, axis=1, exclusive=True) + safe_step // 2) // safe_step
    lookup = tf.minimum(lookup, 255)
    equalized = tf.gather(lookup, per_channel, batch_dims=1)
    equalized = tf.where(step > 0, equalized, per_channel)
    equalized = tf.reshape(equalized, [batch, channels, images.shape[1], images.shape[2]])
    return tf.cast(tf.transpose(equalized, [0, 2, 3, 1]), images.dtype) / 255.0


def _posterize(images, values):
    shift = 2.0 ** (8.0 - tf.floor(values))[:, None, None, None]
    return tf.floor(tf.round(images * 255.0) / shift) * shift / 255.0


def _sharpness(images, values):
    # PIL's SMOOTH filter, [[1, 1, 1], [1, 5, 1], [1, 1, 1]] / 13, summed from shifted
    # views (a depthwise convolution mis-shapes an empty batch on oneDNN).
    height, width = images.shape[1], images.shape[2]
    centre = images[:, 1:-1, 1:-1, :]
    neighbourhood = tf.add_n(
        [
            images[:, row : row + height - 2, col : col + width - 2, :]
            for row in range(3)
            for col in range(3)
        ]
    )
    smooth = (neighbourhood + 4.0 * centre) / 13.0
    # PIL keeps the border pixels of the smoothed image unchanged.
    smooth = tf.pad(smooth - centre, [[0, 0], [1, 1], [1, 1], [0, 0]])
    return _blend(images + smooth, images, values)


def _solarize(images, values):
    threshold = values[:, None, None, None]
    return tf.where(images * 255.0 >= threshold, 1.0 - images, images)


_COLOR_OPS = {
    "auto_contrast": _auto_contrast,
    "brightness": _brightness,
    "color": _color,
    "contrast": _contrast,
    "equalize": _equalize,
    "posterize": _posterize,
    "sharpness": _sharpness,
    "solarize": _solarize,
}


def _apply_geometric(images, names, choice, values, fill_value):
    """One projective transform per image: its geometric op, or the identity."""
    height, width = images.shape[1], images.shape[2]
    zeros, ones = tf.zeros_like(values), tf.ones_like(values)
    angles = values * (math.pi / 180.0)
    cos, sin = tf.cos(angles), tf.sin(angles)
    # Output pixel (x, y) samples input (a0 x + a1 y + a2, b0 x + b1 y + b2), PIL's
    # convention for affine transforms.
    matrices = {
        "rotate": [
            cos,
            -sin,
            ((width - 1) - (cos * (width - 1) - sin * (height - 1))) / 2.0,
            sin,
            cos,
            ((height - 1) - (sin * (width - 1) + cos * (height - 1))) / 2.0,
        ],
        "shear_x": [ones, values, zeros, zeros, ones, zeros],
        "shear_y": [ones, zeros, zeros, values, ones, zeros],
        "translate_x": [ones, zeros, values * width, zeros, ones, zeros],
        "translate_y": [ones, zeros, zeros, zeros, ones, values * height],
    }
    transform = tf.stack([ones, zeros, zeros, zeros, ones, zeros, zeros, zeros], axis=1)
    for name, rows in matrices.items():
        chosen = tf.equal(choice, names.index(name))[:, None]
        transform = tf.where(chosen, tf.stack(rows + [zeros, zeros], axis=1), transform)
    return tf.raw_ops.ImageProjectiveTransformV3(
        images=images,
        transforms=transform,
        output_shape=[height, width],
        fill_value=tf.cast(fill_value, tf.float32),
        interpolation="NEAREST",
        fill_mode="CONSTANT",
    )
