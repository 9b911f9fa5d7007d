"""Reading what `clidmu-tf predict` and `evaluate` are given: arrays, images, image folders.

The scaling rule is the pipelines' one: uint8 values are pixels and are divided by 255;
floating-point arrays are used as they are.
"""

import os

import numpy as np

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")
ARRAY_SUFFIXES = (".npy", ".npz")


def read_array(path):
    """Loads a `.npy` file, or the array `x` (or the only array) of an `.npz` file."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"The file {path!r} does not exist.")
    if path.endswith(".npz"):
        with np.load(path, allow_pickle=False) as arrays:
            if "x" in arrays.files:
                return arrays["x"]
            if len(arrays.files) == 1:
                return arrays[arrays.files[0]]
            raise ValueError(
                f"The file {path!r} holds several arrays {sorted(arrays.files)}; name the inputs "
                "'x'."
            )
    if path.endswith(".npy"):
        return np.load(path, allow_pickle=False)
    raise ValueError(
        f"Received an invalid array file, expected a .npy or .npz file. Received: {path!r}"
    )


def check_inputs_path(path):
    """Checks, without reading it, that `path` names inputs `read_inputs` can read.

    Raises:
        FileNotFoundError: if `path` does not exist.
        ValueError: for a file that is neither an array file nor an image.
    """
    if os.path.isdir(path):
        return
    if not os.path.exists(path):
        raise FileNotFoundError(f"The input {path!r} does not exist.")
    if not path.lower().endswith(IMAGE_SUFFIXES + ARRAY_SUFFIXES):
        raise ValueError(
            "Received an invalid value for `INPUT`, expected a .npy/.npz file, an image "
            f"({', '.join(IMAGE_SUFFIXES)}) or a folder of images. Received: {path!r}"
        )


def read_inputs(path, input_shape):
    """Reads model inputs from an array file, an image file or a folder of images.

    Args:
        path: a `.npy` / `.npz` file (`[N, ...]`, or one sample of `input_shape`), an image
            file, or a folder searched recursively for images.
        input_shape: the shape of one model input, e.g. `(8, 8, 1)`. Images are converted to
            its channels (1 grey, 3 RGB) and resized to its height and width.

    Returns:
        A tuple `(names, x)`: a name per sample (`FILE[i]` for arrays, the image's path
        relative to `path` for folders) and the float32 inputs `[N, *input_shape]`.

    Raises:
        FileNotFoundError: if `path` does not exist.
        ValueError: for an unsupported file, a folder without images, or arrays whose sample
            shape is not `input_shape`.
    """
    check_inputs_path(path)
    input_shape = tuple(input_shape)
    if os.path.isdir(path):
        files = sorted(
            os.path.join(root, name)
            for root, _, names in os.walk(path)
            for name in names
            if name.lower().endswith(IMAGE_SUFFIXES)
        )
        if not files:
            raise ValueError(
                f"The folder {path!r} holds no images (looked for {', '.join(IMAGE_SUFFIXES)})."
            )
        x = np.stack([_read_image(file, input_shape) for file in files])
        return [os.path.relpath(file, path) for file in files], _scaled(x)
    if path.lower().endswith(IMAGE_SUFFIXES):
        return [os.path.basename(path)], _scaled(_read_image(path, input_shape)[None])
    x = np.asarray(read_array(path))
    if x.shape == input_shape:
        x = x[None]
    if x.shape[1:] != input_shape:
        raise ValueError(
            f"The arrays in {path!r} must have samples of the model's input shape "
            f"{input_shape}: shape [N, {', '.join(map(str, input_shape))}]. Received: "
            f"shape {x.shape}"
        )
    return [f"{os.path.basename(path)}[{i}]" for i in range(len(x))], _scaled(x)


def _scaled(x):
    if x.dtype == np.uint8:
        return x.astype(np.float32) / np.float32(255.0)
    return x.astype(np.float32)


def _read_image(path, input_shape):
    from PIL import Image

    if len(input_shape) != 3 or input_shape[-1] not in (1, 3):
        raise ValueError(
            "Images can be given only to a model of image inputs [height, width, 1 or 3]. "
            f"This model takes inputs of shape {input_shape}."
        )
    height, width, channels = input_shape
    with Image.open(path) as image:
        image = image.convert("L" if channels == 1 else "RGB")
        if image.size != (width, height):
            image = image.resize((width, height), Image.Resampling.BILINEAR)
        pixels = np.asarray(image, dtype=np.uint8)
    return pixels.reshape(input_shape)
