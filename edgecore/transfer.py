"""edgecore.transfer: give a loaded model a new classification head, on the device.

    base = ec.load("mobilenet_v2_imagenet.h5")        # any Keras classifier or backbone
    model = ec.transfer.new_head(base, classes=10)   # frozen base + new Dense(10, softmax)
    model.compile(optimizer=ec.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy")
    model.fit(x, y, epochs=10)
    model.save("mine.h5")                           # keras.models.load_model opens it

This is the Keras transfer-learning recipe (keep the base up to its pooled features,
freeze it, add a Dense softmax head) done without Keras: the model's config is rewritten
in Keras 3 form (the layers the attach point depends on, marked trainable=False, then an
optional GlobalAveragePooling2D and Dropout and the new Dense), and the result is a Model
like any loaded one.  Its frozen weights still stream from the original file (no second
copy); only the new head's are held in memory until it trains.  The head is initialised
as Keras initialises Dense: Glorot-uniform kernel, zero bias.
"""
import copy

import numpy as np

from .errors import ShapeError
from .layers.activations import SOFTMAX
from .layers.core import Dense
from .layers.model import walk_layers


def new_head(model, classes, at=None, activation="softmax", dropout=0.0, freeze_base=True,
             name="head", seed=None, memory_budget=None):
    """A new model: `model` up to `at` (default: the input of its final Dense, i.e. the
    classifier is replaced; a headless backbone gets the head on its output), frozen unless
    freeze_base=False, then GlobalAveragePooling2D if the features are still a feature map,
    Dropout(dropout) if dropout > 0, and Dense(classes, activation) named `name`."""
    from .formats.config import parse_model_config
    from .formats.keras3_config import KERAS_VERSION, keras3_model_config
    from .formats.save_hdf5 import _raw_model_config
    from .graph.graph import build_graph
    from .layers.registry import layer_factory
    from .loader import LoadContext, record_weight_shapes
    from .model import assemble

    if int(classes) < 1:
        raise ValueError(f"classes must be a positive number, got {classes!r}")
    config, _ = keras3_model_config(model, _raw_model_config(model))
    if config["class_name"] == "Sequential":
        config = _sequential_as_functional(config, model)
    layers = config["config"]["layers"]
    source, features = _attach_point(model, at)
    keep = _needed_layers(layers, source[0])
    kept = [entry for entry in layers if entry["name"] in keep]
    if freeze_base:
        for entry in kept:
            if entry["class_name"] != "InputLayer":
                entry["config"]["trainable"] = False
    taken = {entry["name"] for entry in kept}
    previous, shape = source, (None,) + tuple(features)
    if len(features) == 3:
        previous, shape = _append(kept, taken, "GlobalAveragePooling2D", "global_average_pooling2d",
                                  {"data_format": "channels_last", "keepdims": False},
                                  previous, shape, (None, features[-1]))
    elif len(features) != 1:
        raise ShapeError(f"cannot attach a Dense head to features of shape {shape}",
                         path=model.path)
    if dropout:
        previous, shape = _append(kept, taken, "Dropout", "head_dropout",
                                  {"rate": float(dropout), "seed": None, "noise_shape": None},
                                  previous, shape, shape)
    head_name = _unique(name, taken)
    _append(kept, taken, "Dense", head_name, _dense_config(classes, activation),
            previous, shape, (None, int(classes)))
    config["config"]["layers"] = kept
    config["config"]["output_layers"] = [head_name, 0, 0]
    config["config"]["input_layers"] = [key for key in _as_list(config["config"]["input_layers"])
                                        if key[0] in keep]
    config["config"]["trainable"] = True

    path = model.path
    spec = parse_model_config(config, 3, path)
    ctx = LoadContext(path, 3, KERAS_VERSION, "derived:" + model.ctx.flavour, config)
    graph = build_graph(spec, ctx, layer_factory(ctx))
    record_weight_shapes(graph, ctx)
    head = graph.layers[-1]
    kernel = _glorot_uniform(head.var_shapes[0], seed)
    memory = {head: [kernel, np.zeros(int(classes), np.float32)]}
    ctx.store = _derived_storage(model, graph, memory)
    with ctx.store.open() as read:
        return assemble(graph, ctx, True, read,
                        memory_budget if memory_budget is not None else model.memory_budget)


def _attach_point(model, at):
    """((layer name, node, tensor) in Keras 3 naming, feature shape without batch)."""
    from .formats.keras3_config import keras3_name

    graph = model.graph
    if at is not None:
        for node in graph.nodes:
            if node.layer.name == at:
                tensor = node.outputs[0]
                return (keras3_name(at), tensor.key[1], tensor.key[2]), tensor.shape
        for tensor in graph.inputs:
            if tensor.key[0] == at:
                return (keras3_name(at), 0, 0), tensor.shape
        raise ValueError(f"no layer named {at!r} to attach the head to")
    output = graph.outputs[0]
    node = output.producer
    # Walk back over a trailing activation to the classifier Dense it belongs to.
    while node is not None and not isinstance(node.layer, Dense) and len(node.inputs) == 1 \
            and getattr(node.layer, "act", None) == SOFTMAX:
        node = node.inputs[0].producer
    if node is not None and isinstance(node.layer, Dense):
        tensor = node.inputs[0]  # replace the classifier
    else:
        tensor = output  # a headless backbone: the head goes on its output
    return (keras3_name(tensor.key[0]), tensor.key[1], tensor.key[2]), tensor.shape


def _needed_layers(layers, name):
    """Names of the layers the layer `name` depends on (itself included)."""
    by_name = {entry["name"]: entry for entry in layers}
    wanted, stack = set(), [name]
    while stack:
        current = stack.pop()
        if current in wanted or current not in by_name:
            continue
        wanted.add(current)
        for node in by_name[current].get("inbound_nodes", []):
            stack.extend(_history_names(node))
    return wanted


def _history_names(value):
    if isinstance(value, dict):
        if value.get("class_name") == "__keras_tensor__":
            return [value["config"]["keras_history"][0]]
        return [n for v in value.values() for n in _history_names(v)]
    if isinstance(value, list):
        return [n for v in value for n in _history_names(v)]
    return []


def _append(layers, taken, class_name, name, options, previous, in_shape, out_shape):
    name = _unique(name, taken)
    taken.add(name)
    config = {"name": name, "trainable": True, "dtype": dtype_policy_float32(), **options}
    tensor = {"class_name": "__keras_tensor__",
              "config": {"shape": list(in_shape), "dtype": "float32",
                         "keras_history": list(previous)}}
    layers.append({"class_name": class_name, "config": config, "name": name,
                   "inbound_nodes": [{"args": [tensor], "kwargs": {}}]})
    return (name, 0, 0), out_shape


def dtype_policy_float32():
    from .formats.keras3_config import dtype_policy

    return dtype_policy("float32")


def _dense_config(classes, activation):
    initializer = lambda cls, cfg: {"module": "keras.initializers", "class_name": cls,
                                    "config": cfg, "registered_name": None}
    return {"units": int(classes), "activation": activation or "linear", "use_bias": True,
            "kernel_initializer": initializer("GlorotUniform", {"seed": None}),
            "bias_initializer": initializer("Zeros", {}), "kernel_regularizer": None,
            "bias_regularizer": None, "activity_regularizer": None, "kernel_constraint": None,
            "bias_constraint": None, "quantization_config": None}


def _glorot_uniform(shape, seed):
    """keras.initializers.GlorotUniform for a Dense kernel (fan_in, fan_out)."""
    from .utils import _global_seed

    fan_in, fan_out = shape
    limit = np.sqrt(6.0 / (fan_in + fan_out))
    rng = np.random.default_rng(_global_seed() if seed is None else seed)
    return rng.uniform(-limit, limit, size=shape).astype(np.float32)


def _derived_storage(model, graph, memory):
    """Where the new model's weights are: the old model's storage, its layers matched by
    their path of names; the old model's trained values and the new head in memory."""
    from .formats.keras3_config import keras3_name
    from .loader import WeightStore

    old = {tuple(keras3_name(n) for n in scope + (layer.name,)): layer
           for scope, layer in walk_layers(model.graph)}
    mapping, held = {}, dict(memory)
    base = model.store
    live = base.live
    for scope, layer in walk_layers(graph):
        old_layer = old.get(scope + (layer.name,))
        if old_layer is None or layer in held:
            continue
        current = live.weights_of(old_layer) if live is not None else None
        if current is not None:  # live in the trainer: its current values, not the file's
            held[layer] = current
        elif old_layer in base.memory:
            held[layer] = base.memory[old_layer]
        else:
            mapping[layer] = base.mapping.get(old_layer, old_layer)
    return WeightStore(base.path, base.graph, mapping, held, fingerprint=base.fingerprint)


def _sequential_as_functional(config, model):
    """A Keras 3 Sequential config as the equivalent Functional one (new_head appends by
    wiring inbound nodes, which only Functional configs have)."""
    inner = copy.deepcopy(config["config"])
    layers = inner["layers"]
    if not layers or layers[0]["class_name"] != "InputLayer":
        shape = [None] + list(model.graph.inputs[0].shape)
        layers.insert(0, {"class_name": "InputLayer", "name": "input_layer", "inbound_nodes": [],
                          "config": {"batch_shape": shape, "dtype": "float32", "sparse": False,
                                     "ragged": False, "name": "input_layer"}})
    shapes = [[None] + list(model.graph.inputs[0].shape)]
    for node in model.graph.nodes:
        shapes.append([None] + list(node.outputs[0].shape))
    previous = layers[0]["name"]
    for entry, in_shape in zip(layers[1:], shapes):
        tensor = {"class_name": "__keras_tensor__",
                  "config": {"shape": in_shape, "dtype": "float32",
                             "keras_history": [previous, 0, 0]}}
        entry["inbound_nodes"] = [{"args": [tensor], "kwargs": {}}]
        previous = entry["name"]
    return {"class_name": "Functional",
            "config": {"name": inner.get("name", "model"), "trainable": True, "layers": layers,
                       "input_layers": [layers[0]["name"], 0, 0],
                       "output_layers": [previous, 0, 0]}}


def _as_list(keys):
    return [keys] if keys and isinstance(keys[0], str) else list(keys)


def _unique(name, taken):
    if name not in taken:
        return name
    i = 1
    while f"{name}_{i}" in taken:
        i += 1
    return f"{name}_{i}"
