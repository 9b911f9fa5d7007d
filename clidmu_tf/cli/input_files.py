"""Reading the files the command line is given: arrays, images, image folders.

`read_npz` and `read_array` are the one reader of `.npz` / `.npy` files for every command
(`train` and `tune`'s `--dataset`, `predict`'s INPUT, `evaluate`'s `--inputs` and
`--labels`), and `read_inputs` the one reader of model inputs for `predict` and `evaluate`.
The scaling rule is the pipelines' one: uint8 values are pixels and are divided by 255;
floating-point arrays are used as they are.
"""

import os
import zipfile

import numpy as np

from clidmu_tf.validation import check_finite_inputs

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")
ARRAY_SUFFIXES = (".npy", ".npz")


def read_npz(path):
    """Every array of an `.npz` archive, as a dict of NumPy arrays.

    Raises:
        FileNotFoundError: if `path` does not exist.
        ValueError: if it is not a NumPy `.npz` archive, or holds object (pickled) arrays.
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"The file {path!r} does not exist.")
    expected = "a NumPy .npz archive (numpy.savez)"
    try:
        loaded = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as error:
        raise ValueError(_unreadable(path, expected, error)) from None
    if not isinstance(loaded, np.lib.npyio.NpzFile):
        raise ValueError(_unreadable(path, expected, "it holds a single .npy array"))
    try:
        with loaded:
            return {key: loaded[key] for key in loaded.files}
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as error:
        raise ValueError(_unreadable(path, expected, error)) from None


def read_array(path, key="x"):
    """Loads a `.npy` file, or the array `key` (or the only array) of an `.npz` file.

    Args:
        path: a `.npy` or `.npz` file.
        key: the array of an `.npz` to read: `"x"` for inputs, `"y"` for labels.

    Raises:
        FileNotFoundError: if `path` does not exist.
        ValueError: for another kind of file, a file numpy cannot read, or an `.npz` with
            several arrays none of which is named `key`.
    """
    if path.endswith(".npz"):
        arrays = read_npz(path)
        if key in arrays:
            return arrays[key]
        if len(arrays) == 1:
            return next(iter(arrays.values()))
        raise ValueError(
            f"The file {path!r} holds several arrays {sorted(arrays)}; name the one to read "
            f"{key!r}."
        )
    if not os.path.isfile(path):
        raise FileNotFoundError(f"The file {path!r} does not exist.")
    if path.endswith(".npy"):
        try:
            return np.load(path, allow_pickle=False)
        except (ValueError, OSError, EOFError) as error:
            raise ValueError(_unreadable(path, "a NumPy .npy file (numpy.save)", error)) from None
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


def _unreadable(path, expected, error):
    reason = str(error)
    if "pickle" in reason:
        # NumPy's message for an unknown format suggests allow_pickle, which would run code
        # from the file; say what the file should have been instead.
        reason = "numpy does not recognise its format, or it holds Python objects"
    return f"Could not read {path!r}: expected {expected}; {reason}."


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
        return [os.path.relpath(file, path) for file in files], scaled_inputs(x, path)
    if path.lower().endswith(IMAGE_SUFFIXES):
        return [os.path.basename(path)], scaled_inputs(_read_image(path, input_shape)[None], path)
    x = np.asarray(read_array(path))
    if x.shape == input_shape:
        x = x[None]
    if x.shape[1:] != input_shape:
        raise ValueError(
            f"The arrays in {path!r} must have samples of the model's input shape "
            f"{input_shape}: shape [N, {', '.join(map(str, input_shape))}]. Received: "
            f"shape {x.shape}"
        )
    return [f"{os.path.basename(path)}[{i}]" for i in range(len(x))], scaled_inputs(x, path)


def scaled_inputs(x, source="x"):
    """Model inputs from stored values, as the pipelines make them: float32, uint8 pixels
    divided by 255 (`InMemoryDataset.pixel_scale`), other numbers as they are.

    Raises:
        ValueError: for non-numeric arrays, or NaN or inf (naming how many and where).
    """
    x = np.asarray(x)
    if not (np.issubdtype(x.dtype, np.number) or x.dtype == bool):
        raise ValueError(
            f"The inputs in {source!r} must be numbers. Received: an array of dtype {x.dtype}"
        )
    check_finite_inputs(x, source)
    scale = 1.0 / 255.0 if x.dtype == np.uint8 else 1.0
    return (x.astype(np.float32) * np.float32(scale)).astype(np.float32)


def _read_image(path, input_shape):
    from PIL import Image

    if len(input_shape) != 3 or input_shape[-1] not in (1, 3):
        raise ValueError(
            "Images can be given only to a model of image inputs [height, width, 1 or 3]. "
            f"This model takes inputs of shape {input_shape}."
        )
    height, width, channels = input_shape
    try:
        with Image.open(path) as image:
            image = image.convert("L" if channels == 1 else "RGB")
            if image.size != (width, height):
                image = image.resize((width, height), Image.Resampling.BILINEAR)
            pixels = np.asarray(image, dtype=np.uint8)
    except (OSError, ValueError, SyntaxError) as error:
        # PIL raises OSError for truncated or unrecognised files, and SyntaxError or
        # ValueError for some malformed headers; none of them names the file.
        raise ValueError(f"Could not read the image {path!r}: {error}") from None
    return pixels.reshape(input_shape)
