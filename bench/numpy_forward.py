"""A plain NumPy forward pass (im2col + OpenBLAS matmul) over an edgecore model's graph.

The baseline edgecore's plan is timed against in bench/bench_models.py: the same layers,
the same Keras weights (from `layer.get_weights()`), float32 throughout, convolutions as
im2col + `np.matmul` and depthwise convolutions as a sum of shifted slices, i.e. what a
careful NumPy implementation does.  It covers the layers of the MobileNet family and
plain CNNs, which is what the benchmark runs; anything else raises NotImplementedError.
"""
import numpy as np

from edgecore.layers.base import same_padding


def _pads(layer, h, w):
    if layer.padding == "valid":
        return (0, 0), (0, 0)
    return (same_padding(h, layer.kernel_size[0], layer.strides[0], layer.dilation[0]),
            same_padding(w, layer.kernel_size[1], layer.strides[1], layer.dilation[1]))


def _windows(x, layer):
    """(N, OH, OW, KH, KW, C) strided view of the padded input."""
    n, h, w, c = x.shape
    (pt, pb), (pl, pr) = _pads(layer, h, w)
    xp = np.pad(x, ((0, 0), (pt, pb), (pl, pr), (0, 0)))
    (kh, kw), (sh, sw), (dh, dw) = layer.kernel_size, layer.strides, layer.dilation
    oh = (xp.shape[1] - (kh - 1) * dh - 1) // sh + 1
    ow = (xp.shape[2] - (kw - 1) * dw - 1) // sw + 1
    s = xp.strides
    return np.lib.stride_tricks.as_strided(
        xp, (n, oh, ow, kh, kw, c), (s[0], s[1] * sh, s[2] * sw, s[1] * dh, s[2] * dw, s[3]),
        writeable=False)


def _activation(x, act):
    from edgecore.layers.activations import CODES, SOFTMAX

    if act is None or act == SOFTMAX:
        if act == SOFTMAX:
            e = np.exp(x - x.max(axis=-1, keepdims=True))
            return e / e.sum(axis=-1, keepdims=True)
        return x
    if act.code == CODES["linear"]:
        return x
    if act.code == CODES["relu"] and act.alpha == 0 and act.threshold == 0:
        return np.clip(x, 0, act.max_value)
    raise NotImplementedError(f"activation code {act.code}")


class NumpyForward:
    """Prepared once (weights as NumPy arrays), then called like predict."""

    def __init__(self, model):
        from edgecore.graph.flatten import flatten

        self.flat = flatten(model.graph)  # unfused: BatchNormalization as Keras has it
        self.weights = {}
        for node in self.flat.nodes:
            layer = node.layer
            if layer not in self.weights:
                self.weights[layer] = [w.astype(np.float32) for w in layer.get_weights()]

    def __call__(self, *inputs):
        values = dict(zip(self.flat.inputs, (np.asarray(x, np.float32) for x in inputs)))
        for node in self.flat.nodes:
            args = [values[t] for t in node.inputs]
            values[node.outputs[0]] = self._run(node.layer, args)
        return [values[t] for t in self.flat.outputs]

    def _run(self, layer, args):
        kind = type(layer).__name__
        w = self.weights[layer]
        x = args[0]
        if kind == "Conv2D":
            cols = _windows(x, layer)
            n, oh, ow = cols.shape[:3]
            y = np.matmul(cols.reshape(n * oh * ow, -1), w[0].reshape(-1, w[0].shape[-1]))
            y = y.reshape(n, oh, ow, -1)
            return _activation(y + w[1] if layer.use_bias else y, layer.act)
        if kind == "DepthwiseConv2D":
            cols = _windows(x, layer)
            kernel = w[0][..., 0]  # depth_multiplier 1
            y = np.zeros(cols.shape[:3] + (cols.shape[-1],), np.float32)
            for i in range(kernel.shape[0]):
                for j in range(kernel.shape[1]):
                    y += cols[:, :, :, i, j, :] * kernel[i, j]
            return _activation(y + w[1] if layer.use_bias else y, layer.act)
        if kind == "BatchNormalization":
            gamma, beta, mean, var = w
            return (x - mean) / np.sqrt(var + layer.epsilon) * gamma + beta
        if kind == "ReLU" or kind == "Activation":
            return _activation(x, layer.act)
        if kind == "Dense":
            y = np.matmul(x, w[0])
            return _activation(y + w[1] if layer.use_bias else y, layer.act)
        if kind == "Add":
            return sum(args[1:], args[0])
        if kind == "GlobalAveragePooling2D":
            return x.mean(axis=(1, 2), keepdims=layer.keepdims)
        if kind == "ZeroPadding2D":
            t, b, l, r = layer.amounts
            return np.pad(x, ((0, 0), (t, b), (l, r), (0, 0)))
        if kind == "Rescaling":
            return x * layer.scale.astype(np.float32) + layer.offset.astype(np.float32)
        if kind in ("Identity", "Flatten", "Reshape"):
            return x.reshape((x.shape[0],) + tuple(d for d in layer.output_shapes(
                [x.shape[1:]], None)[0]))
        raise NotImplementedError(f"numpy reference has no {kind}")
