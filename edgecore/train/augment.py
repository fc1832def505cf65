"""Keras's random augmentation layers in fit: the transforms they apply when Keras trains.

The layers that start the model (input -> RandomFlip -> RandomRotation -> ..., the pattern
of Keras's transfer-learning guide) run on each batch before the training step, with
per-sample parameters drawn here from Keras 3.15's distributions (the trainer's seeded
generator) and applied by the kernels in kernels/augment.pxi.  In the plans they are the
identity, as at inference.  Because they change every epoch's input, the frozen layers
after them cannot be cached (fit says so).

Keras 3.15 semantics, read from keras/src/layers/preprocessing/image_preprocessing/:
  RandomFlip         one u ~ U[0, 1) per sample, flip where u <= 0.5; "horizontal_and_vertical"
                     flips both axes with that same draw (a 180-degree turn or nothing)
  RandomRotation     angle ~ U(lower, upper) * 360 degrees; a rotation about the centre
                     ((W-1)/2, (H-1)/2); factor f -> (-f, f)
  RandomZoom         zoom_h ~ U(1 + lower, 1 + upper), zoom_w likewise (or = zoom_h when
                     width_factor is None); positive = zoom out
  RandomTranslation  dy ~ U(lower, upper) * H, dx ~ U(lower, upper) * W
  RandomContrast     factor ~ U(1 - lower, 1 + upper) with (lower, upper) from f as (0, f)
                     (its factor bounds are [0, 1]); y = clip((x - mean) * factor + mean,
                     value_range), mean per sample and channel
  RandomBrightness   delta ~ U(lower, upper) * (value_range[1] - value_range[0]); y =
                     clip(x + delta, value_range)
Rotation, zoom and translation warp with interpolation (bilinear | nearest) and fill_mode
(reflect | wrap | constant | nearest, fill_value) as TF's ImageProjectiveTransformV3.
Not here: RandomCrop in fit (refused at compile), tf_keras's own distributions (a Keras 2
file's layers augment with Keras 3's), augmentation layers anywhere but the model's start.
"""
import math

import numpy as np

from .. import _kernels


def _factor_pair(value, bounds=(-1.0, 1.0)):
    """Keras's BaseImagePreprocessingLayer._set_factor: (lower, upper)."""
    if isinstance(value, (list, tuple)):
        lower, upper = sorted(float(v) for v in value)
        return lower, upper
    f = abs(float(value))
    return max(-f, bounds[0]), f


def _height_width_pair(value):
    """RandomZoom/RandomTranslation's height_factor/width_factor: f -> (-f, f)."""
    if value is None:
        return None
    if isinstance(value, (list, tuple)):
        return float(value[0]), float(value[1])
    return -abs(float(value)), abs(float(value))


class _Transform:
    """One augmentation layer's training-time transform."""

    def __init__(self, layer):
        self.layer = layer
        self.name = f"{layer.class_name} {layer.name!r}"
        cfg = layer.config
        self.kind = layer.class_name
        self.interpolation = cfg.get("interpolation", "bilinear")
        self.fill_mode = cfg.get("fill_mode", "reflect")
        self.fill_value = float(cfg.get("fill_value", 0.0) or 0.0)
        if self.kind == "RandomFlip":
            mode = cfg.get("mode", "horizontal_and_vertical")
            self.horizontal = mode in ("horizontal", "horizontal_and_vertical")
            self.vertical = mode in ("vertical", "horizontal_and_vertical")
        elif self.kind == "RandomRotation":
            self.factor = _factor_pair(cfg.get("factor", 0.0))
        elif self.kind in ("RandomZoom", "RandomTranslation"):
            self.height = _height_width_pair(cfg.get("height_factor", 0.0))
            self.width = _height_width_pair(cfg.get("width_factor"))
        elif self.kind == "RandomContrast":
            self.factor = _factor_pair(cfg.get("factor", 0.0), (0.0, 1.0))
            self.value_range = tuple(float(v) for v in cfg.get("value_range", (0, 255)))
        elif self.kind == "RandomBrightness":
            self.factor = _factor_pair(cfg.get("factor", 0.0))
            self.value_range = tuple(float(v) for v in cfg.get("value_range", (0, 255)))
        if self.interpolation not in ("bilinear", "nearest"):
            raise layer.unsupported(f"interpolation={self.interpolation!r} in fit; "
                                    f"bilinear and nearest only")
        if self.fill_mode not in ("reflect", "wrap", "constant", "nearest"):
            raise layer.unsupported(f"fill_mode={self.fill_mode!r}")

    # --- parameters, drawn as Keras draws them -------------------------------------------
    def draw(self, rng, n, h, w):
        """The per-sample parameters of a batch of n images h x w."""
        k = self.kind
        if k == "RandomFlip":
            return rng.random(n) <= 0.5
        if k == "RandomRotation":
            return rng.uniform(self.factor[0] * 360.0, self.factor[1] * 360.0, n)
        if k == "RandomZoom":
            zh = rng.uniform(1.0 + self.height[0], 1.0 + self.height[1], n)
            zw = zh if self.width is None else rng.uniform(1.0 + self.width[0],
                                                           1.0 + self.width[1], n)
            return np.stack([zw, zh], axis=1)
        if k == "RandomTranslation":
            dy = rng.uniform(self.height[0], self.height[1], n) * h
            width = self.width if self.width is not None else (0.0, 0.0)
            dx = rng.uniform(width[0], width[1], n) * w
            return np.stack([dx, dy], axis=1)
        if k == "RandomContrast":
            return rng.uniform(1.0 - self.factor[0], 1.0 + self.factor[1], n)
        lo, hi = self.value_range
        return rng.uniform(self.factor[0], self.factor[1], n) * (hi - lo)

    def matrices(self, params, h, w):
        """(n, 8) float32 projective transforms (output -> input coordinates), as Keras
        builds them for rotation, zoom and translation."""
        n = params.shape[0]
        t = np.zeros((n, 8), np.float64)
        if self.kind == "RandomRotation":
            angle = params * (math.pi / 180.0)
            cx, cy = 0.5 * (w - 1), 0.5 * (h - 1)
            cos, sin = np.cos(angle), np.sin(angle)
            t[:, 0], t[:, 1] = cos, -sin
            t[:, 2] = cx - cx * cos + cy * sin
            t[:, 3], t[:, 4] = sin, cos
            t[:, 5] = cy - cx * sin - cy * cos
        elif self.kind == "RandomZoom":
            zw, zh = params[:, 0], params[:, 1]
            t[:, 0], t[:, 2] = zw, (w - 1.0) / 2.0 * (1.0 - zw)
            t[:, 4], t[:, 5] = zh, (h - 1.0) / 2.0 * (1.0 - zh)
        else:
            t[:, 0], t[:, 2] = 1.0, -params[:, 0]
            t[:, 4], t[:, 5] = 1.0, -params[:, 1]
        return t.astype(np.float32)

    def apply(self, x, out, params):
        """out = the transform of x (n, h, w, c) with the given parameters."""
        k = self.kind
        if k == "RandomFlip":
            _kernels.flip(x, out, np.ascontiguousarray(params, np.uint8),
                          self.horizontal, self.vertical)
        elif k == "RandomContrast":
            _kernels.contrast(x, out, params.astype(np.float32), *self.value_range,
                              np.empty(x.shape[3], np.float64))
        elif k == "RandomBrightness":
            _kernels.brightness(x, out, params.astype(np.float32), *self.value_range)
        else:
            _kernels.projective_warp(x, out, self.matrices(params, x.shape[1], x.shape[2]),
                                     self.interpolation == "bilinear", self.fill_mode,
                                     self.fill_value)


class InputAugmentation:
    """The model's leading augmentation layers as fit's per-batch transform:
    __call__(x_batch, rng) -> the augmented float32 batch (a buffer reused between calls
    of the same shape; copy to keep)."""

    def __init__(self, layers):
        self.transforms = [_Transform(layer) for layer in layers]
        self._buffers = {}

    @property
    def names(self):
        return [t.name for t in self.transforms]

    def __call__(self, x, rng):
        x = np.ascontiguousarray(x, dtype=np.float32)
        if x.ndim != 4:
            raise ValueError(f"augmentation layers need (N, H, W, C) images, got {x.shape}")
        pair = self._buffers.get(x.shape)
        if pair is None:
            pair = self._buffers[x.shape] = (np.empty(x.shape, np.float32),
                                             np.empty(x.shape, np.float32))
        n, h, w, _ = x.shape
        src = x
        for i, t in enumerate(self.transforms):
            out = pair[i % 2]
            t.apply(src, out, t.draw(rng, n, h, w))
            src = out
        return src


def leading_augmentation(flat):
    """The active augmentation calls that the model's single image input flows through
    first (input -> aug -> aug -> ...), in order."""
    from ..layers.augmentation import RandomAugmentation

    if len(flat.inputs) != 1:
        return []
    users = flat.consumers()
    chain, tensor = [], flat.inputs[0]
    while True:
        consumers = users.get(tensor, [])
        if len(consumers) != 1:
            return chain
        node = consumers[0]
        if not isinstance(node.layer, RandomAugmentation) or len(node.outputs) != 1:
            return chain
        if node.layer.active_in_training(node):
            chain.append(node)
        tensor = node.outputs[0]
