"""Parse a Keras model config (Keras 2 or 3 flavour) into one neutral structure.

Keras 2 and Keras 3 describe the same graph differently (see shared KERAS-FORMATS.md):
inbound nodes are lists in K2 and {"args", "kwargs"} dicts in K3; K2 numbers the calls of a
nested model built on its own Input from 1; K2 `input_layers` is always a list of triples.
This module removes those differences and nothing else: layer-specific config keys are
interpreted by the layer families (edgecore/layers), which know both spellings.

Non-goal: validating layer options (the layer families do that, with the layer's name).
"""
from collections import Counter
from dataclasses import dataclass, field

from ..errors import ModelFormatError


@dataclass(frozen=True)
class TensorKey:
    """Output `tensor` of call `node` of layer `layer` (Keras's keras_history)."""

    layer: str
    node: int
    tensor: int


@dataclass
class CallSpec:
    """One call of a layer: positional args (TensorKey, list of TensorKey, or constants)."""

    args: list
    kwargs: dict = field(default_factory=dict)

    def tensors(self):
        """Every TensorKey in args and kwargs, in order (merge layers take a list)."""
        found = []

        def walk(value):
            if isinstance(value, TensorKey):
                found.append(value)
            elif isinstance(value, (list, tuple)):
                for item in value:
                    walk(item)
            elif isinstance(value, dict):
                for item in value.values():
                    walk(item)

        walk(self.args)
        walk(self.kwargs)
        return found


@dataclass
class LayerSpec:
    class_name: str
    name: str
    config: dict
    module: object = None
    calls: list = field(default_factory=list)
    submodel: object = None  # ModelSpec when the layer is itself a model


@dataclass
class ModelSpec:
    kind: str  # "functional" or "sequential"
    name: str
    trainable: bool
    layers: list
    inputs: list  # TensorKey (functional); sequential: [] (the chain starts at layers[0])
    outputs: list
    input_shape: object = None  # sequential only: batch shape from InputLayer/batch_input_shape


MODEL_CLASSES = ("Functional", "Model", "Sequential")
# Models nested in models: Keras applications and transfer models nest 2 deep.  The limit
# keeps the recursive parse/build/flatten far from Python's recursion limit.
MAX_MODEL_DEPTH = 16
# Layers in a model, nested ones included: the largest keras.applications nets have ~1000;
# a config listing 10^5 or more is hostile, and would make the graph passes crawl.
MAX_LAYERS = 20000
# What a config value of the wrong type or size raises on its way through int(), len(),
# indexing: int(1e999) is an OverflowError, int("x") a ValueError, None[0] a TypeError.
CONFIG_ERRORS = (KeyError, IndexError, TypeError, ValueError, AttributeError, ArithmeticError)


def parse_model_config(model_config, keras_major, path):
    """model_config: the {"class_name", "config"} dict from the file."""
    try:
        return _parse_model(model_config, keras_major, path)
    except ModelFormatError:
        raise
    except RecursionError:
        raise ModelFormatError("model config nested too deeply", path=path) from None
    except CONFIG_ERRORS as exc:
        raise ModelFormatError(f"malformed model config ({type(exc).__name__}: {exc})",
                               path=path) from None


def _require(cond, reason, path, layer=None, layer_class=None):
    if not cond:
        raise ModelFormatError(reason, path=path, layer=layer, layer_class=layer_class)


def _parse_model(model_config, keras_major, path, depth=0, counted=None):
    _require(isinstance(model_config, dict), "model config is not a JSON object", path)
    class_name = model_config.get("class_name")
    config = model_config.get("config")
    _require(class_name in MODEL_CLASSES,
             f"top-level object is a {class_name!r}, not a Keras Functional or Sequential model",
             path)
    _require(isinstance(config, dict), "model config has no 'config' object", path)
    layers_cfg = config.get("layers")
    _require(isinstance(layers_cfg, list), "model config has no 'layers' list", path,
             config.get("name"), class_name)
    _require(depth <= MAX_MODEL_DEPTH, f"models nested more than {MAX_MODEL_DEPTH} deep", path,
             config.get("name"), class_name)
    counted = [0] if counted is None else counted  # layers so far, across nesting levels
    counted[0] += len(layers_cfg)
    _require(counted[0] <= MAX_LAYERS, f"more than {MAX_LAYERS} layers", path,
             config.get("name"), class_name)
    layers = [_parse_layer(entry, keras_major, path, depth, counted) for entry in layers_cfg]
    duplicate = {n for n, count in Counter(layer.name for layer in layers).items() if count > 1}
    _require(not duplicate, f"duplicate layer names {sorted(duplicate)}", path,
             config.get("name"), class_name)
    name = str(config.get("name", "model"))
    trainable = bool(config.get("trainable", True))
    if class_name == "Sequential":
        return _sequential(name, trainable, layers, keras_major, path)
    inputs = _io_keys(config.get("input_layers"), path, name)
    outputs = _io_keys(config.get("output_layers"), path, name)
    if keras_major == 2:
        outputs = _renumber_keras2_nested_calls(layers, outputs, path)
    else:
        # Keras 3 writes a nested Functional that is itself a model output with its node
        # index + 1 in output_layers (Model(inp, base(inp))), though its call is node 0.
        functional = {layer.name for layer in layers if layer.submodel is not None
                      and layer.class_name in ("Functional", "Model")}
        outputs = [TensorKey(k.layer, k.node - 1, k.tensor) if k.layer in functional
                   and k.node > 0 else k for k in outputs]
    return ModelSpec("functional", name, trainable, layers, inputs, outputs)


def _sequential(name, trainable, layers, keras_major, path):
    input_shape = None
    if layers and layers[0].class_name == "InputLayer":
        input_shape = _batch_shape(layers[0], path)
        layers = layers[1:]
    elif layers:
        # Keras 2 (and some Keras 3 saves) put the input shape on the first layer.
        input_shape = _batch_shape(layers[0], path)
    _require(layers, "Sequential model without layers", path, name, "Sequential")
    return ModelSpec("sequential", name, trainable, layers, [], [], input_shape)


def _batch_shape(layer, path):
    shape = layer.config.get("batch_shape", layer.config.get("batch_input_shape"))
    if shape is None:
        return None
    _require(isinstance(shape, list) and len(shape) >= 2
             and all(d is None or (isinstance(d, int) and not isinstance(d, bool)) for d in shape),
             f"input shape {shape!r} is not [batch, ...features] of ints", path, layer.name,
             layer.class_name)
    return tuple(shape)


def _parse_layer(entry, keras_major, path, depth, counted):
    _require(isinstance(entry, dict), "layer entry is not a JSON object", path)
    class_name = entry.get("class_name")
    config = entry.get("config")
    _require(isinstance(class_name, str), "layer entry without a class_name", path)
    _require(isinstance(config, dict), "layer entry without a config object", path,
             entry.get("name"), class_name)
    name = entry.get("name", config.get("name"))
    _require(isinstance(name, str) and name, "layer without a name", path, None, class_name)
    layer = LayerSpec(class_name, name, config, entry.get("module"))
    if class_name in MODEL_CLASSES:
        layer.submodel = _parse_model({"class_name": class_name, "config": config},
                                      keras_major, path, depth + 1, counted)
    inbound = entry.get("inbound_nodes", [])
    _require(isinstance(inbound, list), "inbound_nodes is not a list", path, name, class_name)
    try:
        for node in inbound:
            layer.calls.append(_parse_call(node, keras_major, path, name, class_name))
    except CONFIG_ERRORS as exc:
        if isinstance(exc, ModelFormatError):
            raise
        raise ModelFormatError(f"malformed inbound node ({type(exc).__name__}: {exc})",
                               path=path, layer=name, layer_class=class_name) from None
    return layer


def _parse_call(node, keras_major, path, name, class_name):
    if isinstance(node, dict):  # Keras 3: {"args": [...], "kwargs": {...}}
        args = [_k3_value(a) for a in node.get("args", [])]
        kwargs = {k: _k3_value(v) for k, v in (node.get("kwargs") or {}).items()}
        return CallSpec(args, kwargs)
    # Keras 2: a list of [layer, node, tensor, kwargs] entries, one per input tensor; the
    # kwargs of the entries (TFOpLambda puts its constant operands there) are merged.
    _require(isinstance(node, list), "inbound node is neither a list nor an object", path,
             name, class_name)
    if node and isinstance(node[0], str):
        # TFOpLambda writes its single call as [layer, node, tensor, kwargs] unwrapped.
        node = [node]
    tensors, kwargs = [], {}
    for item in node:
        _require(isinstance(item, list) and len(item) >= 3,
                 f"inbound tensor {item!r} is not [layer, node, tensor, kwargs]", path, name,
                 class_name)
        tensors.append(TensorKey(str(item[0]), int(item[1]), int(item[2])))
        if len(item) > 3 and isinstance(item[3], dict):
            kwargs.update({k: _k2_value(v) for k, v in item[3].items()})
    args = [tensors[0]] if len(tensors) == 1 else [tensors]
    return CallSpec(args, kwargs)


def _k3_value(value):
    if isinstance(value, dict) and value.get("class_name") == "__keras_tensor__":
        history = value["config"]["keras_history"]
        return TensorKey(str(history[0]), int(history[1]), int(history[2]))
    if isinstance(value, list):
        return [_k3_value(v) for v in value]
    return value


def _k2_value(value):
    # Keras 2 serialises a tensor inside call kwargs as [layer, node, tensor].
    if (isinstance(value, list) and len(value) == 3 and isinstance(value[0], str)
            and isinstance(value[1], int) and isinstance(value[2], int)):
        return TensorKey(value[0], value[1], value[2])
    return value


def _io_keys(value, path, model_name):
    _require(isinstance(value, list) and value, "model has no input_layers/output_layers", path,
             model_name)
    if isinstance(value[0], str):  # Keras 3 flat [name, node, tensor] for a single tensor
        value = [value]
    keys = []
    for item in value:
        _require(isinstance(item, list) and len(item) == 3,
                 f"bad input/output entry {item!r}", path, model_name)
        keys.append(TensorKey(str(item[0]), int(item[1]), int(item[2])))
    return keys


def _keras2_skips_first_node(layer):
    """Keras 2 does not serialise node 0 of a nested model built on its own Input
    (tf_keras functional.py, _should_skip_first_node), so calls are numbered from 1."""
    sub = layer.submodel
    if sub is None:
        return False
    if sub.kind == "functional":
        return True
    return sub.input_shape is not None


def _renumber_keras2_nested_calls(layers, outputs, path):
    """Shift references to such nested models to Keras 3's 0-based numbering; returns
    the renumbered model outputs (the calls are renumbered in place)."""
    skip = {layer.name for layer in layers if _keras2_skips_first_node(layer)}
    if not skip:
        return outputs

    def renumber(value):
        if isinstance(value, TensorKey) and value.layer in skip:
            _require(value.node >= 1, f"reference to node 0 of nested model {value.layer!r}",
                     path, value.layer)
            return TensorKey(value.layer, value.node - 1, value.tensor)
        if isinstance(value, list):
            return [renumber(v) for v in value]
        if isinstance(value, dict):
            return {k: renumber(v) for k, v in value.items()}
        return value

    for layer in layers:
        for call in layer.calls:
            call.args = renumber(call.args)
            call.kwargs = renumber(call.kwargs)
    return renumber(outputs)
