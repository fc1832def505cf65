"""Graph rewrites on the flat graph, one function per fold.  Each keeps the model's
outputs the same up to float32 round-off (tests/test_rewrites.py compares before/after).

Both rewrites need the producer's output to feed only the absorbed layer, and neither may
absorb a tensor the model returns.  BatchNormalization folding changes weights, so it
also needs both layers to have exactly one call (a shared convolution whose calls are
followed by different BatchNormalizations cannot hold two folded kernels).
"""
import numpy as np

from ..layers.convolutional import Conv2D, DepthwiseConv2D, SeparableConv2D
from ..layers.core import Dense
from ..layers.normalization import BatchNormalization, batchnorm_scale_shift
from ..layers.reshaping import ZeroPadding2D

CONVOLUTIONS = (Conv2D, DepthwiseConv2D, SeparableConv2D)
FOLD_TARGETS = CONVOLUTIONS + (Dense,)


def _sole_consumer(flat, users, node):
    """The single node consuming node's only output, or None."""
    if len(node.outputs) != 1:
        return None
    out = node.outputs[0]
    if out in flat.outputs:
        return None
    consumers = users.get(out, [])
    if len(consumers) != 1 or len(consumers[0].inputs) != 1:
        return None
    return consumers[0]


def _absorb(flat, producer, absorbed):
    """producer now computes absorbed's outputs; absorbed leaves the graph."""
    producer.outputs = absorbed.outputs
    for t in producer.outputs:
        t.producer = producer
    flat.nodes.remove(absorbed)


def fold_batchnorm_into_conv(flat, allow=lambda producer, bn: True):
    """Fold BatchNormalization into the Conv2D/DepthwiseConv2D/SeparableConv2D/Dense
    before it.  allow(producer_node, bn_node) lets training keep trainable layers apart.
    Returns the folded (producer_layer, bn_layer) pairs."""
    calls = {}
    for node in flat.nodes:
        calls[node.layer] = calls.get(node.layer, 0) + 1
    users = flat.consumers()
    folded = []
    for node in list(flat.nodes):
        if not isinstance(node.layer, FOLD_TARGETS) or calls[node.layer] != 1:
            continue
        if not getattr(node.activation, "is_linear", False):
            continue
        bn = _sole_consumer(flat, users, node)
        if bn is None or not isinstance(bn.layer, BatchNormalization) or calls[bn.layer] != 1:
            continue
        if not bn.layer.on_last_axis(len(bn.inputs[0].shape)):
            continue
        if not allow(node, bn):
            continue
        node.folded_bn = bn.layer
        _absorb(flat, node, bn)
        folded.append((node.layer, bn.layer))
    return folded


def fold_zero_padding_into_conv(flat):
    """Let a 'valid' Conv2D/DepthwiseConv2D/SeparableConv2D read the unpadded input with
    explicit (possibly asymmetric) pads instead of a ZeroPadding2D copy before it.  The
    kernels take per-side padding anyway; the padded tensor, which MobileNetV2's torchvision
    layout puts before every stride-2 convolution, costs memory at the arena's peak (4.9 MB
    of 9.4 at 224x224) and a copy.  Works per call; training differentiates the conv with
    the same pads, so it applies to trained convolutions too."""
    users = flat.consumers()
    folded = 0
    for node in list(flat.nodes):
        if not isinstance(node.layer, ZeroPadding2D):
            continue
        conv = _sole_consumer(flat, users, node)
        if (conv is None or not isinstance(conv.layer, CONVOLUTIONS)
                or conv.layer.padding != "valid" or conv.extra_pads):
            continue
        conv.extra_pads = tuple(node.layer.amounts)
        conv.inputs = [node.inputs[0]]
        flat.nodes.remove(node)
        users = flat.consumers()
        folded += 1
    return folded


def fuse_activation_into_producer(flat, allow=lambda producer, activation: True):
    """Give a Conv/Dense call the elementwise activation layer that follows it (ReLU6 in
    MobileNetV2), so the GEMM epilogue applies it while the tile is in registers.
    allow(producer_node, activation_node) lets training keep trained layers apart."""
    users = flat.consumers()
    fused = 0
    for node in list(flat.nodes):
        if node not in flat.nodes or not isinstance(node.layer, FOLD_TARGETS):
            continue
        if not getattr(node.activation, "is_linear", False):
            continue
        act_node = _sole_consumer(flat, users, node)
        if act_node is None or not hasattr(act_node.layer, "elementwise_activation"):
            continue
        act = act_node.layer.elementwise_activation()
        if act is None or not allow(node, act_node):
            continue
        node.activation = act
        _absorb(flat, node, act_node)
        users = flat.consumers()
        fused += 1
    return fused


def folded_weights(producer, bn, raw, bn_raw):
    """The producer's Keras-order weights with BatchNormalization `bn` folded in: kernel * s
    on the output channel axis (in place, float32: one rounding of the product, as
    computing it in float64 would also give) and bias * s + t (float64, one rounding),
    with the bias created when the layer had none."""
    scale, shift = batchnorm_scale_shift(bn, bn_raw)
    scale32 = scale.astype(np.float32)
    if isinstance(producer, SeparableConv2D):
        depthwise, pointwise = raw[0], raw[1]
        bias = raw[2] if producer.use_bias else np.zeros(pointwise.shape[-1])
        np.multiply(pointwise, scale32, out=pointwise)
        return [depthwise, pointwise, (bias.astype(np.float64) * scale + shift).astype(np.float32)]
    kernel = raw[0]
    bias = raw[1] if producer.use_bias else np.zeros(scale.shape[0])
    bias = (bias.astype(np.float64) * scale + shift).astype(np.float32)
    if isinstance(producer, DepthwiseConv2D):
        kh, kw, c, m = kernel.shape
        flat = kernel.reshape(kh, kw, c * m)
        np.multiply(flat, scale32, out=flat)
    else:
        np.multiply(kernel, scale32, out=kernel)
    return [kernel, bias]
