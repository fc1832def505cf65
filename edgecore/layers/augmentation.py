"""Keras's image augmentation and resizing layers (the transfer-learning guide's pattern:
RandomFlip, RandomRotation, ... before the base; Resizing, CenterCrop).

At inference the random layers are the identity, as in Keras; in fit, those the model
starts with augment each batch (train/augment.py).  Resizing, CenterCrop and
tf_keras's RandomCrop (at inference a centre crop to the target aspect ratio, then a
resize; Keras 3.15's is the identity) are a window copy (the kernel of Cropping2D) and a
bilinear resize (the kernel of UpSampling2D, exactly tf.image.resize(method="bilinear",
antialias=False)) or a nearest one (kernels/augment.pxi resize_nearest).
Not yet: random layers after another layer in fit (refused at compile), RandomCrop in
fit, and Resizing's other interpolations (bicubic, area, lanczos*, gaussian, mitchellcubic:
refused at load).
"""
from .base import Layer, check_channels_last
from .core import Identity

RANDOM_CLASSES = ("RandomFlip", "RandomRotation", "RandomZoom", "RandomTranslation",
                  "RandomContrast", "RandomBrightness")


class RandomAugmentation(Identity):
    keras_classes = RANDOM_CLASSES

    def parse(self, config):
        self.config = config
        self.rate = 1.0
        self.noise_shape = None

    def active_in_training(self, node):
        if node.inference_only:
            return False
        cfg = self.config
        if self.class_name == "RandomFlip":
            return cfg.get("mode", "horizontal_and_vertical") != ""
        key = {"RandomRotation": "factor", "RandomContrast": "factor", "RandomBrightness": "factor",
               "RandomZoom": "height_factor", "RandomTranslation": "height_factor"}[self.class_name]
        factors = [cfg.get(key, 0.0), cfg.get("width_factor", 0.0) if self.class_name in (
            "RandomZoom", "RandomTranslation") else 0.0]
        flat = []
        for f in factors:
            flat.extend(f if isinstance(f, (list, tuple)) else [f])
        return any(float(v or 0.0) != 0.0 for v in flat)

    def check_trainable(self, node):
        if self.active_in_training(node):
            raise self.unsupported(f"{self.class_name} augments in Keras's fit; edgecore "
                                   f"applies augmentation layers in fit only where the "
                                   f"model starts with them (input -> Random... -> the "
                                   f"rest); move it there, or pass fit(augment=fn)")

    def lower(self, b, node):
        b.alias(node.outputs[0], node.inputs[0])

    def lower_backward(self, b, node, dy, need_dx, dy_is_preact=False):
        return [dy]


def aspect_crop(h, w, target_h, target_w):
    """Keras's centre crop to the target aspect ratio (ops.image.resize with
    crop_to_aspect_ratio, smart_resize, RandomCrop at inference): (top, left, ch, cw)."""
    ch = max(min(h, int(float(w * target_h) / target_w)), 1)
    cw = max(min(w, int(float(h * target_w) / target_h)), 1)
    return int(float(h - ch) / 2), int(float(w - cw) / 2), ch, cw


class _CropResize(Layer):
    """Optional window (top, left, ch, cw) of the input, then a bilinear resize to
    (height, width) unless the window already has that size."""

    def output_shapes(self, input_shapes, call):
        self.expect_inputs(input_shapes, 1, rank=3)
        return [(self.height, self.width, input_shapes[0][2])]

    def window(self, h, w):
        raise NotImplementedError

    def _steps(self, b, x):
        n, h, w, c = b.shape(x)
        if h is None or w is None:
            raise self.shape_error("needs a known input height and width")
        return (n, h, w, c), self.window(h, w)

    def lower(self, b, node):
        x, y = node.inputs[0], node.outputs[0]
        (n, h, w, c), (top, left, ch, cw) = self._steps(b, x)
        if (ch, cw) == (self.height, self.width):
            b.op("window_copy", y, x, ints=(n, h, w, c, ch, cw, -top, -left))
            return
        src = x
        if (ch, cw) != (h, w):
            src = b.temp((n, ch, cw, c))
            b.op("window_copy", src, x, ints=(n, h, w, c, ch, cw, -top, -left))
        kind = "resize_nearest" if self.nearest else "upsample_bilinear"
        b.op(kind, y, src, ints=(n, ch, cw, c, self.height, self.width))

    nearest = False

    def lower_backward(self, b, node, dy, need_dx, dy_is_preact=False):
        x = node.inputs[0]
        (n, h, w, c), (top, left, ch, cw) = self._steps(b, x)
        if self.nearest and (ch, cw) != (self.height, self.width):
            raise self.unsupported("no backward pass for a nearest resize; set trainable=False "
                                   "on the layers before it")
        dx = b.temp((n, h, w, c))
        if (ch, cw) == (self.height, self.width):
            b.op("window_copy", dx, dy, ints=(n, ch, cw, c, h, w, top, left))
            return [dx]
        dsrc = dx if (ch, cw) == (h, w) else b.temp((n, ch, cw, c))
        b.op("upsample_bilinear_backward", dsrc, None, dy,
             ints=(n, ch, cw, c, self.height, self.width))
        if dsrc is not dx:
            b.op("window_copy", dx, dsrc, ints=(n, ch, cw, c, h, w, top, left))
        return [dx]


def _size(layer, config):
    height, width = int(config["height"]), int(config["width"])
    if not (0 < height <= 1 << 14 and 0 < width <= 1 << 14):
        raise layer.format_error(f"height={height}, width={width} out of range")
    return height, width


class Resizing(_CropResize):
    keras_classes = ("Resizing",)

    def parse(self, config):
        check_channels_last(self, config)
        self.height, self.width = _size(self, config)
        self.interpolation = config.get("interpolation", "bilinear")
        if self.interpolation not in ("bilinear", "nearest"):
            raise self.unsupported(f"interpolation={self.interpolation!r}; bilinear and "
                                   f"nearest only so far")
        self.nearest = self.interpolation == "nearest"
        if config.get("pad_to_aspect_ratio"):
            raise self.unsupported("pad_to_aspect_ratio=True")
        self.crop = bool(config.get("crop_to_aspect_ratio", False))

    def window(self, h, w):
        if self.crop:
            return aspect_crop(h, w, self.height, self.width)
        return 0, 0, h, w


class CenterCrop(_CropResize):
    keras_classes = ("CenterCrop",)

    def parse(self, config):
        check_channels_last(self, config)
        self.height, self.width = _size(self, config)

    def window(self, h, w):
        if h >= self.height and w >= self.width:  # Keras: a plain centre crop
            return (h - self.height) // 2, (w - self.width) // 2, self.height, self.width
        return aspect_crop(h, w, self.height, self.width)  # else smart_resize


class RandomCrop(_CropResize):
    """At inference: Keras 3.15 returns the input unchanged (its transform_images crops
    only when training, whatever its docstring says; fixture random_crop_inference),
    tf_keras crops the centre to the target aspect ratio and resizes.  In fit it crops at
    a random place: refused there for now (see module docstring)."""
    keras_classes = ("RandomCrop",)

    def output_shapes(self, input_shapes, call):
        if self.ctx.keras_major >= 3:
            self.expect_inputs(input_shapes, 1, rank=3)
            return [input_shapes[0]]
        return super().output_shapes(input_shapes, call)

    def lower(self, b, node):
        if self.ctx.keras_major >= 3:
            b.alias(node.outputs[0], node.inputs[0])
        else:
            super().lower(b, node)

    def parse(self, config):
        check_channels_last(self, config)
        self.height, self.width = _size(self, config)

    def window(self, h, w):
        return aspect_crop(h, w, self.height, self.width)

    def check_trainable(self, node):
        if not node.inference_only:
            raise self.unsupported("RandomCrop crops at random in Keras's fit, and edgecore "
                                   "does not implement that yet; pass fit(augment=fn) instead")
