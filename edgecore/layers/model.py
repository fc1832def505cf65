"""A Functional or Sequential model used as a layer (e.g. the MobileNetV2 base inside a
transfer-learning model).  It keeps its own Graph, like Keras, so `get_layer`, `summary`
and the `trainable` flag behave as they do there.  graph/graph.py builds that inner graph
and evaluates its shapes; graph/flatten.py inlines it for planning."""
import numpy as np

from .base import Layer


class ModelLayer(Layer):
    keras_classes = ("Functional", "Model", "Sequential")

    def __init__(self, spec, ctx):
        self.spec = spec.submodel
        self.graph = None  # set by graph.build_graph (at its first call for a Sequential
        super().__init__(spec, ctx)  # built by that call)

    @property
    def trainable(self):
        return self._trainable

    @trainable.setter
    def trainable(self, value):
        """Keras's setter on a model sets the flag of every layer inside, at every depth
        (Keras 3 Layer.trainable and tf.keras alike); setting an inner layer afterwards
        changes only that layer."""
        self._trainable = bool(value)
        for layer in self.graph.layers if self.graph is not None else ():
            layer.trainable = value

    @property
    def layers(self):
        from .core import InputLayer

        return [layer for layer in self.graph.layers if not isinstance(layer, InputLayer)]

    def get_layer(self, name):
        for layer in self.graph.layers:
            if layer.name == name:
                return layer
        raise ValueError(f"no layer named {name!r} in {self.name!r}")

    def count_params(self):
        return sum(layer.count_params() for layer in self.graph.layers)

    def lower(self, b, node):  # pragma: no cover - flatten() inlines nested models
        raise AssertionError("nested models are inlined before lowering")


def walk_layers(graph, scope=()):
    """(scope, layer) for every leaf layer, depth first in config order; scope is the
    names of the enclosing models."""
    for layer in graph.layers:
        if isinstance(layer, ModelLayer):
            yield from walk_layers(layer.graph, scope + (layer.name,))
        else:
            yield scope, layer


def every_layer(graph):
    """Every layer at every depth, nested models included."""
    for layer in graph.layers:
        yield layer
        if isinstance(layer, ModelLayer):
            yield from every_layer(layer.graph)


def nested_flags_gate(layer):
    """Whether a nested model's own `trainable` flag gates the layers inside it.

    tf.keras (Keras 2) collects trainable weights model by model, so a frozen nested model
    freezes everything in it.  Keras 3 collects every variable of the model's layers and
    keeps those whose own flag is set (each variable's flag follows its layer's, and the
    model's setter sets every layer inside): an inner layer set trainable again under a
    frozen nested model trains.  Only the outermost model's flag gates in Keras 3.
    (Both verified against the frameworks: the trainable_rule fixture.)"""
    return layer.ctx.keras_major == 2


def weight_trainable_flags(layer, parent_trainable=True, top=True):
    """Per Keras-order weight of `layer` (a nested model: of every layer inside, in
    get_weights order), whether Keras counts it among trainable_weights.  parent_trainable:
    the flags gating from outside; top: `layer` is the model asked (its own flag gates),
    not a model nested in it."""
    if isinstance(layer, ModelLayer):
        gate = layer.trainable if top or nested_flags_gate(layer) else True
        trainable = parent_trainable and gate
        return [flag for inner in layer.graph.layers
                for flag in weight_trainable_flags(inner, trainable, top=False)]
    if not getattr(layer, "var_shapes", None):
        return []
    trainable = parent_trainable and layer.trainable
    frozen = set(layer.non_trainable_variables())
    return [trainable and name not in frozen for name, _ in layer.variables()]


def weight_shapes(layer):
    """Shapes of a layer's Keras-order weights (a nested model: every layer's)."""
    if isinstance(layer, ModelLayer):
        return [shape for inner in layer.graph.layers for shape in weight_shapes(inner)]
    return [tuple(shape) for shape in getattr(layer, "var_shapes", None) or []]


def weight_sizes(layer):
    """Element counts of a layer's Keras-order weights (a nested model: every layer's)."""
    if isinstance(layer, ModelLayer):
        return [n for inner in layer.graph.layers for n in weight_sizes(inner)]
    return [int(np.prod(shape, dtype=np.int64)) for shape in getattr(layer, "var_shapes", None) or []]


def param_counts(layer, parent_trainable, top=False):
    """(total, trainable) parameter counts of a layer as Keras counts them (top=False: as
    a layer of an enclosing model whose flags give parent_trainable)."""
    sizes = weight_sizes(layer)
    flags = weight_trainable_flags(layer, parent_trainable, top)
    return sum(sizes), sum(n for n, flag in zip(sizes, flags) if flag)
