"""The layer graph of a Keras model, as the config describes it.

A Graph holds the model's layers (config order, for summary/get_layer) and its calls
(nodes) in an order where every input is computed before use.  Nested models stay nested
here (a ModelLayer node holding its own Graph), exactly like Keras's object model;
graph/flatten.py inlines them for planning.

Functional configs list layers, not calls, and a shared layer's second call may consume a
tensor made by a layer listed after it, so calls are resolved by repeated passes until
every input is available (Keras's own loader does the same).
"""
from ..errors import EdgecoreError, ModelFormatError
from ..layers.core import InputLayer
from ..layers.model import ModelLayer
from ..formats.weights import MAX_TENSOR_ELEMENTS

MAX_DIM = 1 << 24


class Tensor:
    __slots__ = ("key", "shape", "producer")

    def __init__(self, key, shape, producer=None):
        self.key = key  # (layer name, node index, tensor index) within its graph
        self.shape = shape  # without the batch axis; None for unknown dims
        self.producer = producer

    def __repr__(self):
        return f"<Tensor {self.key} {self.shape}>"


class Node:
    __slots__ = ("layer", "inputs", "outputs", "call", "call_index")

    def __init__(self, layer, inputs, call, call_index):
        self.layer = layer
        self.inputs = inputs
        self.outputs = []
        self.call = call
        self.call_index = call_index


class Graph:
    def __init__(self, name, layers, nodes, inputs, outputs, kind):
        self.name = name
        self.layers = layers
        self.nodes = nodes
        self.inputs = inputs
        self.outputs = outputs
        self.kind = kind


def _check_shape(shape, layer, ctx):
    elements = 1
    for d in shape:
        if d is not None and not (isinstance(d, int) and 0 < d <= MAX_DIM):
            raise ModelFormatError(f"output dimension {d!r} of shape {shape} is out of range",
                                   path=ctx.path, layer=layer.name, layer_class=layer.class_name)
        elements *= d or 1
    # Every dimension in range can still multiply to a tensor no device holds (a 2^24 x
    # 2^24 input); the bound is the weights' one, so sizes stay inside 32-bit indexing.
    if elements > MAX_TENSOR_ELEMENTS:
        raise ModelFormatError(f"output shape {shape} has {elements} elements per sample, "
                               f"absurdly large", path=ctx.path, layer=layer.name,
                               layer_class=layer.class_name)


def output_shapes(layer, input_shapes, call, ctx, make_layer=None):
    """A layer's output shapes for one call; a nested model is evaluated through its
    graph (built here first when it is a Sequential with no input shape of its own)."""
    if not isinstance(layer, ModelLayer):
        return layer.output_shapes(input_shapes, call)
    if layer.graph is None:
        if make_layer is None:
            raise AssertionError("nested Sequential evaluated before it was built")
        _attach(layer, build_graph(layer.spec, ctx, make_layer, input_shapes))
    graph = layer.graph
    if len(input_shapes) != len(graph.inputs):
        raise layer.shape_error(f"takes {len(graph.inputs)} input(s), got {len(input_shapes)}")
    for declared, given in zip(graph.inputs, input_shapes):
        if len(declared.shape) != len(given) or any(
                d is not None and g is not None and d != g for d, g in zip(declared.shape, given)):
            raise layer.shape_error(f"called on shape {(None,) + tuple(given)}, but it was "
                                    f"built for {(None,) + tuple(declared.shape)}")
    shapes = infer_shapes(graph, input_shapes)
    return [shapes[t] for t in graph.outputs]


def _attach(model_layer, graph):
    model_layer.graph = graph


def apply_layer(layer, inputs, call, call_index, ctx, make_layer=None):
    """Create the node for one call of `layer` on `inputs`, with its output tensors."""
    node = Node(layer, inputs, call, call_index)
    try:
        shapes = output_shapes(layer, [t.shape for t in inputs], call, ctx, make_layer)
    except EdgecoreError:
        raise
    except (KeyError, TypeError, ValueError, IndexError, AttributeError, ArithmeticError) as exc:
        raise ModelFormatError(f"malformed config: {type(exc).__name__}: {exc}", path=ctx.path,
                               layer=layer.name, layer_class=layer.class_name) from None
    for i, shape in enumerate(shapes):
        shape = tuple(shape)
        _check_shape(shape, layer, ctx)
        node.outputs.append(Tensor((layer.name, call_index, i), shape, node))
    return node


def build_graph(spec, ctx, make_layer, input_shapes=None):
    """Graph of a ModelSpec.  make_layer(LayerSpec) -> Layer (the registry).

    input_shapes: for a nested model whose own config has no input shape (a Sequential
    built by its first call), the shapes it is called with.
    """
    layers = [make_layer(layer_spec) for layer_spec in spec.layers]
    for layer in layers:
        # A nested model built on its own inputs gets its graph now; a Sequential without
        # an input shape gets it at its first call (output_shapes above).
        if isinstance(layer, ModelLayer) and (layer.spec.kind == "functional"
                                              or layer.spec.input_shape is not None):
            _attach(layer, build_graph(layer.spec, ctx, make_layer))
    if spec.kind == "sequential":
        return _sequential_graph(spec, layers, ctx, input_shapes, make_layer)
    return _functional_graph(spec, layers, ctx, make_layer)


def _sequential_graph(spec, layers, ctx, input_shapes, make_layer):
    shape = spec.input_shape
    if shape is not None:
        shape = tuple(None if d is None else int(d) for d in shape)[1:]
    elif input_shapes:
        shape = tuple(input_shapes[0])
    else:
        raise ModelFormatError("Sequential model without an input shape (build it with "
                               "keras.Input(...) first, then save)", path=ctx.path,
                               layer=spec.name, layer_class="Sequential")
    _check_shape(shape, layers[0] if layers else None, ctx)
    current = Tensor((spec.name + "/input", 0, 0), shape)
    inputs = [current]
    nodes = []
    for layer in layers:
        if isinstance(layer, InputLayer):
            continue
        node = apply_layer(layer, [current], None, 0, ctx, make_layer)
        if len(node.outputs) != 1:
            raise ModelFormatError("a Sequential layer must have one output", path=ctx.path,
                                   layer=layer.name, layer_class=layer.class_name)
        nodes.append(node)
        current = node.outputs[0]
    return Graph(spec.name, layers, nodes, inputs, [current], "sequential")


def _functional_graph(spec, layers, ctx, make_layer):
    by_name = {layer.name: layer for layer in layers}
    tensors = {}
    nodes = []
    pending = []
    for layer in layers:
        if isinstance(layer, InputLayer):
            node = apply_layer(layer, [], None, 0, ctx)
            tensors[(layer.name, 0, 0)] = node.outputs[0]
            continue
        for index, call in enumerate(layer.calls):
            pending.append((layer, index, call))
    keys = [[(k.layer, k.node, k.tensor) for k in call.tensors()] for _, _, call in pending]
    applied = set()
    for i in _pass_order(pending, keys, tensors):
        layer, index, call = pending[i]
        if all(k in tensors for k in keys[i]):  # else a tensor index its producer lacks
            node = apply_layer(layer, [tensors[k] for k in keys[i]], call, index, ctx,
                               make_layer)
            nodes.append(node)
            for tensor in node.outputs:
                tensors[tensor.key] = tensor
            applied.add(i)
    if len(applied) < len(pending):
        layer, index, call = next(item for i, item in enumerate(pending) if i not in applied)
        missing = [k for k in call.tensors() if (k.layer, k.node, k.tensor) not in tensors]
        known = [k for k in missing if k.layer in by_name]
        reason = (f"call {index} consumes {missing[0]}, which no call in the model "
                  f"produces" + ("" if known else " (no layer of that name)"))
        raise ModelFormatError(reason, path=ctx.path, layer=layer.name,
                               layer_class=layer.class_name)
    inputs = [_lookup(tensors, key, ctx, spec.name, "input") for key in spec.inputs]
    outputs = [_lookup(tensors, key, ctx, spec.name, "output") for key in spec.outputs]
    _check_inputs(inputs, nodes, ctx, spec.name)
    return Graph(spec.name, layers, nodes, inputs, outputs, "functional")


def _check_inputs(inputs, nodes, ctx, model_name):
    """The model's inputs are exactly the InputLayer tensors its calls consume, each once
    (flatten and predict feed the calls from this list)."""
    def fail(reason):
        raise ModelFormatError(reason, path=ctx.path, layer=model_name)

    for tensor in inputs:
        if not isinstance(tensor.producer.layer, InputLayer):
            fail(f"model input {tensor.key} is the output of layer {tensor.key[0]!r}, "
                 f"not of an InputLayer")
    if len(set(inputs)) != len(inputs):
        fail(f"input_layers lists an input twice: {[t.key for t in inputs]}")
    unlisted = {t.key for node in nodes for t in node.inputs
                if isinstance(t.producer.layer, InputLayer) and t not in inputs}
    if unlisted:
        fail(f"InputLayer output(s) {sorted(unlisted)} are consumed but not in input_layers")


def _pass_order(pending, keys, available):
    """Indices of the pending calls that can run, in the order repeated passes over the
    config would run them: pass after pass in config order, a call running in the first
    pass where its inputs exist when it is reached.  So call i runs in pass
    max over its producers j of (pass(j) if j < i else pass(j) + 1), computed here in one
    topological sweep instead of one pass per level (a reversed 4000-layer chain took 14 s
    of passes).  Calls on a cycle, or consuming a layer/call that does not exist, are
    left out."""
    producer = {(layer.name, index): i for i, (layer, index, _) in enumerate(pending)}
    deps, users = [set() for _ in pending], [[] for _ in pending]
    blocked = set()
    for i, call_keys in enumerate(keys):
        for key in call_keys:
            if key not in available:
                j = producer.get(key[:2])
                if j is None:
                    blocked.add(i)
                else:
                    deps[i].add(j)
    for i, producers in enumerate(deps):
        for j in producers:
            users[j].append(i)
    waiting = [len(producers) for producers in deps]
    ready = [i for i in range(len(pending)) if not waiting[i] and i not in blocked]
    passes = {}
    while ready:
        i = ready.pop()
        passes[i] = max([1] + [passes[j] + (j > i) for j in deps[i]])
        for user in users[i]:
            waiting[user] -= 1
            if not waiting[user] and user not in blocked:
                ready.append(user)
    return sorted(passes, key=lambda i: (passes[i], i))


def _lookup(tensors, key, ctx, model_name, what):
    found = tensors.get((key.layer, key.node, key.tensor))
    if found is None:
        raise ModelFormatError(f"model {what} {key} is not produced by any layer call",
                               path=ctx.path, layer=model_name)
    return found


def infer_shapes(graph, input_shapes):
    """Shapes of every tensor when the graph's inputs have `input_shapes` (no batch axis).

    Returns {Tensor: shape}; nested models are evaluated through their own graphs.
    """
    shapes = {}
    if len(input_shapes) != len(graph.inputs):
        raise ValueError(f"{graph.name} takes {len(graph.inputs)} inputs, got {len(input_shapes)}")
    for tensor, shape in zip(graph.inputs, input_shapes):
        shapes[tensor] = tuple(shape)
    for node in graph.nodes:
        outs = output_shapes(node.layer, [shapes[t] for t in node.inputs], node.call, None)
        for tensor, shape in zip(node.outputs, outs):
            shapes[tensor] = tuple(shape)
    return shapes
