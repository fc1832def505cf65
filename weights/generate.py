#!/usr/bin/env python3
"""Keras fixture generator for edgecore's tests: the only code in this repo that imports Keras.

Builds a table of small models with real Keras, gives them random non-default weights, and writes for
each case the files Keras itself produces plus the reference data the tests compare against:

    <case>.k3.h5   Keras 3 ``model.save("x.h5")`` (legacy HDF5)
    <case>.keras   Keras 3 ``model.save("x.keras")`` (zip; date_saved and zip times pinned, see below)
    <case>.k2.h5   tf_keras (Keras 2) ``model.save("x.h5")``
    <case>.k3.npz, <case>.k2.npz   inputs x0.., outputs y0.. of ``model(x, training=False)``, param
                   counts, ``output_shapes`` (JSON), and ``w/<layer>/<i>`` for models < 200k params
    manifest.json  one entry per case: files, flavours, reload results, params, shapes, tags, notes

Run (outputs in weights/fixtures/ are committed; regenerate after changing a case):

    /work/kerasenv/bin/python weights/generate.py [--out DIR] [--only CASE ...] [--list] [--large]

``--only`` takes case names or tags; ``--large`` adds the large applications (ResNet50, VGG16, ...),
which are never committed, so they need ``--out`` elsewhere (tests write them to a temp dir):
``generate.py --large --only resnet50 --out /tmp/x``.

Pinned versions (the fixtures record what they were made with; regenerate with exactly these):
    tensorflow-cpu==2.21.0 keras==3.15.1 tf-keras==2.21.0 (plus h5py, numpy)

Determinism: every case seeds numpy and Keras from its own name, so ``--only`` reproduces the full
run. Every weight is drawn by this script (not by Keras initializers): kernels N(0, gain/fan_in),
biases N(0, 0.1), BN gamma U(0.6, 1.4), beta N(0, 0.2), moving_mean N(0, 0.3), moving_variance
U(0.5, 1.5), PReLU alpha U(0.05, 0.6); gain 2 for kernels with a fused relu, else 1. Deep cases
(``calibrate``) instead set each BN's moving stats from the statistics its input really has on a
32-sample batch, perturbed per channel (mean + N(0, 0.3)·sd, var · U(0.5, 1.5)), and scale Dense and
biased 1x1 Conv2D kernels to a pre-activation std of 2, so outputs neither explode, collapse nor
saturate. The K2 model of a case gets the K3 model's weights (matched layer by layer) wherever the
layer structures agree, so k2 and k3 outputs are comparable; the manifest records per framework
``weights`` ("generated" / "copied from k3") and ``k2_vs_k3_max_abs_diff``. HDF5 files from Keras are
byte-stable; in ``.keras`` the metadata ``date_saved``, one zip time and config.json's
``shared_object_id`` values (Python id()s) vary between runs, and are pinned by ``pin_keras_zip``.

Hooks: a case's ``hooks`` are called after its files are written, as
``hook(K, model, xs, ys, rng) -> {name: array}``, and their arrays go into the case's npz.

Training parity (tag "training", ``--only training``): the model files hold the initial, uncompiled
model; the hook of each training case trains a fresh copy of it per variant (optimizer x loss,
compiled anew) with ``train_on_batch`` on fixed batches and stores the batches, per-step losses and
accuracies, the weights after steps 1 and 5 and ``evaluate`` before and after: from Keras 3 into the
k3 npz, and, for cases whose TrainSpec has ``k2_traces`` (every case added after the first nine), from
tf_keras into the k2 npz with the same keys, batches, variants and initial weights. With
``nested_paths`` a nested model that has trained parts is recorded leaf by leaf under path keys
``<outer>/<inner>/...`` (train/paths maps each key to its path, as layer names may contain "/"). The
two switches are off for the first nine cases, whose files they would change. While recording, the
generator checks that frozen layers stay bit-for-bit, that BN moving statistics move exactly where a
BN trains in batch mode (Keras 3 overrides a nested call's training=False, tf_keras honours it), how
they move (train/bn_moving_update: biased or Bessel-corrected variance), and that every trained layer
changes; a failed check (TraceCheckError) fails the run.

Also: ``train_fit_conventions`` records Keras's ``fit`` (keys fit/...: history per epoch, final weights,
a train_on_batch replay that pins batching, validation_split and epoch averaging) and ``trainable_rule``
records parameter counts and every layer's trainable flag after a script of flag changes (keys
trainable/...). Key layout and the Keras behaviour a re-implementation must match: weights/README.md.
"""
from __future__ import annotations

import argparse
import hashlib
import io
import json
import math
import os
import re
import sys
import time
import warnings
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ["CUDA_VISIBLE_DEVICES"] = ""
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")  # oneDNN reorders float sums: outputs not reproducible
os.environ["KERAS_BACKEND"] = "tensorflow"

import numpy as np  # noqa: E402

PINNED = {"tensorflow-cpu": "2.21.0", "keras": "3.15.1", "tf-keras": "2.21.0"}
DEFAULT_OUT = Path(__file__).resolve().parent / "fixtures"
BATCH = 2            # reference inputs per case
CAL_BATCH = 32       # calibration batch for BN statistics (8 is too few where maps are 1x1)
SMALL_PARAMS = 200_000
DENSE_STD = 2.0      # pre-activation std of Dense layers in calibrated (deep) cases
VAR_SCALE = (0.5, 1.5)  # calibrated BN moving variance = real variance x U(VAR_SCALE)
# Calibrated BN moving mean = real mean + N(MEAN_SHIFT, 0.3) x real std, so BN outputs sit
# around +1 std and ~84% of the ReLUs after them are active.  Centred statistics (shift 0)
# put a deep random BN-ReLU net in its chaotic regime: the random InceptionV3 then turned a
# 1e-7 relative input change into a 1e-4 change of its logits, i.e. float32 round-off alone
# (any summation order other than TF's) used up the whole 1e-4 parity tolerance.  With the
# shift it amplifies ~10x less; trained networks are better conditioned still.
MEAN_SHIFT = -1.0
ZIP_TIME = (1980, 1, 1, 0, 0, 0)
DATE_SAVED = "2000-01-01@00:00:00"
FLAVOURS = {"k3": ("k3.h5", "keras"), "k2": ("k2.h5",)}


# ----------------------------------------------------------------------------------------------
# Case table
# ----------------------------------------------------------------------------------------------

@dataclass
class Case:
    name: str
    build: Callable          # build(K) -> model; K is the module `keras` (K3) or `tf_keras` (K2)
    desc: str
    tags: tuple = ("layer",)
    versions: tuple = ("k3", "k2")
    inputs: object = 1.0     # float: N(0, s^2) noise; "pixels": N(127.5, 60^2) clipped to [0, 255]
    calibrate: bool = False  # set BN moving stats from real input statistics (deep nets)
    large: bool = False      # only with --large, never committed
    load_kwargs: dict = field(default_factory=dict)  # extra load_model kwargs (K3 only)
    notes: tuple = ()
    hooks: tuple = ()        # hook(K, model, xs, ys, rng) -> dict of extra npz arrays
    shapes: tuple = None     # reference-input shapes, for models whose input has open (None) dims
    init: Callable = None    # init(model): adjusts the drawn weights (k3 only; k2 copies them)

    @property
    def seed(self):
        return zlib.crc32(self.name.encode()) & 0x7FFFFFFF


CASES: dict = {}
K3_ONLY = ("k3",)


def add(name, build, desc, **kw):
    assert name not in CASES, name
    CASES[name] = Case(name, build, desc, **kw)


def is_k3(K):
    return K.__name__ == "keras"


def L(cls, *args, **kw):
    """A layer maker: L("Conv2D", 4, 3)(K) -> K.layers.Conv2D(4, 3)."""
    return lambda K: getattr(K.layers, cls)(*args, **kw)


def leaky(slope=None):
    """LeakyReLU: `negative_slope=` in K3, `alpha=` in K2."""
    def make(K):
        if slope is None:
            return K.layers.LeakyReLU()
        return K.layers.LeakyReLU(**{("negative_slope" if is_k3(K) else "alpha"): slope})
    return make


def chain(name, shape, *makers):
    def build(K):
        inp = K.Input(shape)
        x = inp
        for mk in makers:
            x = mk(K)(x)
        return K.Model(inp, x, name=name)
    return build


def add_chain(name, shape, makers, desc, **kw):
    add(name, chain(name, shape, *makers), desc, **kw)


def merge(name, shapes, maker):
    def build(K):
        ins = [K.Input(s, name=f"in_{chr(97 + i)}") for i, s in enumerate(shapes)]
        return K.Model(ins, maker(K)(ins), name=name)
    return build


S = (9, 7, 5)  # odd, non-square: SAME padding is asymmetric at stride 2


def _layer_cases():
    # Conv2D: padding x stride x dilation (Keras forbids stride > 1 with dilation > 1)
    for pad in ("valid", "same"):
        for s, d in ((1, 1), (2, 1), (1, 2)):
            add_chain(f"conv2d_3x3_{pad}_s{s}_d{d}", S,
                      [L("Conv2D", 4, 3, strides=s, dilation_rate=d, padding=pad)],
                      f"Conv2D 3x3 padding={pad} strides={s} dilation={d} on 9x7x5")
    for k, pad, s in (((1, 1), "valid", 1), ((1, 1), "same", 2), ((2, 3), "valid", 1), ((2, 3), "same", 1),
                      ((2, 3), "same", 2), ((5, 5), "valid", 1), ((5, 5), "same", 2)):
        add_chain(f"conv2d_{k[0]}x{k[1]}_{pad}_s{s}", S, [L("Conv2D", 4, k, strides=s, padding=pad)],
                  f"Conv2D kernel {k[0]}x{k[1]} padding={pad} strides={s}")
    add_chain("conv2d_3x3_same_s2x1", S, [L("Conv2D", 4, 3, strides=(2, 1), padding="same")],
              "Conv2D non-square strides (2, 1), same")
    add_chain("conv2d_3x3_same_d2x1", S, [L("Conv2D", 4, 3, dilation_rate=(2, 1), padding="same")],
              "Conv2D non-square dilation (2, 1), same")
    add_chain("conv2d_3x3_same_nobias", S, [L("Conv2D", 4, 3, padding="same", use_bias=False)],
              "Conv2D use_bias=False")
    add_chain("conv2d_groups2", (9, 7, 6), [L("Conv2D", 4, 3, padding="same", groups=2)],
              "Conv2D groups=2 (6 in, 4 out channels)")
    for act in ("relu", "relu6", "swish", "sigmoid", "tanh", "hard_sigmoid", "gelu", "elu", "leaky_relu",
                "hard_silu"):
        add_chain(f"conv2d_act_{act}", S, [L("Conv2D", 4, 3, padding="same", activation=act)],
                  f"Conv2D with fused activation='{act}'", inputs=2.0,
                  versions=K3_ONLY if act == "hard_silu" else ("k3", "k2"))

    # DepthwiseConv2D
    for dm, pad, s, d, extra in ((1, "valid", 1, 1, {}), (1, "same", 1, 1, {}), (1, "same", 2, 1, {}),
                                 (1, "valid", 2, 1, {}), (2, "same", 2, 1, {}), (2, "valid", 1, 1, {}),
                                 (1, "same", 1, 2, {}), (1, "valid", 1, 2, {})):
        add_chain(f"dwconv_dm{dm}_{pad}_s{s}" + (f"_d{d}" if d > 1 else ""), S,
                  [L("DepthwiseConv2D", 3, depth_multiplier=dm, strides=s, dilation_rate=d, padding=pad)],
                  f"DepthwiseConv2D 3x3 depth_multiplier={dm} padding={pad} strides={s} dilation={d}")
    add_chain("dwconv_5x5_same_s2", S, [L("DepthwiseConv2D", 5, strides=2, padding="same")],
              "DepthwiseConv2D 5x5 same stride 2 (EfficientNet/MobileNetV3 shape)")
    add_chain("dwconv_nobias", S, [L("DepthwiseConv2D", 3, padding="same", use_bias=False)],
              "DepthwiseConv2D use_bias=False")
    add_chain("dwconv_relu6", S, [L("DepthwiseConv2D", 3, padding="same", activation="relu6")],
              "DepthwiseConv2D with fused relu6", inputs=2.0)

    # SeparableConv2D
    for nm, kw, desc in (
            ("sepconv_dm1_same_s1", dict(padding="same"), "depth_multiplier=1 same"),
            ("sepconv_dm2_valid_s1", dict(depth_multiplier=2), "depth_multiplier=2 valid"),
            ("sepconv_dm1_same_s2_relu", dict(padding="same", strides=2, activation="relu"),
             "stride 2 same, relu"),
            ("sepconv_dm2_same_s2_swish", dict(depth_multiplier=2, padding="same", strides=2,
                                               activation="swish"), "depth_multiplier=2 stride 2, swish"),
            ("sepconv_nobias", dict(padding="same", use_bias=False), "use_bias=False"),
            ("sepconv_dm1_same_d2", dict(padding="same", dilation_rate=2), "dilation 2 same")):
        add_chain(nm, S, [L("SeparableConv2D", 6, 3, **kw)], f"SeparableConv2D 3x3 -> 6, {desc}")

    # Dense
    add_chain("dense_2d", (12,), [L("Dense", 5)], "Dense on a 2-D input")
    add_chain("dense_3d", (5, 6), [L("Dense", 4)], "Dense on a 3-D input (last axis)")
    add_chain("dense_4d", (4, 3, 5), [L("Dense", 4)], "Dense on a 4-D input (last axis)")
    add_chain("dense_nobias", (12,), [L("Dense", 5, use_bias=False)], "Dense use_bias=False")
    add_chain("dense_relu", (12,), [L("Dense", 5, activation="relu")], "Dense with fused relu")
    add_chain("dense_softmax", (12,), [L("Dense", 5, activation="softmax")], "Dense with softmax output")

    # BatchNormalization
    BN = "BatchNormalization"
    add_chain("bn_after_conv_nobias", S, [L("Conv2D", 4, 3, padding="same", use_bias=False), L(BN), L("ReLU")],
              "Conv2D(use_bias=False) -> BN -> ReLU (foldable)")
    add_chain("bn_after_conv_bias", S, [L("Conv2D", 4, 3, padding="same"), L(BN)], "Conv2D(bias) -> BN (foldable)")
    add_chain("bn_after_dense", (12,), [L("Dense", 6), L(BN)], "Dense -> BN on 2-D (foldable)")
    add_chain("bn_after_input", S, [L(BN), L("Conv2D", 4, 3, padding="same")],
              "BN directly after the Input (not foldable)")
    add_chain("bn_center_false", S, [L("Conv2D", 4, 1, use_bias=False), L(BN, center=False)], "BN center=False")
    add_chain("bn_scale_false", S, [L("Conv2D", 4, 1, use_bias=False), L(BN, scale=False)], "BN scale=False")
    add_chain("bn_center_scale_false", S, [L(BN, center=False, scale=False)], "BN center=False scale=False")
    add_chain("bn_epsilon_small", S, [L("Conv2D", 4, 1, use_bias=False), L(BN, epsilon=1e-5)], "BN epsilon=1e-5")
    add_chain("bn_epsilon_large", S, [L("Conv2D", 4, 1, use_bias=False), L(BN, epsilon=0.1)],
              "BN epsilon=0.1 (large enough to show in outputs; default is 1e-3)")
    add_chain("bn_axis_1", S, [L(BN, axis=1)], "BN axis=1 on NHWC (normalises over rows)")

    def bn_shared(K):
        inp = K.Input(S)
        c = K.layers.Conv2D(4, 3, padding="same", use_bias=False)(inp)
        b = K.layers.BatchNormalization()(c)
        return K.Model(inp, K.layers.Add()([b, c]), name="bn_conv_output_shared")
    add("bn_conv_output_shared", bn_shared, "Conv2D output feeds BN and also an Add (BN not foldable)")

    # LayerNormalization
    LN = "LayerNormalization"
    add_chain("ln_axis_last", S, [L(LN)], "LayerNormalization axis=-1")
    add_chain("ln_axis_123", S, [L(LN, axis=[1, 2, 3])], "LayerNormalization axis=[1, 2, 3]")
    add_chain("ln_center_false", S, [L(LN, center=False)], "LayerNormalization center=False")
    add_chain("ln_scale_false", S, [L(LN, scale=False)], "LayerNormalization scale=False")
    add_chain("ln_dense_2d", (12,), [L("Dense", 6), L(LN, epsilon=1e-5)],
              "Dense -> LayerNormalization(eps 1e-5) on 2-D")
    add_chain("ln_rms_scaling", S, [L(LN, rms_scaling=True)], "LayerNormalization rms_scaling=True (K3 only, "
              "deprecated in 3.15: it divides by sqrt(var + eps) without centring)", versions=K3_ONLY)
    add_chain("rms_normalization", S, [L("RMSNormalization")], "RMSNormalization (K3 only)", versions=K3_ONLY)

    # Activation strings
    k3_only_acts = ("hard_swish", "hard_silu", "celu")
    for act in ("relu", "relu6", "sigmoid", "hard_sigmoid", "hard_swish", "hard_silu", "swish", "silu", "gelu",
                "elu", "selu", "softplus", "softsign", "leaky_relu", "tanh", "softmax", "exponential", "linear",
                "mish", "celu"):
        notes = ("hard_sigmoid: K2 clip(0.2x+0.5), K3 clip(x/6+0.5); the references differ",) \
            if act == "hard_sigmoid" else ()
        add_chain(f"act_{act}", (6, 5, 4), [L("Activation", act)], f"Activation('{act}')", inputs=3.0,
                  versions=K3_ONLY if act in k3_only_acts else ("k3", "k2"), notes=notes)

    # Activation layers
    for nm, kw in (("relu_layer_default", {}), ("relu_max6", dict(max_value=6.0)),
                   ("relu_slope0p1", dict(negative_slope=0.1)), ("relu_threshold0p5", dict(threshold=0.5)),
                   ("relu_max4_slope0p2_thr0p5", dict(max_value=4.0, negative_slope=0.2, threshold=0.5))):
        add_chain(nm, (6, 5, 4), [L("ReLU", **kw)], f"ReLU layer {kw or 'defaults'}", inputs=3.0)
    add_chain("leaky_relu_layer_default", (6, 5, 4), [leaky()], "LeakyReLU default slope 0.3", inputs=3.0)
    add_chain("leaky_relu_layer_0p1", (6, 5, 4), [leaky(0.1)],
              "LeakyReLU slope 0.1 (K3 negative_slope=, K2 alpha=)", inputs=3.0)
    add_chain("prelu_full", (6, 5, 4), [L("PReLU")], "PReLU, alpha per element (6, 5, 4)", inputs=3.0)
    add_chain("prelu_shared12", (6, 5, 4), [L("PReLU", shared_axes=[1, 2])], "PReLU shared_axes=[1, 2]", inputs=3.0)
    add_chain("elu_layer_0p7", (6, 5, 4), [L("ELU", alpha=0.7)], "ELU layer alpha=0.7", inputs=3.0)
    add_chain("softmax_layer_last", (6, 5, 4), [L("Softmax")], "Softmax layer axis=-1", inputs=3.0)
    add_chain("softmax_layer_axis1", (6, 5, 4), [L("Softmax", axis=1)], "Softmax layer axis=1", inputs=3.0)

    # Pooling
    for kind in ("MaxPooling2D", "AveragePooling2D"):
        p = "maxpool" if kind.startswith("Max") else "avgpool"
        for nm, kw in (("p2_valid", dict(pool_size=2)), ("p2_same", dict(pool_size=2, padding="same")),
                       ("p2_s1_valid", dict(pool_size=2, strides=1)),
                       ("p3_s2_valid", dict(pool_size=3, strides=2)),
                       ("p3_s2_same", dict(pool_size=3, strides=2, padding="same")),
                       ("p3_s1_same", dict(pool_size=3, strides=1, padding="same")),
                       ("p2x3_same", dict(pool_size=(2, 3), padding="same"))):
            add_chain(f"{p}_{nm}", S, [L(kind, **kw)], f"{kind} {kw} on 9x7x5" +
                      (" (same excludes padding from the average)" if p == "avgpool" and "same" in nm else ""))
    for kind, p in (("GlobalAveragePooling2D", "gap"), ("GlobalMaxPooling2D", "gmp")):
        add_chain(p, S, [L(kind)], f"{kind} keepdims=False")
        add_chain(f"{p}_keepdims", S, [L(kind, keepdims=True)], f"{kind} keepdims=True")

    # Padding, cropping, upsampling
    add_chain("zeropad_1", S, [L("ZeroPadding2D", 1)], "ZeroPadding2D(1)")
    add_chain("zeropad_asym", S, [L("ZeroPadding2D", ((1, 2), (0, 3)))], "ZeroPadding2D(((1, 2), (0, 3)))")
    add_chain("crop_asym", S, [L("Cropping2D", ((1, 0), (2, 1)))], "Cropping2D(((1, 0), (2, 1)))")
    for interp in ("nearest", "bilinear"):
        add_chain(f"upsample_{interp}_2", S, [L("UpSampling2D", 2, interpolation=interp)], f"UpSampling2D 2 {interp}")
        add_chain(f"upsample_{interp}_2x3", S, [L("UpSampling2D", (2, 3), interpolation=interp)],
                  f"UpSampling2D (2, 3) {interp}")

    # Merge layers (two or three Inputs)
    m2 = ((6, 5, 4), (6, 5, 4))
    for cls in ("Add", "Subtract", "Multiply", "Average", "Maximum", "Minimum"):
        add(f"merge_{cls.lower()}", merge(f"merge_{cls.lower()}", m2, L(cls)), f"{cls} of two inputs")
    add("merge_add3", merge("merge_add3", m2 + ((6, 5, 4),), L("Add")), "Add of three inputs")
    add("concat_last", merge("concat_last", ((6, 5, 4), (6, 5, 3)), L("Concatenate")), "Concatenate axis=-1")
    add("concat_axis1", merge("concat_axis1", ((6, 5, 4), (3, 5, 4)), L("Concatenate", axis=1)),
        "Concatenate axis=1")

    def se(K):
        inp = K.Input((6, 5, 8))
        s = K.layers.GlobalAveragePooling2D(keepdims=True)(inp)
        s = K.layers.Conv2D(2, 1, activation="relu")(s)
        s = K.layers.Conv2D(8, 1, activation="sigmoid")(s)
        return K.Model(inp, K.layers.Multiply()([inp, s]), name="multiply_broadcast_se")
    add("multiply_broadcast_se", se, "Squeeze-excite: Multiply (N,H,W,C)*(N,1,1,C) broadcast")

    # Shape layers
    add_chain("flatten", S, [L("Flatten")], "Flatten (row-major NHWC order)")
    add_chain("reshape_rows", S, [L("Reshape", (-1, 5))], "Reshape to (-1, C)")
    add_chain("reshape_4d", S, [L("Reshape", (7, 3, 15))], "Reshape to another 4-D shape")
    add_chain("permute_213", S, [L("Permute", (2, 1, 3))], "Permute((2, 1, 3))")
    add_chain("permute_312", S, [L("Permute", (3, 1, 2))], "Permute((3, 1, 2))")

    # Identity at inference
    for nm, mk in (("dropout", L("Dropout", 0.3)), ("spatial_dropout2d", L("SpatialDropout2D", 0.3)),
                   ("gaussian_noise", L("GaussianNoise", 0.5)), ("gaussian_dropout", L("GaussianDropout", 0.3))):
        add_chain(nm, S, [L("Conv2D", 4, 3, padding="same"), mk], f"Conv2D -> {nm} (identity at inference)")

    # Preprocessing
    add_chain("rescaling_scalar", (6, 5, 3), [L("Rescaling", 1 / 127.5, offset=-1.0)],
              "Rescaling(1/127.5, offset=-1)", inputs="pixels")
    add_chain("rescaling_per_channel", (6, 5, 3), [L("Rescaling", [0.5, 1.0, 2.0], offset=[0.1, 0.0, -0.2])],
              "Rescaling with per-channel scale and offset lists")

    def norm_adapted(K):
        rng = np.random.default_rng(7)
        n = K.layers.Normalization()
        n.adapt(rng.normal([1.0, -2.0, 0.5], [2.0, 0.5, 3.0], (32, 6, 5, 3)).astype("float32"))
        inp = K.Input((6, 5, 3))
        return K.Model(inp, n(inp), name="normalization_adapted")
    add("normalization_adapted", norm_adapted, "Normalization adapted on data (mean/variance/count weights)")
    add_chain("normalization_constant", (6, 5, 3), [L("Normalization", mean=[1.0, -2.0, 0.5],
                                                      variance=[4.0, 0.25, 9.0])],
              "Normalization with constant mean/variance in the config (no weights)")


def _graph_cases():
    def seq(K):
        l = K.layers
        return K.Sequential([K.Input((8, 8, 3)), l.Conv2D(6, 3, padding="same", use_bias=False),
                             l.BatchNormalization(), l.ReLU(), l.MaxPooling2D(), l.Conv2D(8, 3),
                             l.GlobalAveragePooling2D(), l.Dense(4)], name="graph_sequential")
    add("graph_sequential", seq, "Sequential model", tags=("graph",))

    def functional(K):
        l = K.layers
        inp = K.Input((8, 8, 3))
        x = l.Conv2D(6, 3, padding="same", activation="relu")(inp)
        a = l.Conv2D(4, 1)(x)
        b = l.DepthwiseConv2D(3, padding="same")(x)
        x = l.Concatenate()([a, b])
        x = l.Conv2D(8, 3, strides=2, padding="same")(x)
        return K.Model(inp, l.Dense(3)(l.GlobalAveragePooling2D()(x)), name="graph_functional")
    add("graph_functional", functional, "Functional model with a branch and Concatenate", tags=("graph",))

    def nested_seq(K):
        l = K.layers
        inner = K.Sequential([K.Input((8, 8, 6)), l.Conv2D(6, 3, padding="same", use_bias=False),
                              l.BatchNormalization(), l.ReLU()], name="inner_seq")
        inp = K.Input((8, 8, 3))
        x = inner(l.Conv2D(6, 3, padding="same")(inp))
        return K.Model(inp, l.Dense(4)(l.GlobalAveragePooling2D()(x)), name="graph_nested_sequential")
    add("graph_nested_sequential", nested_seq, "Sequential nested inside a Functional", tags=("graph",))

    def func_in_seq(K):
        l = K.layers
        i = K.Input((8, 8, 3))
        x = l.ReLU()(l.BatchNormalization()(l.Conv2D(6, 3, padding="same", use_bias=False)(i)))
        inner = K.Model(i, l.Add()([x, l.Conv2D(6, 1)(i)]), name="inner_func")
        return K.Sequential([K.Input((8, 8, 3)), inner, l.GlobalAveragePooling2D(), l.Dense(4)],
                            name="graph_functional_in_sequential")
    add("graph_functional_in_sequential", func_in_seq, "Functional (with an Add) nested inside a Sequential",
        tags=("graph",))

    def shared_conv(K):
        l = K.layers
        a, b = K.Input((8, 8, 3), name="in_a"), K.Input((8, 8, 3), name="in_b")
        conv = l.Conv2D(4, 3, padding="same", name="shared_conv")
        return K.Model([a, b], l.Subtract()([conv(a), conv(b)]), name="graph_shared_conv")
    add("graph_shared_conv", shared_conv, "One Conv2D called on two inputs, Subtract of the results",
        tags=("graph",))

    def shared_dense(K):
        l = K.layers
        inp = K.Input((6,))
        d = l.Dense(6, activation="tanh", name="shared_dense")
        return K.Model(inp, l.Dense(2)(d(d(inp))), name="graph_shared_dense_twice")
    add("graph_shared_dense_twice", shared_dense, "One Dense applied twice in a row (on its own output)",
        tags=("graph",))

    def multi_in(K):
        l = K.layers
        a, b = K.Input((8, 8, 3), name="image_a"), K.Input((6, 6, 2), name="image_b")
        fa = l.GlobalAveragePooling2D()(l.Conv2D(4, 3, activation="relu")(a))
        fb = l.GlobalMaxPooling2D()(l.Conv2D(3, 3, padding="same")(b))
        return K.Model([a, b], l.Dense(4)(l.Concatenate()([fa, fb])), name="graph_multi_input")
    add("graph_multi_input", multi_in, "Two image inputs of different shapes", tags=("graph",))

    def multi_out(K):
        l = K.layers
        inp = K.Input((8, 8, 3))
        x = l.Conv2D(6, 3, padding="same", activation="relu")(inp)
        vec = l.Dense(3, name="head_vec")(l.GlobalAveragePooling2D()(x))
        fmap = l.Conv2D(2, 1, activation="sigmoid", name="head_map")(x)
        return K.Model(inp, [vec, fmap], name="graph_multi_output")
    add("graph_multi_output", multi_out, "Two outputs: a vector head and a feature-map head", tags=("graph",))

    def partial(K):
        l = K.layers
        inp = K.Input((8, 8, 3))
        c = l.Conv2D(6, 3, padding="same", use_bias=False, name="frozen_conv")
        bn = l.BatchNormalization(name="frozen_bn")
        c.trainable = bn.trainable = False
        x = l.ReLU()(bn(c(inp)))
        x = l.Conv2D(4, 3, name="trainable_conv")(x)
        return K.Model(inp, l.Dense(3, name="head")(l.GlobalAveragePooling2D()(x)), name="graph_partial_trainable")
    add("graph_partial_trainable", partial, "Some layers trainable=False (trainable != total params)",
        tags=("graph",))

    def transfer(K):
        base = K.applications.MobileNetV2(input_shape=(96, 96, 3), alpha=0.35, include_top=False, weights=None)
        base.trainable = False
        inputs = K.Input((96, 96, 3))
        x = base(inputs, training=False)
        x = K.layers.GlobalAveragePooling2D()(x)
        x = K.layers.Dropout(0.2)(x)
        outputs = K.layers.Dense(5, activation="softmax")(x)
        return K.Model(inputs, outputs, name="transfer_mobilenet_v2")
    add("transfer_mobilenet_v2", transfer, "Transfer-learning model as in the Keras tutorial: frozen MobileNetV2 "
        "a0.35 96x96 base called with training=False, GAP, Dropout(0.2), Dense(5, softmax)",
        tags=("graph", "application", "transfer"), inputs=0.5, calibrate=True)


def _app(fn, **kw):
    def build(K):
        return getattr(K.applications, fn)(weights=None, classifier_activation=None, **kw)
    return build


def resnet_small(K):
    l = K.layers

    def cbr(x, f, k=3, s=1, relu=True):
        x = l.Conv2D(f, k, strides=s, padding="same", use_bias=False)(x)
        x = l.BatchNormalization()(x)
        return l.Activation("relu")(x) if relu else x

    def block(x, f, s):
        y = cbr(cbr(x, f, 3, s), f, 3, 1, relu=False)
        sc = cbr(x, f, 1, s, relu=False) if s != 1 or x.shape[-1] != f else x  # projection shortcut
        return l.ReLU()(l.Add()([y, sc]))

    inp = K.Input((32, 32, 3))
    x = l.ZeroPadding2D(1)(inp)
    x = l.ReLU()(l.BatchNormalization(epsilon=1.001e-5)(l.Conv2D(16, 3, use_bias=False)(x)))
    x = l.MaxPooling2D(3, strides=2, padding="same")(x)
    for f, s in ((16, 1), (16, 1), (32, 2), (32, 1), (64, 2)):
        x = block(x, f, s)
    return K.Model(inp, l.Dense(10)(l.GlobalAveragePooling2D()(x)), name="resnet_small")


def _app_cases():
    app = ("application",)
    add("mobilenet_v2", _app("MobileNetV2", input_shape=(96, 96, 3), alpha=0.35, classes=10),
        "keras.applications.MobileNetV2 alpha=0.35 96x96 classes=10, logits", tags=app, inputs=0.5, calibrate=True)
    add("mobilenet_v3_small", _app("MobileNetV3Small", input_shape=(96, 96, 3), alpha=0.75, minimalistic=False,
                                   classes=10),
        "keras.applications.MobileNetV3Small alpha=0.75 96x96 classes=10, include_preprocessing (Rescaling), logits",
        tags=app, inputs="pixels", calibrate=True)
    add("efficientnet_b0", _app("EfficientNetB0", input_shape=(64, 64, 3), classes=10),
        "keras.applications.EfficientNetB0 64x64 classes=10 (Rescaling + Normalization inside), logits",
        tags=app, inputs="pixels", calibrate=True)
    add("resnet_small", resnet_small, "Hand-built ResNet-style net 32x32: conv-BN-ReLU, identity and projection "
        "shortcuts with Add, stride-2 stages, GAP, Dense(10)", tags=app, calibrate=True)

    big = ("application", "large")
    for nm, fn, size, kw, inp in (
            ("mobilenet", "MobileNet", 64, {}, 0.5), ("mobilenet_v3_large", "MobileNetV3Large", 64, {}, "pixels"),
            ("resnet50", "ResNet50", 64, {}, 30.0), ("densenet121", "DenseNet121", 64, {}, 1.0),
            ("nasnet_mobile", "NASNetMobile", 64, {}, 0.5), ("xception", "Xception", 71, {}, 0.5),
            ("inception_v3", "InceptionV3", 75, {}, 0.5), ("vgg16", "VGG16", 64, {}, 30.0)):
        add(nm, _app(fn, input_shape=(size, size, 3), classes=10, **kw),
            f"keras.applications.{fn} {size}x{size} classes=10, logits (large: --large only, not committed)",
            tags=big, inputs=inp, calibrate=True, large=True)


_CUSTOM = {}


def custom_layer_class(K):
    """A tiny subclassed layer, registered so Keras can save and reload it (edgecore must refuse it)."""
    if K.__name__ not in _CUSTOM:
        reg = K.saving.register_keras_serializable if is_k3(K) else K.utils.register_keras_serializable

        @reg(package="edgecore_fixtures")
        class ScaleShift(K.layers.Layer):
            def build(self, input_shape):
                self.gamma = self.add_weight(name="gamma", shape=(input_shape[-1],), initializer="ones")
                self.bias = self.add_weight(name="bias", shape=(input_shape[-1],), initializer="zeros")
                super().build(input_shape)

            def call(self, x):
                return x * self.gamma + self.bias

        _CUSTOM[K.__name__] = ScaleShift
    return _CUSTOM[K.__name__]


def _bad_cases():
    bad = ("bad-input",)

    def lam(K):
        inp = K.Input((6, 5, 4))
        x = K.layers.Conv2D(3, 1)(inp)
        # compiled under a fixed file name: the saved bytecode would otherwise embed this file's path
        fn = eval(compile("lambda t: t * 2.0 + 1.0", "<edgecore-fixture>", "eval"))  # noqa: S307
        return K.Model(inp, K.layers.Lambda(fn)(x), name="bad_lambda")
    add("bad_lambda", lam, "Model with a Lambda layer (Python bytecode in the config): edgecore must refuse it "
        "without executing it", tags=bad, load_kwargs={"safe_mode": False},
        notes=("Keras 3 reloads it only with safe_mode=False",
               "the config holds marshalled CPython 3.11 bytecode (K3: function.config.code; K2: function[0])"))

    def custom(K):
        inp = K.Input((6, 5, 4))
        x = K.layers.Conv2D(3, 1)(inp)
        return K.Model(inp, custom_layer_class(K)()(x), name="bad_custom_layer")
    add("bad_custom_layer", custom, "Model with a registered custom layer class 'edgecore_fixtures>ScaleShift': "
        "edgecore must refuse the unknown class", tags=bad)


# Training cases (tag "training"): the model files hold the INITIAL model; the hook below trains copies
# of it with Keras 3 and stores the traces in the k3 npz (layout in weights/README.md).

TRAIN_STEPS = 5             # train_on_batch calls per variant, one fixed batch each
TRAIN_RECORD = (1, 5)       # weights are recorded after these steps
TRAIN_BIG_FROZEN = 20_000   # frozen layers with more params are recorded by sha256 digest only
TRAIN_QUANT = 8             # training inputs are rounded to steps of scale/8: they compress to ~1 byte


@dataclass(frozen=True)
class Variant:
    """One compile() of a training case. optimizer/loss: (Keras class name, constructor kwargs); every
    other hyper-parameter is the Keras 3 default (the full get_config() goes into the npz)."""
    name: str
    optimizer: tuple
    loss: tuple
    metrics: tuple = ("accuracy",)
    onehot: bool = False    # targets are train/y_onehot (categorical losses) instead of class ids
    arrays: tuple = None    # overrides TrainSpec.record_arrays for this variant
    trainable: tuple = ()   # (layer name, flag) pairs set before compile (a freeze pattern)


@dataclass(frozen=True)
class TrainSpec:
    target: str             # "classes" (int32 ids), "binary" (float32 0/1, (n, 1)) or "regression"
    outputs: int            # classes, or regression outputs; 1 for binary
    variants: tuple
    batch: int = 16
    val: int = 16
    scale: float = 1.0      # input noise std
    # The switches below are off for the first nine cases, whose files they would change.
    k2_traces: bool = False     # tf_keras trains too: the same trace layout in the k2 npz
    nested_paths: bool = False  # a nested model with trained parts is recorded leaf by leaf, by path
    record_arrays: tuple = TRAIN_RECORD  # the TRAIN_RECORD steps whose weights are stored as arrays
    shape: tuple = None     # training input shape (for models whose input has open dims)
    pixels: bool = False    # inputs are integer pixels in [0, 255] instead of N(0, scale) noise

    @property
    def extended(self):
        """Cases made with either switch also get the checks and keys added with them (config
        framework/record_arrays, train/<V>/change, train/paths, train/bn_moving_update)."""
        return self.k2_traces or self.nested_paths


SCE, CCE, BCE = "SparseCategoricalCrossentropy", "CategoricalCrossentropy", "BinaryCrossentropy"
SGD01 = ("SGD", {"learning_rate": 0.1})
SGD_MOM = ("SGD", {"learning_rate": 0.1, "momentum": 0.9})
# The transfer head sees 1280 ReLU6 features (sum of squares ~3000 per sample): lr 0.01 already diverges
SGD_MOM_TRANSFER = ("SGD", {"learning_rate": 0.001, "momentum": 0.9})
SGD_NEST = ("SGD", {"learning_rate": 0.1, "momentum": 0.9, "nesterov": True})
ADAM = ("Adam", {})


def training_hook(spec):
    """The hook of a training case: Keras 3 (and tf_keras, with spec.k2_traces) trains fresh copies of
    the initial model, one per variant. Both frameworks get the same batches (the hook rng is seeded
    per case) and the same initial weights (the k2 model holds the k3 model's weights)."""
    def hook(K, model, xs, ys, rng):
        return record_training(K, model, spec, rng) if is_k3(K) or spec.k2_traces else {}
    return hook


def _training_cases():
    def case(name, build, desc, spec, notes=(), **kw):
        add(name, build, desc, tags=("training",), notes=notes, hooks=(training_hook(spec),), **kw)

    def mlp(name, n_in, hidden, n_out, act):
        def build(K):
            inp = K.Input((n_in,), name="features")
            x = K.layers.Dense(hidden, activation="relu", name="hidden")(inp)
            return K.Model(inp, K.layers.Dense(n_out, activation=act, name="head")(x), name=name)
        return build

    sce = (SCE, {})
    case("train_dense_head", mlp("train_dense_head", 32, 16, 5, "softmax"),
         "Training: Input(32) -> Dense(16, relu) -> Dense(5, softmax); every optimizer with sparse CE, "
         "and Adam with categorical CE (one-hot, and label_smoothing=0.1)",
         TrainSpec("classes", 5, (
             Variant("sgd", SGD01, sce), Variant("sgd_momentum", SGD_MOM, sce),
             Variant("sgd_nesterov", SGD_NEST, sce), Variant("adam", ADAM, sce),
             Variant("adamw", ("AdamW", {}), sce), Variant("rmsprop", ("RMSprop", {}), sce),
             Variant("adamw_wd0p5", ("AdamW", {"learning_rate": 0.01, "weight_decay": 0.5}), sce),
             Variant("adam_cce", ADAM, (CCE, {}), onehot=True),
             Variant("adam_cce_ls", ADAM, (CCE, {"label_smoothing": 0.1}), onehot=True))),
         notes=("adamw uses the Keras defaults (weight_decay 0.004 at lr 0.001 shrinks weights by 4e-6 per "
                "step, invisible at 1e-4); adamw_wd0p5 (lr 0.01, weight_decay 0.5: 0.5% per step) makes the "
                "decay visible",))
    case("train_dense_logits", mlp("train_dense_logits", 32, 16, 5, None),
         "Training: Input(32) -> Dense(16, relu) -> Dense(5) logits; Adam with from_logits=True sparse and "
         "categorical CE (and label_smoothing=0.1), SGD with sparse CE",
         TrainSpec("classes", 5, (
             Variant("adam_sce_logits", ADAM, (SCE, {"from_logits": True})),
             Variant("adam_cce_logits", ADAM, (CCE, {"from_logits": True}), onehot=True),
             Variant("adam_cce_logits_ls", ADAM, (CCE, {"from_logits": True, "label_smoothing": 0.1}), onehot=True),
             Variant("sgd_sce_logits", SGD01, (SCE, {"from_logits": True})))))
    case("train_binary_head", mlp("train_binary_head", 20, 8, 1, "sigmoid"),
         "Training: Input(20) -> Dense(8, relu) -> Dense(1, sigmoid); binary CE (and label_smoothing=0.1) "
         "with Adam and SGD",
         TrainSpec("binary", 1, (
             Variant("adam_bce", ADAM, (BCE, {})),
             Variant("adam_bce_ls", ADAM, (BCE, {"label_smoothing": 0.1})),
             Variant("sgd_bce", SGD01, (BCE, {})))))
    case("train_binary_logits", mlp("train_binary_logits", 20, 8, 1, None),
         "Training: Input(20) -> Dense(8, relu) -> Dense(1) logit; Adam with binary CE from_logits=True",
         TrainSpec("binary", 1, (Variant("adam_bce_logits", ADAM, (BCE, {"from_logits": True})),)),
         notes=("'accuracy' resolves to BinaryAccuracy(threshold=0.5) applied to the LOGIT: Keras does not "
                "know the output is a logit, so a sample counts as class 1 when logit > 0.5",))
    case("train_regression_mse", mlp("train_regression_mse", 20, 8, 3, None),
         "Training: Input(20) -> Dense(8, relu) -> Dense(3) linear regression; MeanSquaredError with SGD "
         "and Adam, no metric",
         TrainSpec("regression", 3, (Variant("sgd_mse", SGD01, ("MeanSquaredError", {}), metrics=()),
                                     Variant("adam_mse", ADAM, ("MeanSquaredError", {}), metrics=()))))

    def transfer(K):
        base = K.applications.MobileNetV2(input_shape=(32, 32, 3), alpha=0.35, include_top=False, weights=None)
        base.trainable = False
        inputs = K.Input((32, 32, 3), name="image")
        x = base(inputs, training=False)
        x = K.layers.GlobalAveragePooling2D(name="pool")(x)
        x = K.layers.Dropout(0.0, name="dropout")(x)
        return K.Model(inputs, K.layers.Dense(4, activation="softmax", name="head")(x),
                       name="train_transfer_frozen_base")
    case("train_transfer_frozen_base", transfer,
         "Training: the Keras transfer recipe at small scale: MobileNetV2 a0.35 32x32 base (include_top=False, "
         "trainable=False, called with training=False), GAP, Dropout(0.0), Dense(4, softmax); only the head "
         "trains. Dropout rate 0.0 (the tutorial uses 0.2) so the Keras step is deterministic",
         TrainSpec("classes", 4, (Variant("adam", ADAM, sce), Variant("sgd_momentum", SGD_MOM_TRANSFER, sce)),
                   batch=8, val=8, scale=0.5),
         inputs=0.5, calibrate=True,
         notes=("the frozen base (260 weights, 410k params) is recorded by sha256 digest only (train/<V>/sha256); "
                "the generator checks it is bit-for-bit unchanged after every step",
                "sgd_momentum uses learning rate 0.001: the head sees 1280 ReLU6 features, and 0.1 or the "
                "Keras default 0.01 diverge"))

    def last_block(K):
        l = K.layers
        inp = K.Input((16, 16, 3), name="image")
        frozen = [l.Conv2D(8, 3, padding="same", use_bias=False, name="f_conv"), l.BatchNormalization(name="f_bn"),
                  l.ReLU(name="f_relu"), l.DepthwiseConv2D(3, strides=2, padding="same", use_bias=False,
                                                           name="f_dw"),
                  l.BatchNormalization(name="f_dw_bn"), l.ReLU(name="f_dw_relu")]
        x = inp
        for layer in frozen:
            layer.trainable = False
            x = layer(x)
        x = l.Conv2D(16, 1, use_bias=False, name="b_expand")(x)
        bn = l.BatchNormalization(name="b_bn")
        bn.trainable = False  # inference mode in fit; see the case notes
        x = l.ReLU(name="b_relu")(bn(x))
        c = l.Conv2D(8, 3, strides=2, padding="same", activation="relu", name="b_conv")(x)
        d = l.DepthwiseConv2D(3, padding="same", activation="relu", name="b_dw")(c)
        x = l.Concatenate(name="b_concat")([l.Add(name="b_add")([d, c]), c])
        x = l.Flatten(name="b_flatten")(l.MaxPooling2D(name="b_pool")(x))
        return K.Model(inp, l.Dense(3, activation="softmax", name="head")(x), name="train_last_block")
    case("train_last_block", last_block,
         "Training: conv net 16x16 whose first block (Conv2D-BN-ReLU-DepthwiseConv2D s2-BN-ReLU) is frozen and "
         "whose last block trains: Conv2D 1x1 -> BN (trainable=False) -> ReLU -> Conv2D 3x3 s2 relu -> "
         "DepthwiseConv2D relu -> Add(residual) -> Concatenate -> MaxPooling2D -> Flatten -> Dense(3, softmax)",
         TrainSpec("classes", 3, (Variant("adam", ADAM, sce), Variant("sgd", SGD01, sce))),
         notes=("b_bn runs in inference mode because it is trainable=False (its conv b_expand trains). A nested "
                "model or layer called with training=False would NOT do it in Keras 3.15: fit calls the model "
                "with training=True and the Functional overrides the recorded training=False of every node "
                "(see train_bn_unfrozen)",))

    def frozen_flags(K):
        l = K.layers
        inp = K.Input((8, 8, 3), name="image")
        x = l.Conv2D(6, 3, padding="same", name="conv_frozen", trainable=False)(inp)
        x = l.ReLU(name="relu_1")(l.BatchNormalization(name="bn_frozen", trainable=False)(x))
        inner = K.Sequential([K.Input((8, 8, 6)), l.Conv2D(6, 3, padding="same", use_bias=False, name="seq_conv"),
                              l.BatchNormalization(name="seq_bn"), l.ReLU(name="seq_relu")], name="frozen_seq")
        inner.trainable = False
        x = l.Conv2D(4, 3, name="conv_trainable")(inner(x))
        x = l.BatchNormalization(name="bn_after_trainable", trainable=False)(x)
        x = l.GlobalAveragePooling2D(name="gap")(x)
        x = l.Dense(8, activation="relu", name="dense_frozen", trainable=False)(x)
        return K.Model(inp, l.Dense(3, activation="softmax", name="head")(x), name="train_frozen_flags")
    case("train_frozen_flags", frozen_flags,
         "Training: layers saved trainable=False (conv, BN, a nested Sequential, a BN after a trainable conv, a "
         "Dense between the trainable conv and the head): only conv_trainable and head change",
         TrainSpec("classes", 3, (Variant("adam", ADAM, sce),)))

    def bn_unfrozen(K):
        l = K.layers
        bi = K.Input((8, 8, 6))
        b = l.ReLU(name="relu")(l.BatchNormalization(name="bn")(l.Conv2D(6, 1, use_bias=False, name="conv")(bi)))
        block = K.Model(bi, b, name="block")
        inp = K.Input((8, 8, 3), name="image")
        x = block(l.Conv2D(6, 3, padding="same", name="stem")(inp), training=False)
        return K.Model(inp, l.Dense(3, activation="softmax", name="head")(l.GlobalAveragePooling2D(name="gap")(x)),
                       name="train_bn_unfrozen")
    case("train_bn_unfrozen", bn_unfrozen,
         "Training: the fine-tuning trap: a trainable nested block (Conv2D 1x1 -> BN -> ReLU) called with "
         "training=False. Keras 3.15 fit runs its BN in TRAINING mode anyway (batch statistics, moving stats "
         "updated with momentum 0.99); tf_keras would honour training=False",
         TrainSpec("classes", 3, (Variant("adam", ADAM, sce), Variant("sgd", SGD01, sce))),
         notes=("Keras 3.15 Functional.call passes its own training=True to every node, replacing the "
                "training=False recorded in the node's kwargs; a BN then runs in inference mode only when "
                "trainable=False. This case records what Keras really does, not the tutorial's claim",))


# Keras's fit (train_fit_conventions): what fit adds around train_on_batch

FIT_ARGS = {"batch_size": 8, "epochs": 3, "shuffle": False, "validation_split": 0.25, "verbose": 0}
FIT_SAMPLES = 40
FIT_NOTES = (
    "validation_split takes the LAST samples: Keras 3.15 keras/src/trainers/data_adapters/array_slicing.py "
    "train_validation_split (it is not in data_adapter_utils.py in 3.15) splits at "
    "int(floor(n * (1 - validation_split))) = 30: samples 0..29 train, 30..39 validate, before any "
    "shuffling; tf_keras's data_adapter.train_validation_split uses the same rule",
    "with shuffle=False an epoch runs the batches [0:8], [8:16], [16:24], [24:30] (the last one has 6 "
    "samples) in order; fit/<run>/weights equals the weights of a train_on_batch replay of those batches "
    "(checked bit for bit: fit/replay)",
    "history['loss'] and history['accuracy'] of an epoch are means over its batches weighted by batch size "
    "(each batch's loss is taken before that batch's update), i.e. sample means: checked against the replay "
    "to 1e-6 relative, and the unweighted batch mean is recorded in fit/replay to show the difference",
    "history['val_loss'] / ['val_accuracy'] are evaluate() on samples 30..39 (in batches of batch_size) after "
    "the epoch's last update",
    "y of shape (N,) and (N, 1) give identical histories and weights (fit/identical), in Keras 3 and tf_keras: "
    "the loss expands y to the rank of the (N, 1) output, and 'accuracy' resolves to binary accuracy "
    "because the output's last dim is 1",
)


def fit_hook(K, model, xs, ys, rng):
    """Keys under fit/: the data, the fit arguments, and per run ('flat': y (N,), 'column': y (N, 1)) the
    history of every key per epoch and the final weights; plus a train_on_batch replay of the same
    batches (fit/replay) that checks how fit batches, splits and averages."""
    n_in = int(model.input_shape[-1])
    step = 1.0 / TRAIN_QUANT  # as training_data: rounded noise, labels from a noisy linear teacher
    x = (np.round(rng.normal(0.0, 1.0, (FIT_SAMPLES, n_in)) / step) * step).astype(np.float32)
    z = (x - x.mean(axis=0)) / (x.std(axis=0) + 1e-12) @ rng.normal(0.0, 1.0, n_in) / math.sqrt(n_in)
    y = (z + rng.normal(0.0, 0.5, FIT_SAMPLES) > 0).astype(np.float32)
    seed = int(rng.integers(1 << 31))
    split = int(math.floor(FIT_SAMPLES * (1.0 - FIT_ARGS["validation_split"])))
    arrays = {"fit/x": x, "fit/y": y, "fit/args": np.array(json.dumps(FIT_ARGS)),
              "fit/split": np.array(json.dumps({"train": [0, split], "validation": [split, FIT_SAMPLES]}))}
    initial, model_json = model.get_weights(), model.to_json()

    def fresh():
        K.utils.set_random_seed(seed)
        m = K.models.model_from_json(model_json)
        m.set_weights(initial)
        opt, loss = K.optimizers.SGD(learning_rate=0.1), K.losses.BinaryCrossentropy()
        m.compile(optimizer=opt, loss=loss, metrics=["accuracy"])
        return m, opt, loss

    runs = {}
    for run, yy in (("flat", y), ("column", y[:, None])):
        m, opt, loss = fresh()
        hist = m.fit(x, yy, **FIT_ARGS).history
        runs[run] = (hist, m.get_weights())
        p = f"fit/{run}"
        arrays[f"{p}/config"] = np.array(json.dumps({
            "optimizer": {"class_name": type(opt).__name__, "config": opt.get_config()},
            "loss": {"class_name": type(loss).__name__, "config": loss.get_config()},
            "metrics": ["accuracy"], "resolved_metrics": resolved_metrics(K, m), "y_shape": list(yy.shape),
            "framework": f"{K.__name__} {K.__version__}"}, default=float))
        arrays[f"{p}/history_keys"] = np.array(json.dumps(list(hist)))
        for k, vals in hist.items():
            arrays[f"{p}/history/{k}"] = np.array(vals, dtype=np.float32)
        for layer in m.layers:
            for i, w in enumerate(layer.get_weights()):
                arrays[f"{p}/weights/{layer.name}/{i}"] = w
        if not all(np.all(np.isfinite(v)) for v in hist.values()):
            raise FloatingPointError(f"fit {run}: non-finite history {hist}")
    (h1, w1), (h2, w2) = runs["flat"], runs["column"]
    identical = list(h1) == list(h2) and all(np.array_equal(h1[k], h2[k]) for k in h1) and \
        all(a.tobytes() == b.tobytes() for a, b in zip(w1, w2))
    arrays["fit/identical"] = np.array(identical)

    # replay: the same batches with train_on_batch, the validation with evaluate
    m, _, _ = fresh()
    bs = FIT_ARGS["batch_size"]
    bounds = [(s, min(s + bs, split)) for s in range(0, split, bs)]
    batch_loss, batch_acc, val = [], [], []
    for _ in range(FIT_ARGS["epochs"]):
        logs = [m.train_on_batch(x[a:b], y[a:b], return_dict=True) for a, b in bounds]
        batch_loss.append([g["loss"] for g in logs])
        batch_acc.append([g["accuracy"] for g in logs])
        ev = m.evaluate(x[split:], y[split:], batch_size=bs, verbose=0, return_dict=True)
        val.append([ev["loss"], ev["accuracy"]])
    sizes = np.array([b - a for a, b in bounds], dtype=np.float64)
    bl, ba, val = np.array(batch_loss, np.float64), np.array(batch_acc, np.float64), np.array(val)
    weighted, unweighted = (bl * sizes).sum(1) / sizes.sum(), bl.mean(1)
    replay = {
        "batches": bounds, "batch_loss": bl.tolist(), "batch_accuracy": ba.tolist(),
        "loss_weighted_by_batch_size": weighted.tolist(), "loss_unweighted_batch_mean": unweighted.tolist(),
        "accuracy_weighted_by_batch_size": ((ba * sizes).sum(1) / sizes.sum()).tolist(),
        "evaluate_validation": val.tolist(),
        "weights_identical_to_fit": all(a.tobytes() == b.tobytes() for a, b in zip(m.get_weights(), w1)),
    }
    arrays["fit/replay"] = np.array(json.dumps(replay))

    def close(a, b):
        return np.allclose(np.asarray(a, np.float64), np.asarray(b, np.float64), rtol=1e-6, atol=1e-7)
    checks = {"identical (N,) vs (N, 1)": identical, "replay weights": replay["weights_identical_to_fit"],
              "loss = weighted batch mean": close(h1["loss"], weighted),
              "accuracy = weighted batch mean": close(h1["accuracy"], replay["accuracy_weighted_by_batch_size"]),
              "val_loss = evaluate": close(h1["val_loss"], val[:, 0]),
              "val_accuracy = evaluate": close(h1["val_accuracy"], val[:, 1])}
    failed = [k for k, ok in checks.items() if not ok]
    if failed:
        raise TraceCheckError(f"fit conventions not as documented ({K.__name__}): {failed}; {replay}; {h1}")
    return arrays


# Keras's trainable rule (trainable_rule): parameter counts and flags after a script of flag changes

TRAINABLE_SCRIPT = (["base", False], ["base/base_conv2", True], ["base", True], ["", False], ["", True],
                    ["head", False], ["seq/seq_bn", False])


def trainable_hook(K, model, xs, ys, rng):
    """trainable/script (JSON [[path, value], ...], path "" = the model), and after the initial state and
    each op: trainable/counts int64 (ops+1, 3) = count_params(), trainable and non-trainable sizes;
    trainable/n_trainable_weights and trainable/n_non_trainable_weights (len of the lists);
    trainable/flags, JSON list of {path: layer.trainable} for the model ("") and every layer at every depth
    (InputLayers skipped); trainable/trained, JSON list of the leaf paths whose weights (or BN moving
    statistics) one SGD train_on_batch (mse, zero targets, the reference input x0) changed in that state."""
    m = K.models.model_from_json(model.to_json())

    def resolve(path):
        layer = m
        for name in (path.split("/") if path else []):
            layer = layer.get_layer(name)
        return layer

    counts, ntw, nntw, flags, trained = [], [], [], [], []
    leaves_ = [("/".join(p), l) for p, l in walk(K, m) if l.weights and not isinstance(l, K.Model)]
    x = xs[0]
    y = np.zeros((len(x),) + tuple(int(d) for d in m.output_shape[1:]), np.float32)

    def record():
        c = param_counts(m)
        counts.append([c["total"], c["trainable"], c["non_trainable"]])
        ntw.append(len(m.trainable_weights))
        nntw.append(len(m.non_trainable_weights))
        flags.append({"": bool(m.trainable), **{"/".join(p): bool(l.trainable) for p, l in walk(K, m)}})
        # what one train_on_batch in this state really changes (weights or BN moving statistics)
        before = {k: l.get_weights() for k, l in leaves_}
        m.compile(optimizer=K.optimizers.SGD(learning_rate=0.1), loss="mse")
        try:
            m.train_on_batch(x, y)
        except Exception as e:  # noqa: BLE001 - recorded, e.g. nothing to train
            trained.append(f"{type(e).__name__}: {str(e).splitlines()[0][:200]}")
            return
        trained.append([k for k, l in leaves_ if any(not np.array_equal(a, b)
                                                     for a, b in zip(before[k], l.get_weights()))])

    record()
    for path, value in TRAINABLE_SCRIPT:
        resolve(path).trainable = value
        record()
    return {"trainable/script": np.array(json.dumps([list(op) for op in TRAINABLE_SCRIPT])),
            "trainable/counts": np.array(counts, dtype=np.int64),
            "trainable/n_trainable_weights": np.array(ntw, dtype=np.int64),
            "trainable/n_non_trainable_weights": np.array(nntw, dtype=np.int64),
            "trainable/flags": np.array(json.dumps(flags)),
            "trainable/trained": np.array(json.dumps(trained))}


def _trainable_rule_case():
    def build(K):
        l = K.layers
        bi = K.Input((8, 8, 3), name="base_in")
        b = l.Conv2D(6, 3, padding="same", use_bias=False, name="base_conv1")(bi)
        b = l.ReLU(name="base_relu")(l.BatchNormalization(name="base_bn")(b))
        b = l.Conv2D(8, 3, padding="same", name="base_conv2")(b)
        base = K.Model(bi, l.Dense(8, name="base_dense")(b), name="base")
        seq = K.Sequential([K.Input((8, 8, 8)), l.Conv2D(8, 1, name="seq_conv"), l.BatchNormalization(name="seq_bn"),
                            l.ReLU(name="seq_relu")], name="seq")
        inp = K.Input((8, 8, 3), name="image")
        x = l.GlobalAveragePooling2D(name="gap")(seq(base(inp)))
        return K.Model(inp, l.Dense(3, name="head")(x), name="trainable_rule")
    add("trainable_rule", build,
        "Keras's trainable rule: a Functional holding a nested Functional 'base' (Conv2D, BN, Conv2D, Dense) and "
        "a nested Sequential 'seq' (Conv2D, BN, ReLU), then GAP and Dense 'head'; trainable/* records the "
        "parameter counts and every layer's flag after each op of a script of trainable changes",
        tags=("graph",), hooks=(trainable_hook,), notes=TRAINABLE_NOTES)


TRAINABLE_NOTES = (
    "flags: Keras 3.15 and tf_keras agree on every flag after every op: setting a nested model's (or the "
    "model's) trainable sets it on every layer below it, recursively; an inner layer can then be set back to "
    "True under a False outer model",
    "counts differ in that one state (op 2: base=False, then base/base_conv2=True): Keras 3 counts "
    "base_conv2's 440 params as trainable (555 trainable, 8 trainable weights) and train_on_batch trains it "
    "(trainable/trained), because a model collects the variables of all its sublayers and reads each "
    "variable's own trainable flag; tf_keras hides everything below a non-trainable model (115 trainable, "
    "base_conv2 unchanged). base=True (op 3) then turns every layer of base on again in both",
    "model.trainable=False (op 4): 0 trainable params; train_on_batch runs without error and changes "
    "nothing, in both",
    "a BN set trainable=False (op 7) moves gamma/beta to non_trainable_weights and its moving statistics "
    "stop updating (seq/seq_bn is absent from trainable/trained); a trainable BN's moving statistics count "
    "as non-trainable weights in every state",
)


# Fine-tuning and layer training cases (tag "training"): Keras 3 AND tf_keras traces, nested models
# recorded leaf by leaf. Facts these cases pin (checked while generating, see record_training):
BN_FACTS = (
    "Keras 3.15: a trainable BN trains in batch-statistics mode in train_on_batch (mean and BIASED "
    "variance), and moving = m*moving + (1-m)*stat with the biased variance, on 2-D and 4-D inputs alike "
    "(train/bn_moving_update, train/bn_forward)",
    "tf_keras 2.21: the same on 2-D inputs (non-fused path); on 4-D inputs the fused kernel normalises "
    "with the biased batch variance but moves moving_variance towards the Bessel-corrected one, "
    "var*n/(n-1), n = batch*H*W (train/bn_moving_update: 'bessel')",
)
NESTED_FACTS = (
    "base(x, training=False): Keras 3.15 overrides the recorded training=False (Functional.call passes "
    "its own training=True to every node), so the trainable BNs inside the base train in batch mode and "
    "their moving statistics move; tf_keras honours it: those BNs normalise with their moving statistics, "
    "gamma/beta still train, moving statistics stay bit-for-bit (both checked after step 1)",
)


# The MobileNet fine-tuning variants. Their trained weights are ~200k (V2) and ~400k (V3) floats a snapshot, so
# only sgd_momentum stores arrays, after step 5 (all its layers move visibly: Adam's steps are ~lr = 1e-4 a step,
# below the 1e-3 relative tolerance for kernels with |w| ~ 1); adam is recorded by losses, metrics, evaluate
# and digests.
FINETUNE_VARIANTS = (Variant("adam", ("Adam", {"learning_rate": 1e-4}), (SCE, {}), arrays=()),
                     Variant("sgd_momentum", ("SGD", {"learning_rate": 1e-3, "momentum": 0.9}), (SCE, {}),
                             arrays=(5,)))


def _finetune_cases():
    sce = (SCE, {})
    both = (Variant("adam", ADAM, sce), Variant("sgd", SGD01, sce))

    def case(name, build, desc, spec, notes=(), tags=("training",), **kw):
        add(name, build, desc, tags=tags, notes=notes, hooks=(training_hook(spec),), **kw)

    def spec(outputs=3, variants=both, **kw):
        return TrainSpec("classes", outputs, variants, k2_traces=True, nested_paths=True, **kw)

    def head(K, x, n=3, gap=True):
        if gap:
            x = K.layers.GlobalAveragePooling2D(name="gap")(x)
        return K.layers.Dense(n, activation="softmax", name="head")(x)

    def bn_only(K):
        l = K.layers
        f = dict(trainable=False)
        inp = K.Input((8, 8, 3), name="image")
        x = l.Conv2D(8, 3, padding="same", use_bias=False, name="conv", **f)(inp)
        x = l.ReLU(name="relu1", **f)(l.BatchNormalization(name="bn1")(x))
        x = l.DepthwiseConv2D(3, strides=2, padding="same", use_bias=False, name="dw", **f)(x)
        x = l.ReLU(name="relu2", **f)(l.BatchNormalization(name="bn2")(x))
        x = l.BatchNormalization(name="bn3")(l.Conv2D(12, 1, use_bias=False, name="pw", **f)(x))
        x = l.GlobalAveragePooling2D(name="gap", **f)(x)
        return K.Model(inp, l.Dense(3, activation="softmax", name="head", **f)(x), name="train_bn_only")
    case("train_bn_only", bn_only,
         "Training: BN-only fine-tuning of a 8x8 CNN: Conv2D(no bias) -> BN -> ReLU -> DepthwiseConv2D s2 "
         "(no bias) -> BN -> ReLU -> Conv2D 1x1 (no bias) -> BN -> GAP -> Dense(3, softmax); every layer "
         "but the three BNs trainable=False, so only gamma/beta train and the BNs run in batch-statistics "
         "mode (moving statistics move); at inference each frozen conv folds with its BN",
         spec(), notes=BN_FACTS)

    def bn_last_block(K):
        l = K.layers
        inp = K.Input((8, 8, 3), name="image")
        stem = [l.Conv2D(8, 3, padding="same", use_bias=False, name="stem_conv"),
                l.BatchNormalization(name="stem_bn"), l.ReLU(name="stem_relu")]
        x = inp
        for layer in stem:
            layer.trainable = False
            x = layer(x)
        y = l.Conv2D(24, 1, use_bias=False, name="expand")(x)
        y = l.ReLU(6.0, name="expand_relu6")(l.BatchNormalization(name="expand_bn")(y))
        y = l.DepthwiseConv2D(3, padding="same", use_bias=False, name="depthwise")(y)
        y = l.ReLU(6.0, name="depthwise_relu6")(l.BatchNormalization(name="depthwise_bn")(y))
        y = l.BatchNormalization(name="project_bn")(l.Conv2D(8, 1, use_bias=False, name="project")(y))
        x = l.Add(name="add")([x, y])
        return K.Model(inp, head(K, x), name="train_bn_last_block")
    case("train_bn_last_block", bn_last_block,
         "Training: frozen stem (Conv2D-BN-ReLU, trainable=False) then a trainable MobileNetV2 inverted "
         "residual block with trainable BNs: Conv2D 1x1 expand (no bias) -> BN -> ReLU6 -> DepthwiseConv2D "
         "3x3 (no bias) -> BN -> ReLU6 -> Conv2D 1x1 project (no bias) -> BN -> Add(block input) -> GAP -> "
         "Dense(3, softmax)", spec(), notes=BN_FACTS)

    def fold_matrix(K):
        l = K.layers
        inp = K.Input((10, 10, 3), name="image")
        x = l.ZeroPadding2D(1, name="pad")(inp)
        x = l.Conv2D(6, 3, use_bias=False, name="conv")(x)
        x = l.ReLU(name="conv_relu")(l.BatchNormalization(name="conv_bn")(x))
        x = l.DepthwiseConv2D(3, padding="same", use_bias=False, name="dw")(x)
        x = l.ReLU(6.0, name="dw_relu6")(l.BatchNormalization(name="dw_bn")(x))
        x = l.Dense(8, use_bias=False, name="fc")(l.GlobalAveragePooling2D(name="gap")(x))
        x = l.ReLU(name="fc_relu")(l.BatchNormalization(name="fc_bn")(x))
        return K.Model(inp, l.Dense(3, activation="softmax", name="head")(x), name="train_fold_matrix")
    producers, consumers = ("conv", "dw", "fc"), ("conv_bn", "dw_bn", "fc_bn")
    patterns = {"producer_frozen": (False, True), "consumer_frozen": (True, False),
                "both_trainable": (True, True)}
    fold_variants = tuple(
        Variant(f"{opt}_{pattern}", optimizer, sce,
                trainable=tuple((n, p) for n in producers) + tuple((n, c) for n in consumers))
        for pattern, (p, c) in patterns.items()
        for opt, optimizer in (("sgd", SGD01), ("adam", ADAM)))
    case("train_fold_matrix", fold_matrix,
         "Training: every inference rewrite x every freeze pattern. ZeroPadding2D -> Conv2D (valid, no bias) "
         "-> BN -> ReLU -> DepthwiseConv2D (no bias) -> BN -> ReLU6 -> GAP -> Dense(8, no bias) -> BN -> "
         "ReLU -> Dense(3, softmax); at inference the padding folds into the conv, each BN into its "
         "producer and each activation into that. Variants (SGD and Adam each) set, before compile, the "
         "producers frozen and the BNs trainable, the reverse, or both trainable; the head always trains",
         spec(variants=fold_variants), notes=BN_FACTS)

    def dense_bn(K):
        l = K.layers
        inp = K.Input((24,), name="features")
        x = l.ReLU(name="relu")(l.BatchNormalization(name="bn")(l.Dense(16, name="hidden")(inp)))
        return K.Model(inp, l.Dense(4, activation="softmax", name="head")(x), name="train_dense_bn_head")
    case("train_dense_bn_head", dense_bn,
         "Training: Input(24) -> Dense(16) -> BatchNormalization -> ReLU -> Dense(4, softmax), all trainable "
         "(a 2-D BN: tf_keras's non-fused path, biased variance in the moving update as in Keras 3)",
         spec(4), notes=BN_FACTS)

    def fine_tuned(K, base, trains, input_shape, classes, name):
        """The guide's second phase: base.trainable = True, then only the layers `trains`
        accepts stay trainable; the base called with training=False, GAP, a softmax head."""
        base.trainable = True
        for layer in base.layers:
            layer.trainable = trains(layer.name)
        inputs = K.Input(input_shape, name="image")
        x = K.layers.GlobalAveragePooling2D(name="pool")(base(inputs, training=False))
        return K.Model(inputs, K.layers.Dense(classes, activation="softmax", name="head")(x), name=name)

    def mnv2_finetune(K):
        base = K.applications.MobileNetV2(input_shape=(None, None, 3), alpha=0.35, include_top=False,
                                          weights=None)
        # the guide's fine_tune_at: everything before block_16 stays frozen
        return fine_tuned(K, base, lambda n: n.startswith("block_16_") or n in ("Conv_1", "Conv_1_bn"),
                          (None, None, 3), 4, "train_mobilenet_v2_finetune")
    case("train_mobilenet_v2_finetune", mnv2_finetune,
         "Training: the Keras transfer-learning guide's fine-tuning phase at small scale: MobileNetV2 a0.35 "
         "base with an open input size (None, None, 3), include_top=False, base.trainable=True then every "
         "layer before block_16 frozen (block_16_* and Conv_1/Conv_1_bn train), called with training=False; "
         "GAP, Dense(4, softmax); trained on 32x32 batches of 8 with Adam(1e-4) and SGD(1e-3, momentum 0.9)",
         spec(4, FINETUNE_VARIANTS, batch=8, val=8, scale=0.5, shape=(32, 32, 3)),
         inputs=0.5, calibrate=True, shapes=((32, 32, 3),),
         notes=NESTED_FACTS + (
             "the saved model's input is (None, None, None, 3); the reference inputs x0 and the training "
             "batches are 32x32",
             "size budget (~8 MB for all flavours and both npz): only sgd_momentum stores weight arrays, "
             "after step 5 (config record_arrays [5]); adam has digests, losses, metrics and evaluate only. "
             "Measured: 8.3 MB (model files 6.3 MB, each npz 1.0 MB); arrays for both variants after steps 1 "
             "and 5 would make it ~13 MB",
             "visible change: with sgd_momentum every trained block_16/Conv_1 layer moves by >= 2.4e-3 of its "
             "max |w| in Keras 3; Adam(1e-4) moves each weight by at most ~1e-4 a step, so some kernels "
             "(block_16_depthwise: 4e-4) stay below a 1e-3 relative tolerance (manifest change_below_1e-3); "
             "in tf_keras the BNs only train gamma/beta and move by ~1e-3",
             "the base's BNs use momentum 0.999 (MobileNetV2's own), not the BN default 0.99"))

    def mnv3_finetune(K):
        base = K.applications.MobileNetV3Small(input_shape=(32, 32, 3), alpha=0.75, include_top=False,
                                               weights=None, include_preprocessing=True)
        # Keras 3 names expanded_conv_9_expand, tf_keras expanded_conv_9/expand
        return fine_tuned(K, base, lambda n: bool(re.match(r"expanded_conv_(9|10)[_/]", n))
                          or n.lower() in ("conv_1", "conv_1_bn", "conv_1/batchnorm"),
                          (32, 32, 3), 3, "train_mobilenet_v3_finetune")
    case("train_mobilenet_v3_finetune", mnv3_finetune,
         "Training: MobileNetV3Small a0.75 32x32 base (include_top=False, include_preprocessing=True: "
         "Rescaling inside) with its last two inverted-residual blocks (expanded_conv_9, expanded_conv_10: "
         "squeeze-excite with Multiply, hard-swish, residual Add) and the final conv_1/BN trainable, the rest "
         "frozen; called with training=False; GAP, Dense(3, softmax); pixel inputs, batches of 8",
         spec(3, (Variant("adam", ("Adam", {"learning_rate": 3e-4}), sce, arrays=()),
                  Variant("sgd_momentum", ("SGD", {"learning_rate": 3e-3, "momentum": 0.9}), sce, arrays=(5,))),
              batch=8, val=8, pixels=True),
         inputs="pixels", calibrate=True,
         notes=NESTED_FACTS + (
             "Keras 3 names the layers expanded_conv_9_expand, ..., conv_1, conv_1_bn and writes hard-swish as "
             "an Activation('hard_swish') layer with hard-sigmoid as ops (x + 3, ReLU(6), * 1/6); tf_keras "
             "names them expanded_conv_9/expand, ..., Conv_1, Conv_1/BatchNorm (layer names with '/': "
             "train/paths maps each key to its path) and writes hard-swish as TFOpLambda ops and Multiply",
             "optimizers Adam(3e-4) and SGD(3e-3, momentum 0.9): at the V2 case's 1e-4 / 1e-3 the "
             "squeeze-excite convs moved by < 1e-3 of max |w| in 5 steps; 1e-2 made tf_keras's SGD loss "
             "climb to 30 (its BNs stay in inference mode)",
             "size: the three model files alone are 8.2 MB (584k params, 2.3 MB of float32 each), so the "
             "~8 MB budget cannot be met with minimalistic=False alpha=0.75; kept as specified. Only "
             "sgd_momentum stores weight arrays, after step 5 (1.7 MB per npz); measured total 11.6 MB",
             "Keras 3 cannot reload its own .k3.h5 of this model (the known x + 3.0 op node, as "
             "mobilenet_v3_small)"))

    # Layer cases: all trainable, on small inputs, ending GAP -> Dense(3, softmax)
    def chain_head(name, shape, makers):
        def build(K):
            inp = K.Input(shape, name="image")
            x = inp
            for mk in makers:
                x = mk(K)(x)
            return K.Model(inp, head(K, x, gap=len(shape) == 3), name=name)
        return build

    def layer_case(name, shape, makers, desc, notes=(), **kw):
        case(name, chain_head(name, shape, makers), "Training: " + desc + " -> GAP -> Dense(3, softmax)",
             spec(), notes=notes, **kw)

    layer_case("train_separable", (8, 8, 3),
               [L("SeparableConv2D", 8, 3, padding="same", depth_multiplier=2, activation="relu", name="sep1"),
                L("SeparableConv2D", 6, 3, strides=2, padding="valid", name="sep2")],
               "SeparableConv2D(8, 3, same, depth_multiplier=2, relu) -> SeparableConv2D(6, 3, strides=2, valid)")
    layer_case("train_grouped_conv", (8, 8, 4),
               [L("Conv2D", 8, 3, padding="same", groups=2, activation="relu", name="gconv1"),
                L("Conv2D", 12, 3, strides=2, groups=4, name="gconv2")],
               "Conv2D(8, 3, same, groups=2, relu) on 4 channels -> Conv2D(12, 3, strides=2, groups=4)")
    layer_case("train_depthwise_multiplier", (8, 8, 3),
               [L("DepthwiseConv2D", 3, depth_multiplier=2, activation="relu", name="dw1"),
                L("DepthwiseConv2D", 3, depth_multiplier=3, dilation_rate=2, padding="same", name="dw2")],
               "DepthwiseConv2D(3, depth_multiplier=2, relu) -> DepthwiseConv2D(3, depth_multiplier=3, "
               "dilation_rate=2, same)")

    def norm_net(name, feat_norm, vec_norm):
        def build(K):
            l = K.layers
            inp = K.Input((8, 8, 3), name="image")
            x = l.Conv2D(8, 3, padding="same", name="conv")(inp)
            x = l.ReLU(name="relu")(feat_norm(K)(x))
            x = l.Dense(8, name="dense")(l.GlobalAveragePooling2D(name="gap")(x))
            return K.Model(inp, l.Dense(3, activation="softmax", name="head")(vec_norm(K)(x)), name=name)
        return build
    case("train_layernorm", norm_net("train_layernorm", L("LayerNormalization", axis=-1, name="ln_conv"),
                                     L("LayerNormalization", name="ln_dense")),
         "Training: Conv2D -> LayerNormalization(axis=-1) -> ReLU -> GAP -> Dense(8) -> LayerNormalization -> "
         "Dense(3, softmax)", spec())
    case("train_rmsnorm", norm_net("train_rmsnorm", L("RMSNormalization", name="rms_conv"),
                                   L("LayerNormalization", rms_scaling=True, name="ln_rms_dense")),
         "Training (Keras 3 only): Conv2D -> RMSNormalization -> ReLU -> GAP -> Dense(8) -> "
         "LayerNormalization(rms_scaling=True) -> Dense(3, softmax)", spec(), versions=K3_ONLY,
         notes=("LayerNormalization(rms_scaling=True) is still accepted by Keras 3.15 (deprecated): it "
                "divides by sqrt(var + eps) without centring and trains only its gamma",))
    layer_case("train_prelu", (8, 8, 3),
               [L("Conv2D", 6, 3, padding="same", name="conv1"), L("PReLU", shared_axes=[1, 2], name="prelu_shared"),
                L("Conv2D", 6, 3, strides=2, padding="same", name="conv2"), L("PReLU", name="prelu_full")],
               "Conv2D -> PReLU(shared_axes=[1, 2]) -> Conv2D s2 -> PReLU() (alpha per element)")

    def se_alive(model):
        layer = model.get_layer("se_reduce")
        k, b = layer.get_weights()
        layer.set_weights([k, np.abs(b) + 0.5])

    def se_net(K):
        l = K.layers
        inp = K.Input((8, 8, 3), name="image")
        x = l.Activation("swish", name="swish")(l.Conv2D(8, 3, padding="same", name="conv")(inp))
        s = l.GlobalAveragePooling2D(keepdims=True, name="se_pool")(x)
        s = l.Conv2D(2, 1, activation="relu", name="se_reduce")(s)
        s = l.Conv2D(8, 1, activation="sigmoid", name="se_expand")(s)
        x = l.Conv2D(6, 1, name="project")(l.Multiply(name="se_mul")([x, s]))
        return K.Model(inp, head(K, x), name="train_squeeze_excite")
    case("train_squeeze_excite", se_net,
         "Training: Conv2D(8) -> Activation('swish') -> squeeze-excite (GlobalAveragePooling2D(keepdims=True) -> "
         "Conv2D(2, 1, relu) -> Conv2D(8, 1, sigmoid) -> Multiply([x, s]), a broadcast product) -> Conv2D 1x1 "
         "-> GAP -> Dense(3, softmax)", spec(), init=se_alive,
         notes=("se_reduce's drawn biases are replaced by |b| + 0.5: with the drawn ones both ReLU units were "
                "dead on every training sample, so se_reduce got no gradient",))
    layer_case("train_upsampling", (8, 8, 3),
               [L("Conv2D", 6, 3, strides=2, padding="same", name="down"), L("UpSampling2D", 2, name="up_nearest"),
                L("Conv2D", 6, 3, padding="same", name="conv_mid"),
                L("UpSampling2D", 2, interpolation="bilinear", name="up_bilinear"),
                L("Conv2D", 6, 3, padding="same", name="conv_out")],
               "Conv2D(s2) -> UpSampling2D(2, nearest) -> Conv2D -> UpSampling2D(2, bilinear) -> Conv2D")
    layer_case("train_rescaling_norm", (8, 8, 3),
               [L("Conv2D", 4, 3, padding="same", name="conv1"), L("Rescaling", 0.5, offset=0.1, name="rescale"),
                L("Normalization", mean=[0.2, -0.1, 0.0, 0.3], variance=[0.5, 2.0, 1.0, 0.25], name="norm"),
                L("Conv2D", 6, 3, name="conv2")],
               "Conv2D(4) -> Rescaling(0.5, offset=0.1) -> Normalization(per-channel mean/variance constants) -> "
               "Conv2D: gradients cross both preprocessing layers")

    def merges(K):
        l = K.layers
        inp = K.Input((8, 8, 3), name="image")
        a = l.Conv2D(6, 3, padding="same", name="branch_a")(inp)
        b = l.Conv2D(6, 3, padding="same", name="branch_b")(inp)
        g = l.GlobalAveragePooling2D(keepdims=True, name="squeeze")(l.Conv2D(6, 1, name="branch_g")(inp))
        sub = l.Subtract(name="sub_bcast")([a, g])       # (N,H,W,C) - (N,1,1,C)
        mx = l.Maximum(name="max_bcast")([g, b])         # broadcast operand first
        mn = l.Minimum(name="min_bcast")([a, g])
        mul = l.Multiply(name="mul_bcast")([g, b])
        avg = l.Average(name="avg")([sub, mx])
        x = l.Concatenate(name="concat")([avg, mn, mul])
        x = l.Conv2D(6, 1, name="mix")(x)
        return K.Model(inp, head(K, x), name="train_broadcast_merges")
    case("train_broadcast_merges", merges,
         "Training: Subtract([x, g]), Maximum([g, y]), Minimum([x, g]) and Multiply([g, y]) where x, y are "
         "(N,8,8,6) convs and g = GlobalAveragePooling2D(keepdims=True) of a 1x1 conv, (N,1,1,6); Average "
         "and Concatenate of same-shape tensors; Conv2D 1x1 -> GAP -> Dense(3, softmax)", spec())

    def fit_model(K):
        inp = K.Input((20,), name="features")
        x = K.layers.Dense(8, activation="relu", name="hidden")(inp)
        return K.Model(inp, K.layers.Dense(1, activation="sigmoid", name="head")(x), name="train_fit_conventions")
    add("train_fit_conventions", fit_model,
        "Training with Keras's fit: Input(20) -> Dense(8, relu) -> Dense(1, sigmoid), BinaryCrossentropy, "
        "SGD(0.1), metrics=['accuracy']; fit(x, y, batch_size=8, epochs=3, shuffle=False, "
        "validation_split=0.25) on 40 samples, with y of shape (N,) and again (N, 1)",
        tags=("training",), hooks=(fit_hook,), notes=FIT_NOTES)

    def effnet_finetune(K):
        base = K.applications.EfficientNetB0(include_top=False, weights=None, input_shape=(32, 32, 3))
        for layer in base.layers:
            if isinstance(layer, K.layers.Dropout):
                layer.rate = 0.0  # Keras 3 runs them in fit despite training=False; masks are not reproducible
        return fine_tuned(K, base, lambda n: n.startswith("block7a_") or n in ("top_conv", "top_bn"),
                          (32, 32, 3), 3, "efficientnet_b0_finetune")
    case("efficientnet_b0_finetune", effnet_finetune,
         "Training (large, --large only, not committed): EfficientNetB0 32x32 base (include_top=False, "
         "Rescaling + Normalization inside) with block7a_* and top_conv/top_bn trainable, the rest frozen, "
         "called with training=False; GAP, Dense(3, softmax); Keras 3 traces only",
         TrainSpec("classes", 3, (Variant("adam", ("Adam", {"learning_rate": 3e-4}), sce),
                                  Variant("sgd_momentum", ("SGD", {"learning_rate": 3e-3, "momentum": 0.9}), sce)),
                   batch=8, val=8, pixels=True, nested_paths=True),
         tags=("training", "large"), large=True, inputs="pixels", calibrate=True,
         notes=NESTED_FACTS[:1] + (
             "the base's stochastic-depth Dropout layers (block2b_drop ... block6d_drop, rate 0.2 by default) "
             "are built with rate 0.0: Keras 3's fit runs them in training mode despite training=False and "
             "their masks could not be reproduced",
             "Keras 3's reload of the .k3.h5 predicts differently (reload 'mismatch'): its legacy HDF5 loader "
             "sets the nested base's Normalization mean/variance weights but does not call finalize_state(), "
             "so the layer keeps normalising with mean 0; the weights in the file are right (calling "
             "finalize_state() on the reloaded layer gives the saved model's outputs exactly)",))


def _activation_k3_cases():
    """Every activation string Keras 3.15's keras.activations.get accepts and the earlier cases left out
    (threshold aside: it needs two arguments, so no model can call it). All but log_softmax are
    Keras-3-only. glu halves the last axis (Keras's Dense/Conv still report units/filters as their output
    shape, but return half), so nothing with weights can follow it in Keras 3; log_softmax, sparsemax and
    glu are row ops, run after the convolution/GEMM rather than fused into it."""
    k2_has = ("log_softmax",)
    sparsemax_note = ("Keras 3.15's sparsemax sums the cumulative sums over the support for its threshold "
                      "(keras-team/keras#23425, fixed after 3.15.1 by #23469): rows do not sum to 1 when "
                      "more than one logit is in the support; inputs are scaled so that happens",)
    for act in ("glu", "hard_shrink", "hard_tanh", "log_softmax", "soft_shrink", "sparse_plus", "sparse_sigmoid",
                "sparsemax", "squareplus", "tanh_shrink"):
        sparse = act == "sparsemax"
        add_chain(f"act_{act}", (6, 5, 8) if sparse else (6, 5, 4), [L("Activation", act)],
                  f"Activation('{act}')" + (" on 8 channels" if sparse else ""), inputs=0.5 if sparse else 3.0,
                  versions=("k3", "k2") if act in k2_has else K3_ONLY, notes=sparsemax_note if sparse else ())
    for act, units, inputs in (("glu", 6, 1.0), ("log_softmax", 5, 1.0), ("sparsemax", 8, 0.3)):
        add_chain(f"dense_act_{act}", (12,), [L("Dense", units, activation=act)],
                  f"Dense({units}, activation='{act}')", inputs=inputs,
                  versions=("k3", "k2") if act in k2_has else K3_ONLY,
                  notes=sparsemax_note if act == "sparsemax" else ())
    add_chain("dense_act_glu_3d", (5, 6), [L("Dense", 8, activation="glu")],
              "Dense(8, activation='glu') on a 3-D input: (5, 6) -> (5, 4)", versions=K3_ONLY)
    for act, inputs in (("glu", 2.0), ("log_softmax", 2.0), ("sparsemax", 0.5), ("squareplus", 2.0),
                        ("sparse_plus", 2.0), ("tanh_shrink", 2.0)):
        add_chain(f"conv2d_act_{act}", S, [L("Conv2D", 4, 3, padding="same", activation=act)],
                  f"Conv2D with activation='{act}'" + (" (a row op after the convolution)"
                                                       if act in ("glu", "log_softmax", "sparsemax") else ""),
                  inputs=inputs, versions=("k3", "k2") if act in k2_has else K3_ONLY,
                  notes=sparsemax_note if act == "sparsemax" else ())
    add_chain("dwconv_act_glu", S, [L("DepthwiseConv2D", 3, depth_multiplier=2, padding="same", activation="glu")],
              "DepthwiseConv2D(3, depth_multiplier=2, same, glu): 10 channels -> 5", inputs=2.0, versions=K3_ONLY)
    add_chain("sepconv_act_log_softmax", S, [L("SeparableConv2D", 6, 3, padding="same", activation="log_softmax")],
              "SeparableConv2D(6, 3, same, log_softmax)", inputs=2.0)
    add_chain("sepconv_act_hard_tanh", S, [L("SeparableConv2D", 6, 3, padding="same", activation="hard_tanh")],
              "SeparableConv2D(6, 3, same, hard_tanh) (fused into the pointwise GEMM)", inputs=2.0,
              versions=K3_ONLY)

    # Training: the backward of the new activations against Keras's own train_on_batch.
    sce = (SCE, {"from_logits": True})
    variants = (Variant("adam", ADAM, sce), Variant("sgd", SGD01, sce))

    def mlp(name, layers):
        def build(K):
            inp = K.Input((12,), name="features")
            x = inp
            for i, (units, act) in enumerate(layers):
                x = K.layers.Dense(units, activation=act, name=f"dense{i}_{act or 'linear'}")(x)
            return K.Model(inp, x, name=name)
        return build

    # sparsemax is left out: its gradient is 0 in every row whose support has one element (tau's share
    # cancels the element's own), and in this chain it stopped the layers before it from changing (the
    # trace check failed); its backward is checked against TF's recorded gradients in the kernel tests.
    chain = [(16, "celu"), (16, "squareplus"), (16, "sparse_plus"), (16, "tanh_shrink"), (16, "hard_tanh"),
             (12, "sparse_sigmoid"), (12, "soft_shrink"), (10, "log_softmax"), (6, "glu")]
    add("train_activations_k3", mlp("train_activations_k3", chain),
        "Training (Keras 3 only): Input(12) -> " + " -> ".join(f"Dense({u}, {a})" for u, a in chain)
        + " (3 logits; glu must come last: nothing with weights can follow it in Keras 3); sparse CE "
          "from_logits=True, Adam and SGD(0.1); every layer trains",
        tags=("training",), versions=K3_ONLY,
        hooks=(training_hook(TrainSpec("classes", 3, variants, k2_traces=True, nested_paths=True)),))
    add("train_log_softmax_hidden", mlp("train_log_softmax_hidden", [(10, "log_softmax"), (3, None)]),
        "Training: Input(12) -> Dense(10, log_softmax) -> Dense(3) (logits); sparse CE from_logits=True, "
        "Adam and SGD(0.1); Keras 3 and tf_keras traces",
        tags=("training",),
        hooks=(training_hook(TrainSpec("classes", 3, variants, k2_traces=True, nested_paths=True)),))


# Layers keras.applications defines in its own modules (ConvNeXt's LayerScale and StochasticDepth,
# InceptionResNetV2's CustomScaleLayer): small cases of each, small models built from the
# application code itself, and a training case through them.

def app_layer(K, module, cls):
    """A layer class of a keras.applications module (not exported in keras.layers)."""
    import importlib
    package = "keras.src.applications" if is_k3(K) else "tf_keras.src.applications"
    return getattr(importlib.import_module(f"{package}.{module}"), cls)


def layer_scale(init_values, dim, **kw):
    return lambda K: app_layer(K, "convnext", "LayerScale")(init_values, dim, **kw)


def stochastic_depth(rate, **kw):
    return lambda K: app_layer(K, "convnext", "StochasticDepth")(rate, **kw)


def custom_scale(scale, **kw):
    return lambda K: app_layer(K, "inception_resnet_v2", "CustomScaleLayer")(scale, **kw)


def app_training_hook(spec):
    """training_hook, with the application layers known to tf_keras's model_from_json (it has no
    module to import them from; Keras 3 finds them through the config's module)."""
    inner = training_hook(spec)

    def hook(K, model, xs, ys, rng):
        known = {cls: app_layer(K, module, cls) for module, cls in (
            ("convnext", "LayerScale"), ("convnext", "StochasticDepth"),
            ("inception_resnet_v2", "CustomScaleLayer"))}
        with K.utils.custom_object_scope(known):
            return inner(K, model, xs, ys, rng)
    return hook


APP_LAYER_NOTES = (
    "LayerScale, StochasticDepth and CustomScaleLayer are classes of the application modules, not "
    "keras.layers: Keras 3 cannot reload its own .k3.h5 of them (Unknown layer; the .keras file "
    "names the module and reloads), nor tf_keras its .k2.h5 (LayerScale, StochasticDepth)",
    "LayerScale's variable is unnamed in Keras 3 ('variable' in the .k3.h5) and 'gamma' in tf_keras; "
    "tf_keras writes CustomScaleLayer as 'Custom>CustomScaleLayer'",
)


def _application_layer_cases():
    notes = APP_LAYER_NOTES
    add_chain("layer_scale", S, [L("Conv2D", 4, 3, padding="same"), layer_scale(1e-6, 4)],
              "ConvNeXt's LayerScale(1e-6, 4) after a Conv2D: x * gamma over the last axis (gamma drawn)",
              notes=notes)
    add_chain("layer_scale_2d", (12,), [L("Dense", 6), layer_scale(0.1, 6)],
              "LayerScale(0.1, 6) on a 2-D Dense output", notes=notes)
    add_chain("stochastic_depth", S, [L("Conv2D", 4, 3, padding="same"), stochastic_depth(0.3)],
              "ConvNeXt's StochasticDepth(0.3) after a Conv2D (identity at inference)", notes=notes)
    add("custom_scale", merge("custom_scale", ((6, 5, 4), (6, 5, 4)), custom_scale(0.17)),
        "InceptionResNetV2's CustomScaleLayer(0.17)([a, r]) = a + r * 0.17", notes=notes)
    add("custom_scale_broadcast", merge("custom_scale_broadcast", ((6, 5, 4), (1, 1, 4)), custom_scale(-1.5)),
        "CustomScaleLayer(-1.5)([a, r]) with r of shape (1, 1, 4) broadcast over a (6, 5, 4)", notes=notes)

    def convnext_mini(K):
        fn = app_layer(K, "convnext", "ConvNeXt")
        name = {"name" if is_k3(K) else "model_name": "convnext_mini"}
        return fn(depths=[1, 1, 2, 1], projection_dims=[8, 12, 16, 24], drop_path_rate=0.1,
                  input_shape=(32, 32, 3), weights=None, classes=10, classifier_activation=None, **name)
    add("convnext_mini", convnext_mini,
        "ConvNeXt from keras.applications' own builder (the function behind ConvNeXtTiny...) at small "
        "scale: depths [1, 1, 2, 1], projection_dims [8, 12, 16, 24], drop_path_rate 0.1 (StochasticDepth "
        "in four blocks, the first an Activation('linear')), LayerScale, Normalization pre-stem, 32x32, "
        "classes=10, logits", tags=("application",), inputs="pixels", calibrate=True, notes=notes)

    def inception_resnet_mini(K):
        from importlib import import_module
        module = import_module(("keras.src" if is_k3(K) else "tf_keras.src") + ".applications.inception_resnet_v2")
        if not is_k3(K) and module.layers is None:  # tf_keras's constructor sets this global
            module.layers = K.layers
        block = module.inception_resnet_block
        inp = K.Input((9, 9, 16), name="image")
        x = block(inp, scale=0.17, block_type="block35", block_idx=1)
        x = block(x, scale=1.0, block_type="block35", block_idx=2, activation=None)
        x = K.layers.GlobalAveragePooling2D(name="gap")(x)
        return K.Model(inp, K.layers.Dense(10, name="logits")(x), name="inception_resnet_mini")
    add("inception_resnet_mini", inception_resnet_mini,
        "Two Inception-ResNet-A blocks from keras.applications' inception_resnet_block on 9x9x16 (scale 0.17 "
        "with relu, then scale 1.0 without activation, as InceptionResNetV2's last block): Conv2D-BN "
        "branches, Concatenate, 1x1 up-projection, CustomScaleLayer; GAP, Dense(10)",
        tags=("application",), inputs=0.5, calibrate=True, notes=notes)

    def train_app_layers(K):
        l = K.layers
        inp = K.Input((8, 8, 3), name="image")
        x = l.Conv2D(8, 3, padding="same", name="stem")(inp)
        r = l.Conv2D(8, 7, padding="same", groups=8, name="dw")(x)
        r = l.LayerNormalization(epsilon=1e-6, name="ln")(r)
        r = l.Activation("gelu", name="gelu")(l.Dense(16, name="pw1")(r))
        r = layer_scale(0.5, 8, name="layer_scale")(K)(l.Dense(8, name="pw2")(r))
        if is_k3(K):  # tf_keras's cannot train (see the notes)
            r = stochastic_depth(0.0, name="stochastic_depth")(K)(r)
        x = l.Add(name="add")([x, r])
        b = l.Conv2D(8, 1, activation="relu", name="branch")(x)
        x = custom_scale(0.3, name="custom_scale")(K)([x, b])
        x = l.GlobalAveragePooling2D(name="gap")(x)
        return K.Model(inp, l.Dense(3, activation="softmax", name="head")(x), name="train_layer_scale")
    sce = (SCE, {})
    add("train_layer_scale", train_app_layers,
        "Training through the application layers: Conv2D stem -> ConvNeXt block (grouped 7x7 Conv2D, "
        "LayerNormalization, Dense(16), gelu, Dense(8), LayerScale(0.5, 8), StochasticDepth(0.0)) -> Add "
        "-> Conv2D 1x1 relu branch -> CustomScaleLayer(0.3)([x, branch]) -> GAP -> Dense(3, softmax); "
        "everything trains (LayerScale's gamma included)",
        tags=("training",), notes=notes + (
            "StochasticDepth(0.0) is the identity in training too: Keras multiplies by "
            "floor(1 + U[0, 1)) = 1 (edgecore refuses to train through a rate > 0)",
            "the tf_keras model has no StochasticDepth: tf_keras 2.21's cannot train at any rate (its call "
            "takes len(tf.shape(x)), which fails inside train_on_batch's tf.function: 'len is not well "
            "defined for a symbolic Tensor'); its ConvNeXt constructors never build one (drop_path_rate 0)"),
        hooks=(app_training_hook(TrainSpec("classes", 3, (Variant("adam", ADAM, sce), Variant("sgd", SGD01, sce)),
                                       k2_traces=True, nested_paths=True)),))


# The keras.applications sweep (tags "application", "large", "sweep"; --large only, never
# committed): every model constructor keras.applications (Keras 3) and tf_keras.applications
# export, found by listing the packages, each at the smallest input it accepts, include_top=True,
# classes=SWEEP_CLASSES, logits, weights drawn and BN statistics calibrated. Case "app_<name lower>".

SWEEP_CLASSES = 10
# Input scale by the constructor's module: what its preprocess_input produces (caffe: BGR pixels
# minus the mean, torch: standardised), or pixels where the model preprocesses inside; else [-1, 1].
SWEEP_INPUTS = {"resnet": 30.0, "vgg16": 30.0, "vgg19": 30.0, "densenet": 1.0,
                **{m: "pixels" for m in ("efficientnet", "efficientnet_v2", "convnext", "mobilenet_v3",
                                         "regnet", "resnet_rs")}}


def application_constructors():
    """{constructor name: (module, frameworks)} for every model constructor of
    keras.applications (Keras 3, "k3") and tf_keras.applications ("k2")."""
    import keras
    import tf_keras
    found = {}
    for tag, K in (("k3", keras), ("k2", tf_keras)):
        for name in dir(K.applications):
            fn = getattr(K.applications, name)
            if name[:1].isupper() and callable(fn) and not isinstance(fn, type):
                module, tags = found.get(name, (fn.__module__.rsplit(".", 1)[-1], ()))
                found[name] = (module, tags + (tag,))
    return dict(sorted(found.items()))


def smallest_input(fn):
    """(rows, cols): the smallest input the constructor accepts, from its own refusal of 1x1
    (imagenet_utils.obtain_input_shape: "Input size must be at least NxN")."""
    try:
        fn(weights=None, include_top=True, input_shape=(1, 1, 3), classes=SWEEP_CLASSES)
    except ValueError as e:
        m = re.search(r"at least (\d+)x(\d+)", str(e))
        if m:
            return int(m.group(1)), int(m.group(2))
        raise
    return 1, 1


def _application_sweep_cases():
    def build_of(ctor, seed):
        def build(K):
            import inspect
            fn = getattr(K.applications, ctor)
            rows, cols = smallest_input(fn)
            K.backend.clear_session()  # as run_framework left it: the refused 1x1 call may count names
            K.utils.set_random_seed(seed)
            kw = {"classifier_activation": None} if "classifier_activation" in inspect.signature(fn).parameters \
                else {}
            return fn(weights=None, include_top=True, input_shape=(rows, cols, 3), classes=SWEEP_CLASSES, **kw)
        return build

    for ctor, (module, frameworks) in application_constructors().items():
        name = f"app_{ctor.lower()}"
        where = {("k3", "k2"): "keras.applications and tf_keras.applications", ("k3",): "Keras 3 only",
                 ("k2",): "tf_keras only"}[frameworks]
        add(name, build_of(ctor, zlib.crc32(name.encode()) & 0x7FFFFFFF),
            f"{'tf_keras' if frameworks == ('k2',) else 'keras'}.applications.{ctor} ({where}) at its smallest input, include_top=True, "
            f"classes={SWEEP_CLASSES}, logits (the sweep: --large only, not committed)",
            tags=("application", "large", "sweep"), versions=frameworks, inputs=SWEEP_INPUTS.get(module, 0.5),
            calibrate=True, large=True)


_layer_cases()
_graph_cases()
_app_cases()
_bad_cases()
_training_cases()
_trainable_rule_case()
_finetune_cases()
_activation_k3_cases()
_application_layer_cases()
_application_sweep_cases()


# ----------------------------------------------------------------------------------------------
# Weights
# ----------------------------------------------------------------------------------------------

def short_name(w):
    return w.name.split("/")[-1].split(":")[0]


def leaves(K, model):
    for layer in model.layers:
        if isinstance(layer, K.Model):
            yield from leaves(K, layer)
        else:
            yield layer


def randomize_layer(layer, rng):
    ws = layer.weights
    if not ws:
        return
    cls = type(layer).__name__
    cur = [np.asarray(w.numpy()) for w in ws]
    if cls == "Normalization":
        # K3 adapt() leaves count at 0, so ask the layer; never adapted (EfficientNet): ImageNet-like
        # stats for [0, 1] inputs
        if not getattr(layer, "is_adapted", False):
            c = cur[0].shape
            set_weights(layer, [rng.uniform(0.4, 0.5, c).astype(np.float32),
                                rng.uniform(0.04, 0.08, c).astype(np.float32), cur[2]])
        return
    act = getattr(getattr(layer, "activation", None), "__name__", "")
    vals = []
    for w, c in zip(ws, cur):
        n, s = short_name(w), c.shape
        if cls == "LayerScale":  # its gamma is unnamed in Keras 3 ("variable")
            v = rng.uniform(0.1, 0.6, s)
        elif n in ("kernel", "depthwise_kernel", "pointwise_kernel"):
            depthwise = n == "depthwise_kernel" or cls == "DepthwiseConv2D"
            fan_in = int(np.prod(s[:2] if depthwise else s[:-1]))
            v = rng.normal(0.0, math.sqrt((2.0 if act == "relu" else 1.0) / fan_in), s)
        elif n == "bias":
            v = rng.normal(0.0, 0.1, s)
        elif n in ("gamma", "scale"):
            v = rng.uniform(0.6, 1.4, s)
        elif n == "beta":
            v = rng.normal(0.0, 0.2, s)
        elif n == "moving_mean":
            v = rng.normal(0.0, 0.3, s)
        elif n == "moving_variance":
            v = rng.uniform(0.5, 1.5, s)
        elif n == "alpha":
            v = rng.uniform(0.05, 0.6, s)
        else:
            raise ValueError(f"no randomisation rule for weight {w.name!r} of {cls} {layer.name!r}")
        vals.append(v.astype(c.dtype))
    set_weights(layer, vals)


def set_weights(layer, vals):
    layer.set_weights(vals)
    if type(layer).__name__ == "Normalization":
        layer.finalize_state()  # it caches reshaped mean/variance tensors at build/adapt time


def node_inputs(layer):
    t = layer._inbound_nodes[-1].input_tensors
    return list(t) if isinstance(t, (list, tuple)) else [t]


def is_dense_like(layer):
    """Dense, or a biased 1x1 Conv2D (head convs such as MobileNetV3's Conv_2 and Logits). Not the
    squeeze-excite convs: spreading their gates made EfficientNet's outputs swing 10x on new inputs."""
    cls, name = type(layer).__name__, layer.name
    if any(k in name for k in ("se_reduce", "se_expand", "squeeze_excite")):
        return False
    return cls == "Dense" or (cls == "Conv2D" and layer.use_bias and tuple(layer.kernel_size) == (1, 1)
                              and layer.groups == 1)


def upstream_operations(tensors):
    """ids of every layer/operation the tensors depend on (through Keras's graph history)."""
    seen, found = set(), set()
    stack = [t._keras_history for t in tensors]
    while stack:
        op, node_index = stack.pop()[:2]
        if (id(op), node_index) in seen:
            continue
        seen.add((id(op), node_index))
        found.add(id(op))
        ins = op._inbound_nodes[node_index].input_tensors
        stack.extend(t._keras_history for t in (ins if isinstance(ins, (list, tuple)) else [ins]))
    return found


def calibration_runs(targets, feeds):
    """The target indices before which calibrate must run its probe again: where a target
    depends on one that was set since the last run (a target changes only what is downstream
    of it, so the others' inputs from that run are still exact)."""
    runs, since = set(), []
    for i, feed in enumerate(feeds):
        up = upstream_operations(feed)
        if i == 0 or any(id(t) in up for t in since):
            runs.add(i)
            since = []
        since.append(targets[i])
    return runs


def calibrate(K, model, xs, rng):
    """Set every BN's moving stats from its real input statistics (perturbed), in graph order, and scale
    every dense-like kernel so its pre-activation std is DENSE_STD (logits, SE gates spread enough to
    be sensitive).

    A probe model yields the inputs of the BNs, dense-like layers and nested models of this graph; after each
    is set, later layers must see the already-calibrated earlier ones, so a probe runs again before the
    first target that one set since the last run feeds (calibration_runs), computing only what the targets
    up to the next run need: exactly the inputs a probe run before every target gives, in fewer runs where
    branches are parallel (Inception, NASNet) and at about half the cost a run.
    """
    targets = [l for l in model.layers if isinstance(l, (K.layers.BatchNormalization, K.Model)) or is_dense_like(l)]
    if not targets:
        return
    feeds = [node_inputs(l) for l in targets]
    runs = calibration_runs(targets, feeds)
    for i, layer in enumerate(targets):
        if i in runs:  # a probe of the inputs of this target up to the next run's (only their ancestors run)
            last = min([r for r in runs if r > i] or [len(targets)])
            probe = K.Model(model.input, [t for f in feeds[i:last] for t in f])
            outs = probe(xs if len(xs) > 1 else xs[0], training=False)
            outs = outs if isinstance(outs, (list, tuple)) else [outs]
            first = i
        start = sum(len(f) for f in feeds[first:i])
        h = [np.asarray(o) for o in outs[start:start + len(feeds[i])]]
        if isinstance(layer, K.Model):
            calibrate(K, layer, h, rng)
            continue
        x = h[0].astype(np.float64)
        if is_dense_like(layer):
            w = [np.asarray(v) for v in layer.get_weights()]
            z = np.tensordot(x, w[0].reshape(-1, w[0].shape[-1]), axes=([-1], [0]))
            w[0] = (w[0] * (DENSE_STD / max(float(z.std()), 1e-6))).astype(np.float32)
            set_weights(layer, w)
            continue
        axes = layer.axis if isinstance(layer.axis, (list, tuple)) else [layer.axis]
        axes = [a % x.ndim for a in axes]
        red = tuple(a for a in range(x.ndim) if a not in axes)
        mu, var = x.mean(axis=red), x.var(axis=red)
        mean = mu + rng.normal(MEAN_SHIFT, 0.3, mu.shape) * np.sqrt(var + 1e-6)
        var = var * rng.uniform(VAR_SCALE[0], VAR_SCALE[1], var.shape) + 1e-4
        names = [short_name(w) for w in layer.weights]
        cur = [np.asarray(w.numpy()) for w in layer.weights]
        cur[names.index("moving_mean")] = mean.astype(np.float32)
        cur[names.index("moving_variance")] = var.astype(np.float32)
        set_weights(layer, cur)


def record_name(layer, w):
    """A weight's name as both frameworks can agree on it (for copy_weights)."""
    cls = type(layer).__name__
    if cls == "DepthwiseConv2D":
        return short_name(w).replace("depthwise_kernel", "kernel")
    if cls == "LayerScale":  # Keras 3 leaves it unnamed ("variable"), tf_keras calls it gamma
        return "gamma"
    return short_name(w)


def weight_records(K, model):
    return [(type(l).__name__, l.name, [(record_name(l, w), tuple(w.shape)) for w in l.weights], l)
            for l in leaves(K, model) if l.weights]


def copy_weights(donor, K, model):
    """Give `model` the weights of `donor` (another framework's build of the same case). Returns a
    reason string if the layer structures disagree (then nothing is copied)."""
    dst = weight_records(K, model)
    src = donor["records"]
    if len(src) != len(dst):
        return f"{len(src)} vs {len(dst)} weighted layers"
    if sorted(r[1] for r in src) == sorted(r[1] for r in dst) and len({r[1] for r in dst}) == len(dst):
        by = {r[1]: r for r in src}
        pairs = [(by[d[1]], d) for d in dst]
    else:
        pairs = list(zip(src, dst))
    for s, d in pairs:
        if s[0] != d[0] or s[2] != d[2]:
            return f"layer {s[1]} ({s[0]} {s[2]}) vs {d[1]} ({d[0]} {d[2]})"
    for s, d in pairs:
        set_weights(d[3], donor["values"][s[1]])
    return None


# ----------------------------------------------------------------------------------------------
# Training traces
# ----------------------------------------------------------------------------------------------

def training_data(spec, shape, scale, rng):
    """TRAIN_STEPS batches and a validation batch. Inputs are seeded noise rounded to steps of scale/8
    (``spec.pixels``: integer pixels N(127.5, 60) clipped to [0, 255]); targets come from a random
    linear teacher on the inputs (per-channel means for images), so there is something to learn."""
    n = TRAIN_STEPS * spec.batch + spec.val
    if spec.pixels:
        x = np.clip(np.round(rng.normal(127.5, 60.0, (n,) + shape)), 0.0, 255.0).astype(np.float32)
    else:
        step = scale / TRAIN_QUANT
        x = (np.round(rng.normal(0.0, scale, (n,) + shape) / step) * step).astype(np.float32)
    f = x.reshape(n, -1, shape[-1]).mean(axis=1).astype(np.float64)
    f = (f - f.mean(axis=0)) / (f.std(axis=0) + 1e-12)
    z = f @ rng.normal(0.0, 1.0, (f.shape[1], spec.outputs))
    if spec.target == "classes":
        y = np.argmax(z + rng.normal(0.0, 0.5, z.shape), axis=1).astype(np.int32)
    elif spec.target == "binary":
        y = (z[:, :1] + rng.normal(0.0, 0.5, (n, 1)) > 0).astype(np.float32)
    else:
        y = (np.round(np.tanh(z) * 64.0) / 64.0).astype(np.float32)
    t, lead = TRAIN_STEPS * spec.batch, (TRAIN_STEPS, spec.batch)
    return x[:t].reshape(lead + shape), y[:t].reshape(lead + y.shape[1:]), x[t:], y[t:]


def weights_digest(ws):
    """sha256 of a layer's get_weights(), each as float32 C-order bytes, in get_weights() order."""
    h = hashlib.sha256()
    for w in ws:
        h.update(np.ascontiguousarray(w, dtype=np.float32).tobytes())
    return h.hexdigest()


def walk(K, model, path=()):
    """(path, layer) for every layer below `model` at every depth, depth first in `model.layers`
    order; a nested model comes before its own layers. InputLayers are skipped (tf_keras lists them
    in a Functional's layers, Keras 3 does not)."""
    for layer in model.layers:
        if type(layer).__name__ == "InputLayer":
            continue
        p = path + (layer.name,)
        yield p, layer
        if isinstance(layer, K.Model):
            yield from walk(K, layer, p)


def call_training(layer):
    """The training= a nested model's (last) call recorded in the graph, or None."""
    nodes = getattr(layer, "_inbound_nodes", None) or []
    if not nodes:
        return None
    node = nodes[-1]
    kw = node.arguments.kwargs if hasattr(node, "arguments") else getattr(node, "call_kwargs", {}) or {}
    return kw.get("training")


class TraceCheckError(AssertionError):
    """A training trace broke a rule the generator checks (frozen layer changed, a trained layer did not
    move, BN moving statistics not as expected, fit not as documented): the run fails."""


@dataclass
class Entry:
    """One recorded layer of a training trace: key (path joined by "/"), its path, the layer, whether
    its arrays are stored (else digest only), whether it trains (has weights in the model's
    trainable_weights) and whether its BN moving statistics are expected to move."""
    key: str
    path: tuple
    layer: object
    arrays: bool
    trained: bool
    moving: bool

    @property
    def frozen(self):
        return not self.trained and not self.moving


def trace_plan(K, model, spec):
    """The layers a trace records, in key order. Top-level layers with weights are one entry each (a
    nested model too, as in w/). With spec.nested_paths, a nested model that has a trained leaf or a
    moving BN is replaced by every leaf with weights below it, keyed by its path; arrays are stored for
    the trained leaves and the moving BNs, a digest for all."""
    tids = {id(w) for w in model.trainable_weights}
    k3 = is_k3(K)

    def info(path, chain):
        layer = chain[-1]
        trained = any(id(w) in tids for w in layer.weights)
        bn = isinstance(layer, K.layers.BatchNormalization)
        # Keras 3 Functional.call passes its own training=True to every node (a recorded
        # training=False does not hold); tf_keras honours it for everything below that call
        held = not k3 and any(call_training(a) is False for a in chain[:-1])
        moving = bn and all(a.trainable for a in chain) and not held
        return trained, moving

    plan = []
    for layer in model.layers:
        ws = layer.weights
        if not ws:
            continue
        if spec.nested_paths and isinstance(layer, K.Model):
            chains, by = [], {(layer.name,): layer}
            for p, leaf in walk(K, layer, (layer.name,)):
                by[p] = leaf
                if not isinstance(leaf, K.Model) and leaf.weights:
                    chains.append((p, [by[p[:i]] for i in range(1, len(p) + 1)]))
            infos = [info(p, c) for p, c in chains]
            if any(t or m for t, m in infos):
                plan += [Entry("/".join(p), p, c[-1], t or m, t, m) for (p, c), (t, m) in zip(chains, infos)]
                continue
        trained = bool(layer.trainable_weights)
        moving = info((layer.name,), [layer])[1]
        plan.append(Entry(layer.name, (layer.name,), layer,
                          trained or layer.count_params() <= TRAIN_BIG_FROZEN, trained, moving))
    return plan


def snapshot(plan, prefix, arrays_too=True):
    """{prefix/<key>/<i>: get_weights()[i]} for the plan's entries with arrays, and {key: sha256} for
    all of them."""
    arrays, digests = {}, {}
    for e in plan:
        ws = e.layer.get_weights()
        digests[e.key] = weights_digest(ws)
        if e.arrays and arrays_too:
            arrays.update({f"{prefix}/{e.key}/{i}": w for i, w in enumerate(ws)})
    return arrays, digests


def resolved_metrics(K, model):
    cm = getattr(model, "_compile_metrics", None)  # Keras 3
    if is_k3(K):
        return [type(m).__name__ for m in (cm.metrics if cm is not None else [])]
    out = []  # tf_keras: MeanMetricWrapper objects around the function 'accuracy' resolved to
    for m in model.compiled_metrics.metrics:
        fn = getattr(m, "_fn", None)
        out.append(type(m).__name__ + (f"({fn.__name__})" if fn is not None else ""))
    return out


def bn_batch_moments(K, model_json, initial, plan, x0):
    """For each top-level BN expected to move: the mean and biased variance of its input on the first
    training batch, from a throwaway copy run with training=True (earlier BNs in batch mode, as in
    the first train_on_batch), and the element count n per channel. Also that copy's outputs on the
    batch with training=False (moving statistics) and then training=True (batch statistics)."""
    bns = [e for e in plan if e.moving and len(e.path) == 1]
    if not bns:
        return {}, None
    m = K.models.model_from_json(model_json)
    m.set_weights(initial)
    inference = np.asarray(m(x0, training=False))
    probe = K.Model(m.inputs, [node_inputs(m.get_layer(e.key))[0] for e in bns] + [m.outputs[0]])
    outs = probe(x0, training=True)
    res = {}
    for e, h in zip(bns, outs[:-1]):
        h = np.asarray(h, dtype=np.float64)
        axes = e.layer.axis if isinstance(e.layer.axis, (list, tuple)) else [e.layer.axis]
        axes = [a % h.ndim for a in axes]
        red = tuple(a for a in range(h.ndim) if a not in axes)
        res[e.key] = (h.mean(axis=red), h.var(axis=red), int(np.prod([h.shape[a] for a in red])))
    return res, (inference, np.asarray(outs[-1]))


def bn_update_report(plan, moments, before, momentum_of):
    """How each top-level BN's moving statistics moved in step 1: moving = momentum * moving +
    (1 - momentum) * stat, solved for stat and compared with the batch mean and with the biased
    (sum/n) and Bessel-corrected (sum/(n-1)) batch variance of the BN input."""
    rep = {}
    for e in plan:
        if e.key not in moments:
            continue
        mu, var, n = moments[e.key]
        names = [short_name(w) for w in e.layer.weights]
        now = e.layer.get_weights()
        mom = float(momentum_of(e.layer))
        i_m, i_v = names.index("moving_mean"), names.index("moving_variance")
        stat_m = (now[i_m].astype(np.float64) - mom * before[e.key][i_m]) / (1.0 - mom)
        stat_v = (now[i_v].astype(np.float64) - mom * before[e.key][i_v]) / (1.0 - mom)
        sd = np.sqrt(var).max()
        err_b = float(np.max(np.abs(stat_v / var - 1.0)))
        err_u = float(np.max(np.abs(stat_v / (var * n / (n - 1)) - 1.0)))
        rep[e.key] = {"momentum": mom, "n": n,
                      "mean_max_err_over_sd": float(np.max(np.abs(stat_m - mu)) / sd),
                      "variance_rel_err_biased": err_b, "variance_rel_err_bessel": err_u,
                      "variance": "biased" if err_b < err_u else "bessel"}
        if min(err_b, err_u) > 0.25 / n or rep[e.key]["mean_max_err_over_sd"] > 1e-3:
            raise TraceCheckError(f"BN {e.key}: moving statistics moved by neither batch rule: {rep[e.key]}")
    return rep


def record_training(K, model, spec, rng):
    """Per variant: a fresh copy of the initial model and a fresh optimizer, evaluate, TRAIN_STEPS
    train_on_batch calls (weights recorded after TRAIN_RECORD steps), evaluate again."""
    shape = tuple(spec.shape or (int(d) for d in model.input_shape[1:]))
    x, y, xv, yv = training_data(spec, shape, spec.scale, rng)
    arrays = {"train/x": x, "train/y": y, "train/xv": xv, "train/yv": yv}
    if any(v.onehot for v in spec.variants):
        eye = np.eye(spec.outputs, dtype=np.float32)
        arrays["train/y_onehot"], arrays["train/yv_onehot"] = eye[y], eye[yv]
    seed = int(rng.integers(1 << 31))
    initial = model.get_weights()
    counts = param_counts(model)
    model_json = model.to_json()
    ext = spec.extended
    moments, bn_report, paths, outs, forward = {}, None, {}, None, None
    for v in spec.variants:
        K.utils.set_random_seed(seed)
        m = K.models.model_from_json(model_json)  # a fresh copy: new variables, new optimizer
        m.set_weights(initial)
        for layer in leaves(K, m):  # Keras's set_weights leaves a Normalization normalising with
            if type(layer).__name__ == "Normalization":  # its build-time mean 0 / variance 1
                layer.finalize_state()
        assert param_counts(m) == counts, (param_counts(m), counts)
        assert all(a.tobytes() == b.tobytes() for a, b in zip(m.get_weights(), initial))
        for name, flag in v.trainable:  # this variant's freeze pattern, before compile
            m.get_layer(name).trainable = flag
        plan = trace_plan(K, m, spec)
        start = {e.key: e.layer.get_weights() for e in plan}
        if ext:
            paths.update({e.key: list(e.path) for e in plan if len(e.path) > 1})
            if bn_report is None:
                moments, outs = bn_batch_moments(K, model_json, initial, plan, x[0])
        opt = getattr(K.optimizers, v.optimizer[0])(**v.optimizer[1])
        loss = getattr(K.losses, v.loss[0])(**v.loss[1])
        m.compile(optimizer=opt, loss=loss, metrics=list(v.metrics) or None)
        ykey = "train/y_onehot" if v.onehot else "train/y"
        yt, yvt = arrays[ykey], arrays[ykey.replace("/y", "/yv")]
        p = f"train/{v.name}"
        ev0 = m.evaluate(xv, yvt, batch_size=len(xv), verbose=0, return_dict=True)
        logs, digests = [], {}
        record_arrays = spec.record_arrays if v.arrays is None else v.arrays
        for s in range(TRAIN_STEPS):
            logs.append(m.train_on_batch(x[s], yt[s], return_dict=True))
            if s + 1 in TRAIN_RECORD:
                snap, digests[f"step{s + 1}"] = snapshot(plan, f"{p}/step{s + 1}", s + 1 in record_arrays)
                arrays.update(snap)
            for e in plan:  # frozen layers must stay bit-for-bit as saved
                if e.frozen and any(a.tobytes() != b.tobytes() for a, b in zip(start[e.key], e.layer.get_weights())):
                    raise TraceCheckError(f"{v.name}: frozen layer {e.key} changed at step {s + 1}")
            if ext and s == 0:
                check_bn_moving(K, plan, start, v.name)
                if bn_report is None:
                    bn_report = bn_update_report(plan, moments, start, lambda l: l.momentum)
                    if outs is not None:  # which statistics the step-1 forward pass normalised with
                        got = float(logs[0]["loss"])
                        ls = [float(loss(yt[0], o)) for o in outs]
                        forward = {
                            "step1_loss": got, "loss_with_moving_statistics": ls[0],
                            "loss_with_batch_statistics": ls[1],
                            "statistics": "batch" if abs(ls[1] - got) < abs(ls[0] - got) else "moving"}
        ev = m.evaluate(xv, yvt, batch_size=len(xv), verbose=0, return_dict=True)
        names = ["loss"] + [k for k in ev if k != "loss"]
        config = {
            **({"trainable": dict(v.trainable)} if v.trainable else {}),
            "optimizer": {"class_name": type(opt).__name__, "config": opt.get_config()},
            "loss": {"class_name": type(loss).__name__, "config": loss.get_config()},
            "metrics": list(v.metrics), "resolved_metrics": resolved_metrics(K, m),
            "y": ykey, "yv": ykey.replace("/y", "/yv"), "steps": TRAIN_STEPS, "batch_size": spec.batch,
            "record_steps": list(TRAIN_RECORD), "eval": names, "eval_batch_size": len(xv),
            "jit_compile": bool(m.jit_compile),
        }
        if ext:
            config["framework"] = f"{K.__name__} {K.__version__}"
            config["record_arrays"] = list(record_arrays)
        arrays[f"{p}/config"] = np.array(json.dumps(config, default=float))
        arrays[f"{p}/sha256"] = np.array(json.dumps(digests))
        arrays[f"{p}/loss"] = np.array([g["loss"] for g in logs], dtype=np.float32)
        if v.metrics:
            arrays[f"{p}/metric"] = np.array([g[names[1]] for g in logs], dtype=np.float32)
        arrays[f"{p}/eval_initial"] = np.array([ev0[k] for k in names], dtype=np.float32)
        arrays[f"{p}/eval"] = np.array([ev[k] for k in names], dtype=np.float32)
        if not all(np.isfinite(arrays[f"{p}/loss"])) or not all(np.isfinite(arrays[f"{p}/eval"])):
            raise FloatingPointError(f"{v.name}: non-finite training loss {arrays[f'{p}/loss']}")
        if ext:
            arrays[f"{p}/change"] = np.array(json.dumps(weight_change(plan, start, v.name)))
    if ext:
        if paths:
            arrays["train/paths"] = np.array(json.dumps(paths))
        if bn_report:
            arrays["train/bn_moving_update"] = np.array(json.dumps(bn_report))
        if forward:
            arrays["train/bn_forward"] = np.array(json.dumps(forward))
    return arrays


def check_bn_moving(K, plan, start, variant):
    """After step 1: the moving statistics of every BN in the plan moved exactly when the plan
    expects it (a trainable BN in training mode), for Keras 3 and tf_keras alike. (A BN inside a
    fully frozen nested model is covered by that model's frozen check.)"""
    for e in plan:
        if not isinstance(e.layer, K.layers.BatchNormalization):
            continue
        names = [short_name(w) for w in e.layer.weights]
        now = e.layer.get_weights()
        moved = any(not np.array_equal(now[names.index(n)], start[e.key][names.index(n)])
                    for n in ("moving_mean", "moving_variance"))
        if moved != e.moving:
            raise TraceCheckError(f"{variant}: BN {e.key} moving statistics {'moved' if moved else 'stayed'} "
                                 f"but {'stay' if moved else 'move'} was expected")


def weight_change(plan, start, variant):
    """{key: max over the layer's arrays of max|w_end - w_start| / max|w_start|} for the layers that
    train or move; a trained layer that did not change at all fails the run."""
    out = {}
    for e in plan:
        if not (e.trained or e.moving):
            continue
        rel = max(float(np.max(np.abs(a.astype(np.float64) - b))) / max(float(np.max(np.abs(b))), 1e-12)
                  for a, b in zip(e.layer.get_weights(), start[e.key]) if b.size)
        if rel == 0.0:
            raise TraceCheckError(f"{variant}: trained layer {e.key} did not change in {TRAIN_STEPS} steps")
        out[e.key] = rel
    return out


def training_summary(arrays):
    """Manifest view of a case's training traces: per variant its config, losses and evaluation."""
    variants, extra = {}, {}
    for key in sorted(k for k in arrays if k.startswith("train/") and k.endswith("/config")):
        p = key[:-len("/config")]
        cfg = json.loads(str(arrays[key]))
        variants[p.split("/")[1]] = {
            "optimizer": cfg["optimizer"], "loss": cfg["loss"], "metrics": cfg["metrics"],
            "resolved_metrics": cfg["resolved_metrics"], "targets": [cfg["y"], cfg["yv"]],
            "loss_per_step": [float(v) for v in arrays[f"{p}/loss"]],
            "eval_names": cfg["eval"],
            "eval_initial": [float(v) for v in arrays[f"{p}/eval_initial"]],
            "eval_after": [float(v) for v in arrays[f"{p}/eval"]],
        }
        if "framework" in cfg:
            variants[p.split("/")[1]]["record_arrays"] = cfg["record_arrays"]
            change = json.loads(str(arrays[f"{p}/change"]))
            weakest = min(change, key=change.get)
            variants[p.split("/")[1]]["smallest_relative_change"] = [weakest, change[weakest]]
            # a layer whose arrays move less than the step-5 tolerance (1e-3 of max|w|) hardly tells a
            # trainer that did nothing from one that did it right
            variants[p.split("/")[1]]["change_below_1e-3"] = sorted(k for k, c in change.items() if c < 1e-3)
            extra["framework"] = cfg["framework"]
    for k in ("bn_moving_update", "bn_forward"):
        if f"train/{k}" in arrays:
            extra[k] = json.loads(str(arrays[f"train/{k}"]))
    return {"initial_weights": "every variant starts from the weights in the saved model files (also "
                               "w/<layer>/<i> in the npz when params < 200k), so the npz has no train/initial",
            "steps": TRAIN_STEPS, "record_steps": list(TRAIN_RECORD), **extra, "variants": variants}


# ----------------------------------------------------------------------------------------------
# Running a case
# ----------------------------------------------------------------------------------------------

def make_inputs(case, shapes, rng, n):
    """Seeded noise, rounded (pixels to integers, the rest to steps of scale/64) so the npz compress."""
    xs = []
    for shp in shapes:
        if case.inputs == "pixels":
            x = np.clip(np.round(rng.normal(127.5, 60.0, (n,) + shp)), 0.0, 255.0)
        else:
            step = float(case.inputs) / 64.0
            x = np.round(rng.normal(0.0, float(case.inputs), (n,) + shp) / step) * step
        xs.append(x.astype(np.float32))
    return xs


def predict(model, xs):
    out = model(xs if len(xs) > 1 else xs[0], training=False)
    if isinstance(out, dict):
        out = [out[k] for k in model.output_names]
    out = out if isinstance(out, (list, tuple)) else [out]
    return [np.asarray(o, dtype=np.float32) for o in out]


def max_diff(a, b):
    return max(float(np.max(np.abs(x.astype(np.float64) - y))) if x.size else 0.0 for x, y in zip(a, b))


def write_npz(path, arrays):
    """np.savez_compressed, but with fixed zip times so the bytes are reproducible."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        for k, v in arrays.items():
            buf = io.BytesIO()
            np.lib.format.write_array(buf, np.asanyarray(v), allow_pickle=False)
            zi = zipfile.ZipInfo(k + ".npy", ZIP_TIME)
            zi.compress_type = zipfile.ZIP_DEFLATED
            z.writestr(zi, buf.getvalue())


def pin_keras_zip(path):
    """Pin what varies between runs in a .keras file: metadata date_saved, zip times, and config.json's
    "shared_object_id" values (Python id()s of shared objects, e.g. one DTypePolicy used by several
    layers), renumbered 1, 2, ... in order of first appearance, which keeps which objects are shared."""
    with zipfile.ZipFile(path) as z:
        items = [(i, z.read(i.filename)) for i in z.infolist()]
    with zipfile.ZipFile(path, "w") as z:
        for info, data in items:
            if info.filename == "metadata.json":
                meta = json.loads(data)
                data = data.replace(meta["date_saved"].encode(), DATE_SAVED.encode())
            if info.filename == "config.json":
                ids = {}
                data = re.sub(rb'"shared_object_id": (\d+)',
                              lambda m: b'"shared_object_id": %d' % ids.setdefault(m.group(1), len(ids) + 1), data)
            zi = zipfile.ZipInfo(info.filename, ZIP_TIME)
            zi.compress_type, zi.external_attr = info.compress_type, info.external_attr
            z.writestr(zi, data)


def reload_check(K, path, xs, ys, kw):
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            m = K.models.load_model(str(path), compile=False, **kw)
        d = max_diff(predict(m, xs), ys)
    except Exception as e:  # Keras cannot reopen some of its own files: record, do not fail
        msg = str(e).replace(str(path), path.name).strip().splitlines()
        return {"reload": "error", "error": f"{type(e).__name__}: {(msg[0] if msg else '')[:300]}"}
    ok = d <= 1e-6 * (1.0 + max(float(np.max(np.abs(y))) for y in ys))
    return {"reload": "ok" if ok else "mismatch", "reload_max_abs_diff": d}


def param_counts(model):
    t = sum(int(np.prod(w.shape)) for w in model.trainable_weights)
    n = sum(int(np.prod(w.shape)) for w in model.non_trainable_weights)
    return {"total": int(model.count_params()), "trainable": t, "non_trainable": n}


def jsonable_shape(s):
    return json.loads(json.dumps(s, default=list))


def run_framework(case, tag, K, out, state, log):
    K.backend.clear_session()
    K.utils.set_random_seed(case.seed)
    model = case.build(K)
    rng_w = np.random.default_rng([case.seed, 2])
    shapes = [tuple(int(d) for d in t.shape[1:]) for t in model.inputs] if case.shapes is None \
        else [tuple(s) for s in case.shapes]
    if "xs" not in state:
        state["xs"] = make_inputs(case, shapes, np.random.default_rng([case.seed, 1]), BATCH)
        state["shapes"] = shapes
    assert shapes == state["shapes"], (shapes, state["shapes"])
    xs = state["xs"]
    res = {"keras_version": K.__version__}
    why = copy_weights(state["donor"], K, model) if "donor" in state else "first"
    res["weights"] = "copied from k3" if why is None else "generated" + ("" if why == "first" else
                                                                          f" (differs from k3: {why})")
    if why is not None:
        for layer in leaves(K, model):
            randomize_layer(layer, rng_w)
        if case.calibrate:
            calibrate(K, model, make_inputs(case, shapes, np.random.default_rng([case.seed, 3]), CAL_BATCH), rng_w)
        if case.init is not None:
            case.init(model)
    if "donor" not in state:
        recs = weight_records(K, model)
        state["donor"] = {"records": recs, "values": {r[1]: r[3].get_weights() for r in recs}}
    ys = predict(model, xs)
    for y in ys:
        if not np.all(np.isfinite(y)):
            raise FloatingPointError(f"{case.name} {tag}: non-finite outputs")
    res["outputs"] = [{"max_abs": float(np.max(np.abs(y))), "std": float(np.std(y))} for y in ys]
    warn = [f"y{i} std {o['std']:.2g}" for i, o in enumerate(res["outputs"]) if o["std"] < 1e-3] + \
           [f"y{i} max {o['max_abs']:.2g}" for i, o in enumerate(res["outputs"]) if o["max_abs"] > 1e5]
    res["output_shape"] = jsonable_shape(model.output_shape)
    res["params"] = param_counts(model)

    files = {}
    for flav in FLAVOURS[tag]:
        path = out / f"{case.name}.{flav}"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model.save(str(path))
        if flav == "keras":
            pin_keras_zip(path)
        files[flav] = {"file": path.name, "bytes": path.stat().st_size,
                       **reload_check(K, path, xs, ys, case.load_kwargs if is_k3(K) else {})}
    res["files"] = files

    arrays = {f"x{i}": x for i, x in enumerate(xs)}
    arrays.update({f"y{i}": y for i, y in enumerate(ys)})
    arrays["params_total"] = np.int64(res["params"]["total"])
    arrays["params_trainable"] = np.int64(res["params"]["trainable"])
    arrays["params_non_trainable"] = np.int64(res["params"]["non_trainable"])
    arrays["output_shapes"] = np.array(json.dumps(res["output_shape"]))
    if res["params"]["total"] < SMALL_PARAMS:
        for layer in model.layers:
            for i, w in enumerate(layer.get_weights()):
                arrays[f"w/{layer.name}/{i}"] = w
    rng_h = np.random.default_rng([case.seed, 4])
    for hook in case.hooks:  # last: hooks may train the model
        arrays.update(hook(K, model, xs, ys, rng_h))
    if any(k.startswith("train/") for k in arrays):
        res["training"] = training_summary(arrays)
    if "fit/replay" in arrays:
        res["fit"] = {"args": json.loads(str(arrays["fit/args"])), "split": json.loads(str(arrays["fit/split"])),
                      "history": {k: [float(v) for v in arrays[f"fit/flat/history/{k}"]]
                                  for k in json.loads(str(arrays["fit/flat/history_keys"]))},
                      "identical_for_y_n_and_y_n1": bool(arrays["fit/identical"])}
    if "trainable/counts" in arrays:
        res["trainable"] = {"script": json.loads(str(arrays["trainable/script"])),
                            "counts": arrays["trainable/counts"].tolist(),
                            "n_trainable_weights": arrays["trainable/n_trainable_weights"].tolist()}
    npz = out / f"{case.name}.{tag}.npz"
    write_npz(npz, arrays)
    res["npz"] = {"file": npz.name, "bytes": npz.stat().st_size}
    state.setdefault("ys", {})[tag] = ys
    o = res["outputs"]
    log(f"  {tag}: max|y| {max(v['max_abs'] for v in o):.3g}  std(y) {min(v['std'] for v in o):.3g}"
        f"  params {res['params']['total']}  weights {res['weights']}"
        + "".join(f"  {k}:{v['reload']}" for k, v in files.items()) + (f"  WARNING {warn}" if warn else ""))
    if warn:
        res["warnings"] = warn
    return res


def run_case(case, mods, out, log):
    t0 = time.time()
    log(f"{case.name}  [{', '.join(case.tags)}]")
    entry = {"description": case.desc, "tags": list(case.tags), "seed": case.seed, "large": case.large,
             "input_scale": case.inputs, "calibrated_bn": case.calibrate, "notes": list(case.notes),
             "frameworks": {}, "skipped": {}}
    if case.load_kwargs:
        entry["k3_load_kwargs"] = case.load_kwargs
    state = {}
    for tag in ("k3", "k2"):
        if tag not in case.versions:
            entry["skipped"][tag] = "case is Keras-3-only (API missing in tf_keras)" if tag == "k2" else \
                "case is tf_keras-only (API missing in Keras 3)"
            continue
        try:
            entry["frameworks"][tag] = run_framework(case, tag, mods[tag], out, state, log)
        except Exception as e:
            if isinstance(e, (FloatingPointError, TraceCheckError)):
                raise
            entry["skipped"][tag] = f"{type(e).__name__}: {str(e).splitlines()[0][:300] if str(e) else ''}"
            log(f"  {tag}: SKIPPED {entry['skipped'][tag]}")
    if not entry["frameworks"]:
        raise RuntimeError(f"{case.name}: no framework could build it: {entry['skipped']}")
    entry["input_shapes"] = [list(s) for s in state["shapes"]]
    ys = state["ys"]
    if "k2" in ys and "k3" in ys and entry["frameworks"]["k2"]["weights"] == "copied from k3":
        entry["k2_vs_k3_max_abs_diff"] = max_diff(ys["k2"], ys["k3"])
    entry["flavours"] = [f for fw in entry["frameworks"].values() for f in fw["files"]]
    entry["keras_could_not_reload"] = [f for fw in entry["frameworks"].values() for f, r in fw["files"].items()
                                       if r["reload"] != "ok"]
    log(f"  {time.time() - t0:.1f} s")
    return entry


def load_frameworks():
    import tensorflow as tf
    tf.get_logger().setLevel("ERROR")
    import absl.logging
    absl.logging.set_verbosity("error")
    tf.config.experimental.enable_op_determinism()
    import keras
    import tf_keras
    import h5py
    versions = {"tensorflow": tf.__version__, "keras": keras.__version__, "tf_keras": tf_keras.__version__,
                "h5py": h5py.__version__, "numpy": np.__version__, "python": sys.version.split()[0]}
    want = {"tensorflow": PINNED["tensorflow-cpu"], "keras": PINNED["keras"], "tf_keras": PINNED["tf-keras"]}
    bad = {k: (versions[k], v) for k, v in want.items() if versions[k] != v}
    if bad:
        print(f"WARNING: versions differ from the pinned ones (have, pinned): {bad}", file=sys.stderr)
    return {"k3": keras, "k2": tf_keras}, versions


def select(args):
    if args.only:
        names = []
        for token in args.only:
            hits = [token] if token in CASES else [n for n, c in CASES.items()
                                                   if token in c.tags and (args.large or not c.large)]
            if not hits:
                sys.exit(f"unknown case or tag {token!r}; see --list")
            names += [h for h in hits if h not in names]
    else:
        names = [n for n, c in CASES.items() if args.large or not c.large]
    chosen = [CASES[n] for n in names]
    large = [c.name for c in chosen if c.large]
    if large and not args.large:
        sys.exit(f"{large} are large cases: pass --large (and --out DIR; they are not committed)")
    if large and args.out.resolve() == DEFAULT_OUT:
        sys.exit("large fixtures are not committed: pass --out DIR outside weights/fixtures")
    return chosen


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output directory (default weights/fixtures)")
    ap.add_argument("--only", nargs="+", metavar="CASE", help="case names or tags to generate")
    ap.add_argument("--list", action="store_true", help="list the cases and exit")
    ap.add_argument("--large", action="store_true", help="include the large applications (not committed)")
    args = ap.parse_args(argv)
    if args.list:
        for c in CASES.values():
            print(f"{c.name:34s} {','.join(c.versions):6s} {','.join(c.tags):28s} {c.desc}")
        return 0
    chosen = select(args)
    args.out.mkdir(parents=True, exist_ok=True)
    mods, versions = load_frameworks()
    warnings.filterwarnings("ignore")
    manifest_path = args.out / "manifest.json"
    cases = {}
    if args.only and manifest_path.exists():
        cases = json.loads(manifest_path.read_text())["cases"]
    t0 = time.time()
    for case in chosen:
        cases[case.name] = run_case(case, mods, args.out, lambda s: print(s, flush=True))
    order = list(CASES)
    manifest = {
        "generator": "weights/generate.py",
        "pinned": PINNED,
        "versions": versions,
        "flavours": {"k3.h5": "Keras 3 legacy HDF5 (model.save('x.h5'))", "keras": "Keras 3 zip",
                     "k2.h5": "tf_keras (Keras 2) HDF5"},
        "cases": {n: cases[n] for n in sorted(cases, key=lambda n: order.index(n) if n in order else 1 << 30)},
    }
    manifest_path.write_text(json.dumps(manifest, indent=1, sort_keys=False) + "\n")
    if not args.only:  # a full run owns the directory: drop fixtures of cases that no longer exist
        made = {f["file"] for e in cases.values() for fw in e["frameworks"].values()
                for f in list(fw["files"].values()) + [fw["npz"]]}
        for p in sorted(args.out.iterdir()):
            if p.suffix in (".h5", ".keras", ".npz") and p.name not in made:
                print(f"removing stale {p.name}")
                p.unlink()
    for n in (c.name for c in chosen):
        e = cases[n]
        for tag, why in e["skipped"].items():
            if tag in CASES[n].versions:
                print(f"FAILED {n} {tag}: {why}")
        if e["keras_could_not_reload"]:
            print(f"note: Keras could not reload {n} {e['keras_could_not_reload']}")
    total = sum(p.stat().st_size for p in args.out.iterdir() if p.is_file())
    print(f"{len(chosen)} cases in {time.time() - t0:.0f} s; {args.out}: {total / 1e6:.2f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
