"""Grayscale input for an RGB-pretrained model: `ec.load(path, input_channels=1)`.

A grey image replicated to C channels feeds the first convolution the same value g on
every channel, so after the per-channel preprocessing before it (Rescaling, Normalization:
p_c = a_c * g + b_c, composed in float64) the convolution computes

    sum_c W[.., c, :] * p_c = W'(g) + B(1),   W' = sum_c a_c W[.., c, :],  B = sum_c b_c W[.., c, :]

where B(1) is B applied to the in-bounds taps only: a padded tap (ZeroPadding2D after the
preprocessing, or padding="same") reads a preprocessed 0, not b_c.  So, exactly:

  * no padding after the preprocessing: B(1) is the same at every position and goes into
    the bias; the conv reads the 1-channel input directly (1/C of its multiply-adds);
  * padding, but b_c = a_c * k for one k (no offset, or one offset in input units): a
    scalar Rescaling(1, k) stays before the conv (g + k pads as p = 0 does), 1/C as well;
  * padding and offsets that differ per channel (ImageNet mean/std, as in the bundled
    MobileNetV2): the conv reads two channels, [g, 1], with kernel [W', B]: a padded tap
    is 0 in both, an in-bounds one adds B.  The ones come from Rescaling(scale=0,
    offset=1) and a Concatenate, Keras layers, so the saved file is a plain Keras model
    with a 1-channel input.  2/C of the multiply-adds.

The result is a derived model (as edgecore.transfer makes one): its Keras 3 config has a
1-channel input, the preprocessing layers are gone, the conv holds the folded kernel in
memory (trainable if it was), and everything else still streams from the original file.
Non-goals: a first convolution inside a nested model, grouped or depthwise first
convolutions, padding before the preprocessing.
"""
import copy

import numpy as np

from .errors import UnsupportedLayerError

AFFINE_CLASSES = ("Rescaling", "Normalization")


def _refuse(model, reason):
    raise UnsupportedLayerError(f"input_channels=1: {reason}", path=model.path)


def _consumers(layers, name):
    from .transfer import _history_names

    return [e for e in layers if name in _history_names(e.get("inbound_nodes", []))]


def _first_conv_chain(model, layers, input_name):
    """[preprocessing entries], [ZeroPadding2D entries], conv entry: the single path from
    the input to the first Conv2D."""
    affines, pads, name = [], [], input_name
    while True:
        users = _consumers(layers, name)
        if len(users) != 1 or len(users[0]["inbound_nodes"]) != 1:
            _refuse(model, f"the input must feed one layer at a time up to the first Conv2D; "
                           f"{name!r} feeds {[u['name'] for u in users]}")
        entry = users[0]
        cls = entry["class_name"]
        if cls in AFFINE_CLASSES:
            if pads:
                _refuse(model, f"{entry['name']!r} ({cls}) comes after zero padding")
            affines.append(entry)
        elif cls == "ZeroPadding2D":
            pads.append(entry)
        elif cls == "Conv2D":
            if entry["config"].get("groups", 1) != 1:
                _refuse(model, f"the first Conv2D {entry['name']!r} is grouped")
            return affines, pads, entry
        else:
            _refuse(model, f"{entry['name']!r} ({cls}) comes between the input and the first "
                           f"Conv2D; only Rescaling, Normalization and ZeroPadding2D may")
        name = entry["name"]


def _affine(model, entries, channels, get):
    """(a, b) float64 per channel: the composed preprocessing p = a * x + b."""
    a, b = np.ones(channels), np.zeros(channels)
    by_name = {layer.name: layer for layer in model.layers}
    for entry in entries:
        layer = by_name[entry["name"]]
        if entry["class_name"] == "Rescaling":
            s, t = layer.scale, layer.offset
        else:
            from .layers.preprocessing import KERAS_EPSILON

            if layer.constant is not None:
                mean, variance = layer.constant
            else:
                mean, variance = (np.asarray(v, np.float64) for v in get(layer)[:2])
            mean = np.broadcast_to(np.asarray(mean, np.float64).ravel(), (channels,))
            variance = np.broadcast_to(np.asarray(variance, np.float64).ravel(), (channels,))
            std = np.maximum(np.sqrt(variance), KERAS_EPSILON)
            s, t = (std, mean) if layer.invert else (1.0 / std, -mean / std)
        s = np.broadcast_to(np.asarray(s, np.float64), (channels,))
        t = np.broadcast_to(np.asarray(t, np.float64), (channels,))
        a, b = a * s, b * s + t
    return a, b


def _common_offset(a, b):
    """k with b_c = a_c * k for every channel (to float64 round-off), else None."""
    if not np.any(b):
        return 0.0
    if np.any(a == 0):
        return None
    k = float(np.mean(b / a))
    return k if np.allclose(a * k, b, rtol=1e-12, atol=1e-12 * np.abs(b).max()) else None


def _rewire(entry, old_name, new_name):
    """Point entry's inbound reference from old_name to new_name (shape: 1 channel)."""
    def repoint(cfg):
        if cfg["keras_history"][0] == old_name:
            cfg["keras_history"] = [new_name, 0, 0]

    _each_keras_tensor(entry["inbound_nodes"], repoint)


def _set_channels(entry, channels):
    """The last dimension of every tensor entry reads."""
    def narrow(cfg):
        if cfg.get("shape"):
            cfg["shape"][-1] = channels

    _each_keras_tensor(entry["inbound_nodes"], narrow)


def _each_keras_tensor(value, visit):
    """visit(config) for every Keras 3 `__keras_tensor__` reference inside a config value."""
    if isinstance(value, dict):
        if value.get("class_name") == "__keras_tensor__":
            visit(value["config"])
            return
        for v in value.values():
            _each_keras_tensor(v, visit)
    elif isinstance(value, list):
        for v in value:
            _each_keras_tensor(v, visit)


def fold_input_channels(model, memory_budget=None, input_shape=None, num_threads=None):
    """A new Model taking 1-channel input whose outputs equal `model`'s on the grey image
    replicated to its C channels (see the module docstring)."""
    from .formats.config import parse_model_config
    from .formats.keras3_config import KERAS_VERSION, keras3_model_config
    from .formats.save_hdf5 import _raw_model_config
    from .graph.graph import build_graph
    from .layers.registry import layer_factory
    from .loader import LoadContext, record_weight_shapes
    from .model import assemble
    from .transfer import _append, _derived_storage, _sequential_as_functional

    if len(model.graph.inputs) != 1:
        _refuse(model, "the model has several inputs")
    config, _ = keras3_model_config(model, _raw_model_config(model))
    config = copy.deepcopy(config)
    if config["class_name"] == "Sequential":
        config = _sequential_as_functional(config, model)
    layers = config["config"]["layers"]
    input_entry = next(e for e in layers if e["class_name"] == "InputLayer")
    input_name = input_entry["name"]
    affines, pads, conv_entry = _first_conv_chain(model, layers, input_name)
    conv = next(layer for layer in model.layers if layer.name == conv_entry["name"])

    with model._weights_reader() as get:
        raw = [np.array(w, np.float64) for w in get(conv)]
        kernel = raw[0]
        channels = kernel.shape[2]
        a, b = _affine(model, affines, channels, get)
    declared = input_entry["config"].get("batch_shape") or input_entry["config"].get("batch_input_shape")
    if declared and declared[-1] not in (None, channels):
        _refuse(model, f"the input has {declared[-1]} channels, the conv reads {channels}")
    bias = raw[1] if conv.use_bias else np.zeros(kernel.shape[-1])
    folded = np.einsum("hwco,c->hwo", kernel, a)[:, :, None, :]
    offsets = np.einsum("hwco,c->hwo", kernel, b)[:, :, None, :]
    padded = bool(pads) or conv_entry["config"].get("padding") == "same"

    # Remove the preprocessing; the first kept layer reads `source` instead.
    removed = {e["name"] for e in affines}
    config["config"]["layers"] = layers = [e for e in layers if e["name"] not in removed]
    taken = {e["name"] for e in layers}
    first = pads[0] if pads else conv_entry
    last_removed = affines[-1]["name"] if affines else input_name
    input_entry["config"]["batch_shape"] = list(declared[:-1]) + [1] if declared else [None, None, None, 1]
    input_entry["config"].pop("batch_input_shape", None)
    source, conv_in = input_name, 1
    spatial = [None] * (len(input_entry["config"]["batch_shape"]) - 1)
    spatial[1:] = input_entry["config"]["batch_shape"][1:-1]
    extra = []
    if not padded:
        mode = "bias"
        bias = bias + offsets.sum(axis=(0, 1, 2))
        conv_entry["config"]["use_bias"] = True
        new_kernel = folded
    else:
        k = _common_offset(a, b)
        new_kernel = folded
        if k is not None:
            mode = "offset"
            if k != 0.0:
                (source, _, _), _ = _append(extra, taken, "Rescaling", "grayscale_offset",
                                            {"scale": 1.0, "offset": k}, (input_name, 0, 0),
                                            spatial + [1], None)
        else:
            mode = "ones"
            (ones, _, _), _ = _append(extra, taken, "Rescaling", "grayscale_ones",
                                      {"scale": 0.0, "offset": 1.0}, (input_name, 0, 0),
                                      spatial + [1], None)
            (source, _, _), _ = _append(extra, taken, "Concatenate", "grayscale_concat",
                                        {"axis": -1}, (input_name, 0, 0), spatial + [1], None)
            tensor = copy.deepcopy(extra[-1]["inbound_nodes"][0]["args"][0])
            tensor["config"]["keras_history"] = [ones, 0, 0]
            extra[-1]["inbound_nodes"][0]["args"] = [[extra[-1]["inbound_nodes"][0]["args"][0],
                                                      tensor]]
            new_kernel = np.concatenate([folded, offsets], axis=2)
            conv_in = 2
    _rewire(first, last_removed, source)
    for entry in pads + [conv_entry]:
        _set_channels(entry, conv_in)
    at = layers.index(input_entry) + 1
    layers[at:at] = extra
    new_weights = [new_kernel.astype(np.float32)]
    if conv_entry["config"]["use_bias"]:
        new_weights.append(bias.astype(np.float32))

    path = model.path
    spec = parse_model_config(config, 3, path)
    ctx = LoadContext(path, 3, KERAS_VERSION, "derived:" + model.ctx.flavour, config)
    graph = build_graph(spec, ctx, layer_factory(ctx))
    record_weight_shapes(graph, ctx)
    new_conv = next(layer for layer in graph.layers if layer.name == conv_entry["name"])
    ctx.store = _derived_storage(model, graph, {new_conv: new_weights})
    with ctx.store.open() as read:
        result = assemble(graph, ctx, config["config"].get("trainable", True), read,
                          memory_budget if memory_budget is not None else model.memory_budget,
                          input_shape, num_threads=num_threads or model.num_threads)
    result.grayscale_fold = mode  # "bias", "offset" or "ones" (see the module docstring)
    return result
