"""A Functional or Sequential model used as a layer (e.g. the MobileNetV2 base inside a
transfer-learning model).  It keeps its own Graph, like Keras, so `get_layer`, `summary`
and the `trainable` flag behave as they do there; the planner inlines it."""
from ..graph.graph import build_graph, infer_shapes
from .base import Layer


class ModelLayer(Layer):
    keras_classes = ("Functional", "Model", "Sequential")

    def __init__(self, spec, ctx, make_layer):
        self.spec = spec.submodel
        self.make_layer = make_layer
        self.graph = None
        super().__init__(spec, ctx)
        if self.spec.kind == "functional" or self.spec.input_shape is not None:
            self.graph = build_graph(self.spec, ctx, make_layer)
            for layer in self.graph.layers:
                layer.parent = self

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

    def output_shapes(self, input_shapes, call):
        if self.graph is None:  # a Sequential built by this first call
            self.graph = build_graph(self.spec, self.ctx, self.make_layer, input_shapes)
            for layer in self.graph.layers:
                layer.parent = self
        if len(input_shapes) != len(self.graph.inputs):
            raise self.shape_error(f"takes {len(self.graph.inputs)} input(s), "
                                   f"got {len(input_shapes)}")
        for declared, given in zip(self.graph.inputs, input_shapes):
            if len(declared.shape) != len(given) or any(
                    d is not None and g is not None and d != g
                    for d, g in zip(declared.shape, given)):
                raise self.shape_error(f"called on shape {(None,) + tuple(given)}, but it was "
                                       f"built for {(None,) + tuple(declared.shape)}")
        shapes = infer_shapes(self.graph, input_shapes)
        return [shapes[t] for t in self.graph.outputs]

    def lower(self, b, node):  # pragma: no cover - flatten() inlines nested models
        raise AssertionError("nested models are inlined before lowering")
