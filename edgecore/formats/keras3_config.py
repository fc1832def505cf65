"""The model config a Keras 3 legacy `.h5` carries, for a model loaded from any flavour.

`save_hdf5` writes what Keras 3.15 writes for `model.save("x.h5")` (KERAS-FORMATS.md).
A model loaded from a Keras 3 `.h5` keeps its config as it was, apart from the current
`trainable` flags; one from a `.keras` archive loses what only the archive format has
(`module`, `registered_name`, `build_config`, `compile_config`, `shared_object_id`); one
from a Keras 2 `.h5` is rewritten into the Keras 3 spelling, because Keras 3 refuses
about one Keras 2 file in six: DTypePolicy objects, `batch_shape`, K3 inbound nodes with
`__keras_tensor__` entries (from the parsed calls, already renumbered to 0-based), no
`groups` on DepthwiseConv2D/SeparableConv2D, BN axis int, LeakyReLU `negative_slope`,
`swish` -> `silu`, no `/` in names (`conv1/conv` -> `conv1_conv`).

Where Keras 3's own `.h5` would not load back, the entry is written as `.keras` writes
it, with its `module` (Keras 3 then deserialises it the `.keras` way):
* op nodes (`x + 3.0` in MobileNetV3: Keras 3 op nodes, Keras 2 TFOpLambda) get
  `module: keras.src.ops.numpy`; without it Keras 3 reads `Add` as the merge layer,
  which rejects the constant (why Keras 3.15 cannot reload its own MobileNetV3 .h5);
* a layer with an `axis` list of several axes (LayerNormalization [1, 2, 3]) gets
  `module: keras.layers`; the legacy path would silently drop that axis;
* keras.applications' own layers (ConvNeXt's LayerScale and StochasticDepth,
  InceptionResNetV2's CustomScaleLayer, the layer's `keras3_module`) get their module:
  Keras 3 cannot reload its own .h5 of them ("Unknown layer"), nor tf_keras's, which
  spells one `Custom>CustomScaleLayer`.

Keras 2 `hard_sigmoid` (clip(0.2x + 0.5, 0, 1), a different function from Keras 3's
under the same name) is rewritten as linear + Rescaling(0.2, 0.5) + ReLU(max_value=1):
two weightless layers after the layer, which its consumers now read from.  edgecore's
fused kernel rounds differently from the two steps (at most 1 ulp).

Non-goal: initializer and regularizer configs are kept as the file had them (Keras 3
reads the Keras 2 spellings); they do not affect what the model computes.
"""
import copy
import math

import numpy as np

from ..errors import ModelFormatError
from .config import MODEL_CLASSES, TensorKey

KERAS_VERSION = "3.15.1"  # the Keras whose .h5 layout and config spelling we write
_ENTRY_KEYS_DROPPED = ("module", "registered_name", "build_config", "compile_config")
# Keras 2 config keys Keras 3's constructors reject (KERAS-FORMATS.md).
_DROPPED_K2_KEYS = {
    "DepthwiseConv2D": ("groups",),
    "SeparableConv2D": ("groups", "kernel_initializer", "kernel_regularizer",
                        "kernel_constraint"),
    "SpatialDropout1D": ("trainable", "noise_shape"),
    "SpatialDropout2D": ("trainable", "noise_shape"),
    "SpatialDropout3D": ("trainable", "noise_shape"),
}
# tf.keras's BaseRandomLayer options (every random augmentation layer); Keras 3's layers
# reject them as unrecognized keyword arguments.
_DROPPED_K2_RANDOM_KEYS = ("rng_type", "force_generator")
# Layers whose Keras 3 config keeps dtype a plain string.
_STRING_DTYPE = ("InputLayer", "SpatialDropout1D", "SpatialDropout2D", "SpatialDropout3D")
# Keras 3 op nodes (keras.src.ops.numpy) and the Keras 2 TFOpLambda functions edgecore runs.
_OP_CLASSES = ("Add", "Subtract", "Multiply", "Divide", "TrueDivide", "Maximum", "Minimum")
_TF_FUNCTIONS = {
    "__operators__.add": "Add", "math.add": "Add",
    "__operators__.sub": "Subtract", "math.subtract": "Subtract",
    "__operators__.mul": "Multiply", "math.multiply": "Multiply",
    "__operators__.truediv": "TrueDivide", "math.truediv": "TrueDivide",
    "math.divide": "Divide", "math.maximum": "Maximum", "math.minimum": "Minimum",
}
# Options Keras 2 stores as float32 and writes as the nearest double (0.30000001192092896).
_FLOAT32_OPTIONS = {"LeakyReLU": ("negative_slope",), "ELU": ("alpha",),
                    "ReLU": ("max_value", "negative_slope", "threshold")}


def dtype_policy(name="float32"):
    return {"module": "keras", "class_name": "DTypePolicy", "config": {"name": name},
            "registered_name": None}


def keras3_name(name):
    """Keras 3 refuses `/` in names (Keras 2 DenseNet's `conv1/conv`)."""
    return name.replace("/", "_")


def _float32_value(x):
    """The shortest decimal of x as float32: Keras 2 writes LeakyReLU's 0.3 as
    0.30000001192092896, Keras 3 as 0.3; both are the same float32."""
    return float(str(np.float32(x)))


class SavedLayer:
    """A top-level layer of the written model: its weight group name and the edgecore
    layer (None for layers the conversion added; they hold no weights)."""

    __slots__ = ("name", "layer", "names")

    def __init__(self, name, layer, names):
        self.name = name
        self.layer = layer
        self.names = names  # id(edgecore layer) -> written name, for nested leaves


def keras3_model_config(model, raw_config):
    """({"class_name", "config"}, [SavedLayer in Keras's `model.layers` order])."""
    ctx = model.ctx
    converter = _Converter(ctx.keras_major, ctx.path)
    raw = copy.deepcopy(raw_config)
    class_name = "Functional" if raw.get("class_name") == "Model" else raw.get("class_name")
    entry = {"class_name": class_name, "config": raw.get("config")}
    if class_name not in MODEL_CLASSES or not isinstance(entry["config"], dict):
        raise ModelFormatError("the model's config is not a Functional or Sequential model",
                               path=ctx.path)
    top = converter.model(entry, model.graph, model.trainable)
    return {"class_name": class_name, "config": top.config}, top.saved


class _Scope:
    """What one model (top-level or nested) looks like after conversion."""

    def __init__(self, config, saved):
        self.config = config
        self.saved = saved


class _Converter:
    def __init__(self, keras_major, path):
        self.k2 = keras_major == 2
        self.path = path
        self.names = {}  # id(edgecore layer) -> written name (nested leaves included)

    # --- models ----------------------------------------------------------------------
    def model(self, entry, graph, trainable):
        config = entry["config"]
        sequential = entry["class_name"] == "Sequential"
        layers = {layer.name: layer for layer in graph.layers}
        shapes, ranks = _tensor_shapes(graph)
        raw_names = [e.get("name") or e["config"].get("name", "") for e in config["layers"]]
        taken = {keras3_name(n) for n in raw_names}
        if len(taken) != len(set(raw_names)):
            raise ModelFormatError("two layer names become the same once '/' is replaced by "
                                   "'_' (Keras 3 refuses '/' in names)", path=self.path,
                                   layer=config.get("name"))
        entries = config["layers"]
        if sequential and self.k2:
            entries = self._k2_sequential_input(entries, taken)
        out, saved, redirect = [], [], {}
        for raw_entry in entries:
            name = raw_entry.get("name") or raw_entry["config"].get("name")
            layer = layers.get(name)
            new_name = keras3_name(name)
            if layer is not None:
                self.names[id(layer)] = new_name
            for e in self.layer(raw_entry, layer, name, sequential, shapes, ranks, taken,
                                redirect):
                out.append(e)
                if (sequential and e["class_name"] == "InputLayer") or is_op_node(e):
                    continue  # not in Keras's model.layers
                owner = layer if e["config"].get("name") == new_name else None
                saved.append(SavedLayer(e["config"]["name"], owner, self.names))
        new_config = self._model_config(config, entry["class_name"], graph, trainable, out)
        if not sequential:
            _apply_redirects(new_config, out, redirect)
        return _Scope(new_config, saved)

    def _model_config(self, config, class_name, graph, trainable, layers):
        name = str(config.get("name", graph.name))
        if class_name == "Sequential":
            new = {"name": name, "trainable": bool(trainable),
                   "dtype": self.dtype(config.get("dtype")), "layers": layers}
            first = layers[0] if layers else None
            if first is not None and first["class_name"] == "InputLayer":
                new["build_input_shape"] = first["config"].get("batch_shape")
            elif "build_input_shape" in config:
                new["build_input_shape"] = config["build_input_shape"]
            return new
        new = {"name": name, "trainable": bool(trainable), "layers": layers}
        if self.k2:
            new["input_layers"] = self._io(graph.inputs, layers)
            new["output_layers"] = self._io(graph.outputs, layers)
        else:
            new["input_layers"] = config["input_layers"]
            new["output_layers"] = config["output_layers"]
        return new

    def _io(self, tensors, layers):
        """Keras 3 input_layers/output_layers: flat when one tensor; a nested Functional
        is referenced with node index + 1 there (Keras 3's get_tensor subtracts it)."""
        functional = {e["name"] for e in layers if e["class_name"] == "Functional"}
        keys = []
        for tensor in tensors:
            layer, node, index = tensor.key
            layer = keras3_name(layer)
            keys.append([layer, node + (1 if layer in functional else 0), index])
        return keys[0] if len(keys) == 1 else keys

    def _k2_sequential_input(self, entries, taken):
        """Keras 2 may put the input shape on the first layer (`batch_input_shape`); Keras 3
        writes an InputLayer first instead."""
        if not entries or entries[0]["class_name"] == "InputLayer":
            return entries
        shape = entries[0]["config"].get("batch_input_shape")
        if shape is None:
            return entries
        name = _unique("input_layer", taken)
        dtype = entries[0]["config"].get("dtype")
        input_entry = {"class_name": "InputLayer", "config": {
            "batch_shape": shape, "dtype": dtype if isinstance(dtype, str) else "float32",
            "sparse": False, "ragged": False, "name": name, "optional": False}}
        return [input_entry] + list(entries)

    # --- layers ----------------------------------------------------------------------
    def layer(self, entry, layer, raw_name, sequential, shapes, ranks, taken, redirect):
        """The Keras 3 entries replacing one layer entry (usually just one)."""
        name = keras3_name(raw_name)
        module = entry.get("module")
        for key in _ENTRY_KEYS_DROPPED:
            entry.pop(key, None)
        class_name = "Functional" if entry["class_name"] == "Model" else entry["class_name"]
        entry["class_name"] = class_name
        if class_name in MODEL_CLASSES:
            if layer is None or getattr(layer, "graph", None) is None:
                raise ModelFormatError("nested model was never built", path=self.path,
                                       layer=name, layer_class=class_name)
            entry["config"] = self.model(entry, layer.graph, layer.trainable).config
        else:
            entry["config"] = self.layer_config(class_name, entry["config"], layer, ranks)
        entry["config"]["name"] = name
        if not sequential:
            entry["name"] = name
            entry["inbound_nodes"] = self.inbound(entry, layer, shapes)
        if class_name == "TFOpLambda":
            entry = self._tf_op_node(entry, name)
        if is_op_node(entry):
            return [_keras3_op_node(entry, module)]
        axis = entry["config"].get("axis")
        if isinstance(axis, list) and len(axis) > 1:
            entry = _with_module(entry)
        if getattr(layer, "keras3_module", None):
            entry["class_name"] = class_name.split(">")[-1]
            entry = _with_module(entry, layer.keras3_module, entry["class_name"])
        if self.k2 and _activation_of(entry) == "hard_sigmoid":
            out_shapes = [(shapes.get((raw_name, k, 0)) or (None,))[0]
                          for k in range(len(entry.get("inbound_nodes", [])))]
            out_shapes = [None if s is None else [None] + list(s) for s in out_shapes]
            return self._split_hard_sigmoid(entry, out_shapes, sequential, taken, redirect)
        return [entry]

    def layer_config(self, class_name, config, layer, ranks):
        if layer is not None and "trainable" in config:
            config["trainable"] = bool(layer.trainable)
        if class_name == "InputLayer":
            if "batch_input_shape" in config:
                config = _rename_key(config, "batch_input_shape", "batch_shape")
            if isinstance(config.get("dtype"), dict):
                config["dtype"] = (config["dtype"].get("config") or {}).get("name", "float32")
            return config
        _strip_shared_ids(config)
        if not self.k2:
            return config
        config.pop("batch_input_shape", None)
        for key in _DROPPED_K2_KEYS.get(class_name, ()) + _DROPPED_K2_RANDOM_KEYS:
            config.pop(key, None)
        if "dtype" in config and class_name not in _STRING_DTYPE:
            config["dtype"] = self.dtype(config["dtype"])
        if config.get("activation") == "swish":
            config["activation"] = "silu"
        rank = ranks.get(id(layer))
        if class_name == "BatchNormalization":
            config["axis"] = _k3_axis(config.get("axis", -1), rank, single=True)
            for key, value in (("synchronized", False), ("renorm", False),
                               ("renorm_clipping", None), ("renorm_momentum", 0.99)):
                config.setdefault(key, value)
        elif class_name == "LayerNormalization":
            config["axis"] = _k3_axis(config.get("axis", -1), rank, single=False)
            config = _insert_after(config, "scale", "rms_scaling", False)
        elif class_name == "LeakyReLU" and "alpha" in config:
            config = _rename_key(config, "alpha", "negative_slope")
        for key in _FLOAT32_OPTIONS.get(class_name, ()):
            if _is_number(config.get(key)):
                config[key] = _float32_value(config[key])
        if class_name == "Dense":
            if config.get("activity_regularizer") is None:
                config.pop("activity_regularizer", None)
            config.setdefault("quantization_config", None)
        elif class_name.startswith("SpatialDropout"):
            config.setdefault("data_format", "channels_last")
        return config

    def dtype(self, value):
        if isinstance(value, dict):  # a Keras 2 Policy object or already a DTypePolicy
            name = (value.get("config") or {}).get("name", "float32")
            return dtype_policy(name)
        return dtype_policy(value if isinstance(value, str) else "float32")

    # --- calls -----------------------------------------------------------------------
    def inbound(self, entry, layer, shapes):
        if not self.k2:
            return entry.get("inbound_nodes", [])
        if layer is None:
            return []
        nodes = []
        for call in layer.calls:
            kwargs = {k: v for k, v in call.kwargs.items()
                      if not (entry["class_name"] == "TFOpLambda" and k in ("y", "name"))}
            node = {"args": self._k3_value(call.args, shapes),
                    "kwargs": self._k3_value(kwargs, shapes)}
            if entry["class_name"] == "TFOpLambda":
                node["y"] = self._k3_value(call.kwargs.get("y"), shapes)
            nodes.append(node)
        return nodes

    def _k3_value(self, value, shapes):
        if isinstance(value, TensorKey):
            key = (value.layer, value.node, value.tensor)
            shape, dtype = shapes.get(key, (None, "float32"))
            return {"class_name": "__keras_tensor__", "config": {
                "shape": None if shape is None else [None] + list(shape), "dtype": dtype,
                "keras_history": [keras3_name(value.layer), value.node, value.tensor]}}
        if isinstance(value, list):
            return [self._k3_value(v, shapes) for v in value]
        if isinstance(value, dict):
            return {k: self._k3_value(v, shapes) for k, v in value.items()}
        return value

    def _tf_op_node(self, entry, name):
        """Keras 2 TFOpLambda -> the Keras 3 op node for the same arithmetic."""
        function = entry["config"].get("function")
        op = _TF_FUNCTIONS.get(function)
        if op is None:  # edgecore refused it at load already; defensive
            raise ModelFormatError(f"TensorFlow op {function!r} has no Keras 3 form",
                                   path=self.path, layer=name, layer_class="TFOpLambda")
        nodes = []
        for node in entry["inbound_nodes"]:
            x = node["args"][0] if node["args"] else None
            y = node.pop("y")
            if op == "Subtract" and _is_number(y):
                # x - c is x + (-c) exactly; edgecore reads an Add with a constant (what
                # MobileNetV3 uses), not yet a Subtract with one.
                op, y = "Add", -y
            nodes.append({"args": [x, y], "kwargs": {}})
        return {"class_name": op, "config": {"name": name}, "name": name,
                "inbound_nodes": nodes}

    def _split_hard_sigmoid(self, entry, shapes, sequential, taken, redirect):
        """Keras 2 hard_sigmoid(x) = clip(0.2x + 0.5, 0, 1) = ReLU(max 1)(Rescaling(0.2, 0.5)).
        shapes: the layer's output shape (with batch) per call, for the new calls."""
        name = entry["config"]["name"]
        entry["config"]["activation"] = "linear"
        trainable = entry["config"].get("trainable", True)
        affine_name = _unique(name + "_hard_sigmoid_affine", taken)
        clip_name = _unique(name + "_hard_sigmoid", taken)
        affine = {"class_name": "Rescaling", "config": {
            "name": affine_name, "trainable": trainable, "dtype": dtype_policy(),
            "scale": 0.2, "offset": 0.5}}
        clip = {"class_name": "ReLU", "config": {
            "name": clip_name, "trainable": trainable, "dtype": dtype_policy(),
            "max_value": 1.0, "negative_slope": 0.0, "threshold": 0.0}}
        if not sequential:
            affine.update(name=affine_name, inbound_nodes=[
                _one_tensor_node(name, k, shape) for k, shape in enumerate(shapes)])
            clip.update(name=clip_name, inbound_nodes=[
                _one_tensor_node(affine_name, k, shape) for k, shape in enumerate(shapes)])
            redirect[name] = (clip_name, affine_name)
        return [entry, affine, clip]


# --- helpers -------------------------------------------------------------------------
def _tensor_shapes(graph):
    """{(layer, node, tensor): (shape without batch, dtype)} for every tensor of the
    graph, and {id(layer): rank with batch of its first call's first input}."""
    shapes, ranks = {}, {}
    for tensor in graph.inputs:
        dtype = "float32"
        producer = tensor.producer
        if producer is not None and producer.layer.class_name == "InputLayer":
            raw = producer.layer.config.get("dtype")
            dtype = raw if isinstance(raw, str) else "float32"
        shapes[tensor.key] = (tensor.shape, dtype)
    for node in graph.nodes:
        for tensor in list(node.inputs) + list(node.outputs):
            shapes.setdefault(tensor.key, (tensor.shape, "float32"))
        if node.inputs:
            ranks.setdefault(id(node.layer), len(node.inputs[0].shape) + 1)
    return shapes, ranks


def _k3_axis(axis, rank, single):
    """Keras 2 normalises axes to positive lists ([3]); Keras 3 writes -1 for the last axis
    (BatchNormalization an int, LayerNormalization a list; several axes stay as they are)."""
    axes = axis if isinstance(axis, list) else [axis]
    if rank is not None and len(axes) == 1 and isinstance(axes[0], int):
        axes = [-1 if axes[0] % rank == rank - 1 else axes[0]]
    if single:
        return axes[0] if len(axes) == 1 else axes
    return axes


def _rename_key(config, old, new):
    return {(new if k == old else k): v for k, v in config.items()}


def _insert_after(config, after, key, value):
    if key in config:
        return config
    out = {}
    for k, v in config.items():
        out[k] = v
        if k == after:
            out[key] = value
    out.setdefault(key, value)
    return out


def _strip_shared_ids(value):
    """`.keras` marks objects shared between layers (the dtype policy) with
    shared_object_id; the .h5 config has no such key."""
    if isinstance(value, dict):
        value.pop("shared_object_id", None)
        for v in value.values():
            _strip_shared_ids(v)
    elif isinstance(value, list):
        for v in value:
            _strip_shared_ids(v)


def _unique(name, taken):
    candidate, i = name, 1
    while candidate in taken:
        candidate = f"{name}_{i}"
        i += 1
    taken.add(candidate)
    return candidate


def _activation_of(entry):
    activation = entry["config"].get("activation")
    return activation if isinstance(activation, str) else None


def is_op_node(entry):
    """A Keras 3 op node (keras.src.ops, an Operation but no Layer): config is its name."""
    return entry["class_name"] in _OP_CLASSES and "trainable" not in entry["config"]


def _is_tensor(value):
    return isinstance(value, dict) and value.get("class_name") == "__keras_tensor__"


def _is_number(value):
    return (isinstance(value, (int, float)) and not isinstance(value, bool)
            and math.isfinite(value))


def _one_tensor_node(layer, node, shape):
    return {"args": [{"class_name": "__keras_tensor__", "config": {
        "shape": shape, "dtype": "float32", "keras_history": [layer, node, 0]}}],
        "kwargs": {}}


def _keras3_op_node(entry, module=None):
    """A Keras 3 op node as `.keras` spells it: with its module, so that Keras 3's .h5
    loader deserialises the op (`ops.add(x, 3.0)`) instead of the merge layer of the same
    class name, which rejects the constant (Keras 3.15 cannot reload its own MobileNetV3
    .h5 for this reason)."""
    if not (isinstance(module, str) and module.startswith("keras.src.ops")):
        module = "keras.src.ops.numpy"
    return {"module": module, "class_name": entry["class_name"],
            "config": {"name": entry["config"]["name"]},
            "registered_name": entry["class_name"], "name": entry["name"],
            "inbound_nodes": entry["inbound_nodes"]}


def _with_module(entry, module="keras.layers", registered_name=None):
    """The entry with `module`: Keras 3's .h5 loader then deserialises it as a `.keras`
    entry, skipping the legacy path that drops an `axis` list of several axes
    (LayerNormalization axis=[1, 2, 3] would come back as -1), and importing a class that
    is not in keras.layers from its module."""
    out = {"module": module, "class_name": entry["class_name"],
           "config": entry["config"], "registered_name": registered_name}
    out.update((k, v) for k, v in entry.items() if k not in ("class_name", "config"))
    return out


def _apply_redirects(config, layers, redirect):
    """Point the consumers of a split layer (hard_sigmoid) at the split's last layer.
    redirect: {layer: (its replacement, the added layer that consumes it)}."""
    if not redirect:
        return
    consumers_of_original = {added for _, added in redirect.values()}

    def walk(value):
        if _is_tensor(value):
            history = value["config"]["keras_history"]
            if history[0] in redirect:
                history[0] = redirect[history[0]][0]
        elif isinstance(value, list):
            for v in value:
                walk(v)
        elif isinstance(value, dict):
            for v in value.values():
                walk(v)

    for e in layers:
        if e["config"]["name"] not in consumers_of_original:
            walk(e.get("inbound_nodes", []))
    outputs = config["output_layers"]
    for item in ([outputs] if outputs and isinstance(outputs[0], str) else outputs):
        if item[0] in redirect:
            item[0] = redirect[item[0]][0]
