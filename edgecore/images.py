"""Single photos, as Keras reads them: decode with Pillow (the optional extra
`edgecore[images]`), resize as tf.image.resize does, and Keras's load_img/img_to_array.

    load_img(path, color_mode, target_size, interpolation, keep_aspect_ratio)
        keras.utils.load_img: a PIL image, resized by Pillow when target_size is given
    img_to_array(img, data_format=None, dtype=None)
        keras.utils.img_to_array: float32 (H, W, C)
    decode_image(path, channels)      uint8 (H, W, C) as tf.image.decode_image would give
    resize_image(image, size, interpolation, crop_to_aspect_ratio)
        float32 (h, w, C): tf.image.resize "bilinear" (half-pixel centres, antialias=False)
        or "nearest", after Keras's smart_resize crop when asked

Non-goals: Keras's other interpolations (bicubic, area, lanczos, gaussian, mitchellcubic)
are refused by name rather than approximated.
"""
import io
import os

import numpy as np

from .errors import EdgecoreError, MissingDependencyError

ALLOWLIST_FORMATS = (".bmp", ".gif", ".jpeg", ".jpg", ".png")  # Keras's list
RESIZE_METHODS = ("bilinear", "nearest")  # those edgecore reproduces exactly


class ImageError(EdgecoreError, ValueError):
    """A photo cannot be read or decoded (the path and Pillow's reason are given)."""


def pil():
    """PIL.Image, or MissingDependencyError naming the extra that brings it."""
    try:
        from PIL import Image
    except ImportError as exc:
        raise MissingDependencyError(
            "reading photos needs Pillow: pip install 'edgecore[images]' (or pip install "
            "pillow; on Raspberry Pi OS: sudo apt install python3-pil; on Termux: "
            "pkg install python-pillow)") from exc
    return Image


def load_img(path, color_mode="rgb", target_size=None, interpolation="nearest",
             keep_aspect_ratio=False):
    """keras.utils.load_img: the photo at `path` (path-like or io.BytesIO) as a PIL image
    in color_mode ("grayscale", "rgb", "rgba"), resized by Pillow to target_size
    (height, width) with `interpolation` if given (keep_aspect_ratio: centre crop to the
    target's aspect ratio first), exactly as Keras 3 does it."""
    Image = pil()
    methods = {"nearest": Image.Resampling.NEAREST, "bilinear": Image.Resampling.BILINEAR,
               "bicubic": Image.Resampling.BICUBIC, "hamming": Image.Resampling.HAMMING,
               "box": Image.Resampling.BOX, "lanczos": Image.Resampling.LANCZOS}
    if isinstance(path, io.BytesIO):
        img = _open(Image, path, "<BytesIO>")
    elif isinstance(path, (os.PathLike, bytes, str)):
        path = os.fspath(path)
        with open(path, "rb") as f:
            img = _open(Image, io.BytesIO(f.read()), path)
    else:
        raise TypeError(f"path should be path-like or io.BytesIO, not {type(path)}")
    if color_mode == "grayscale":
        if img.mode not in ("L", "I;16", "I"):
            img = img.convert("L")
    elif color_mode == "rgba":
        if img.mode != "RGBA":
            img = img.convert("RGBA")
    elif color_mode == "rgb":
        if img.mode != "RGB":
            img = img.convert("RGB")
    else:
        raise ValueError('color_mode must be "grayscale", "rgb", or "rgba"')
    if target_size is not None:
        wh = (target_size[1], target_size[0])
        if img.size != wh:
            if interpolation not in methods:
                raise ValueError("Invalid interpolation method {} specified. Supported "
                                 "methods are {}".format(interpolation, ", ".join(methods)))
            resample = methods[interpolation]
            if keep_aspect_ratio:
                width, height = img.size
                crop_height = min(height, (width * wh[1]) // wh[0])
                crop_width = min(width, (height * wh[0]) // wh[1])
                top, left = (height - crop_height) // 2, (width - crop_width) // 2
                img = img.resize(wh, resample,
                                 box=[left, top, left + crop_width, top + crop_height])
            else:
                img = img.resize(wh, resample)
    return img


def _open(Image, stream, name):
    try:
        img = Image.open(stream)
        img.load()
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise ImageError(f"cannot decode the image: {exc}", path=name) from None
    return img


def img_to_array(img, data_format=None, dtype=None):
    """keras.utils.img_to_array: (H, W, C) float32 (or dtype); data_format
    "channels_first" gives (C, H, W)."""
    data_format = "channels_last" if data_format is None else data_format
    if data_format not in ("channels_last", "channels_first"):
        raise ValueError("The `data_format` argument must be one of \"channels_first\", "
                         f"\"channels_last\". Received: data_format={data_format}")
    x = np.asarray(img, dtype="float32" if dtype is None else dtype)
    if x.ndim == 3:
        if data_format == "channels_first":
            x = x.transpose(2, 0, 1)
    elif x.ndim == 2:
        x = x.reshape((1,) + x.shape if data_format == "channels_first" else x.shape + (1,))
    else:
        raise ValueError(f"Unsupported image shape: {x.shape}")
    return x


def decode_image(path, channels):
    """uint8 (H, W, channels) of the photo at path, as tf.image.decode_image(channels=,
    expand_animations=False) gives it: the first frame of a GIF; 3 is RGB, 4 RGBA; 1 is
    the JPEG's own luminance (libjpeg's grayscale output, as TF asks for it) or, for
    other formats, TF's conversion of RGB to grey (to_grey below)."""
    Image = pil()
    try:
        img = Image.open(path)
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise ImageError(f"cannot decode the image: {exc}", path=path) from None
    try:
        if channels == 1 and img.format == "JPEG" and img.mode != "L":
            img.draft("L", img.size)  # libjpeg's own YCbCr -> grey, as TF's decoder
        img.load()
        mode = {1: "L", 3: "RGB", 4: "RGBA"}[channels]
        if channels == 1 and img.mode in ("I;16", "I;16B", "I"):
            array = (np.asarray(img, dtype=np.uint32) >> 8).astype(np.uint8)  # high byte
        elif channels == 1 and img.mode not in ("L", "1"):
            array = to_grey(np.asarray(img.convert("RGB")))
        else:
            array = np.asarray(img if img.mode == mode else img.convert(mode))
    except (OSError, SyntaxError, ValueError) as exc:
        raise ImageError(f"cannot decode the image: {exc}", path=path) from None
    finally:
        img.close()
    return array.reshape(array.shape[:2] + (channels,))


def to_grey(rgb):
    """TF's RGB -> grey in its PNG decoder: (9797 R + 19234 G + 3737 B) >> 15, found to
    equal TF 2.21's decode_png(channels=1) on every value of a random 64x64 image, where
    Pillow's "L" (ITU-R 601-2, rounded) differs by 1 on half the pixels."""
    rgb = rgb.astype(np.uint32)
    return ((rgb[..., 0] * 9797 + rgb[..., 1] * 19234 + rgb[..., 2] * 3737) >> 15).astype(np.uint8)


def _taps(out, inp):
    """tf.image.resize's bilinear source rows for `out` outputs over `inp` inputs:
    half-pixel centres, clamped at the edges (which is what TF's max(floor, 0) and
    min(ceil, in - 1) amount to)."""
    centre = np.clip((np.arange(out) + 0.5) * (inp / out) - 0.5, 0, inp - 1)
    lo = np.floor(centre).astype(np.intp)
    return lo, np.minimum(lo + 1, inp - 1), (centre - lo).astype(np.float32)


def crop_box(height, width, size):
    """Keras's smart_resize window: the largest centred crop with size's aspect ratio."""
    th, tw = size
    crop_h = max(min(height, int(float(width * th) / tw)), 1)
    crop_w = max(min(width, int(float(height * tw) / th)), 1)
    return int(float(height - crop_h) / 2), int(float(width - crop_w) / 2), crop_h, crop_w


def resize_image(image, size, interpolation="bilinear", crop_to_aspect_ratio=False, out=None):
    """float32 (h, w, C) of image (H, W, C, any numeric dtype) as Keras's loader makes it:
    smart_resize's centre crop first when crop_to_aspect_ratio, then tf.image.resize with
    "bilinear" (half-pixel centres, no antialiasing) or "nearest"."""
    if interpolation not in RESIZE_METHODS:
        raise ValueError(f"interpolation {interpolation!r} is not implemented by edgecore "
                         f"(Keras's {interpolation} resize is not reproduced); use one of "
                         f"{RESIZE_METHODS}")
    h, w = image.shape[:2]
    if crop_to_aspect_ratio:
        top, left, h, w = crop_box(h, w, size)
        image = image[top:top + h, left:left + w]
    oh, ow = size
    if out is None:
        out = np.empty((oh, ow, image.shape[2]), np.float32)
    if interpolation == "nearest":
        # TF's half-pixel nearest: floor((o + 0.5) * scale), clamped.
        rows = np.minimum(np.floor((np.arange(oh) + 0.5) * (h / oh)).astype(np.intp), h - 1)
        cols = np.minimum(np.floor((np.arange(ow) + 0.5) * (w / ow)).astype(np.intp), w - 1)
        out[...] = image[rows][:, cols]
        return out
    y0, y1, fy = _taps(oh, h)
    x0, x1, fx = _taps(ow, w)
    fx = fx[None, :, None]
    top_rows = image[y0].astype(np.float32)
    bottom_rows = image[y1].astype(np.float32)
    # TF's order of operations: top + (bottom - top) * y_lerp over lerped columns.
    top = top_rows[:, x0] + (top_rows[:, x1] - top_rows[:, x0]) * fx
    bottom = bottom_rows[:, x0] + (bottom_rows[:, x1] - bottom_rows[:, x0]) * fx
    np.multiply(bottom - top, fy[:, None, None], out=out)
    out += top
    return out
