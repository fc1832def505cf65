"""`load(path)`: Keras file -> graph -> packed weights -> Model.

    formats/   read the config and index the weights (names only, no data yet)
    layers/    one object per Keras layer (the registry); graph/ wires their calls
    graph/     flatten nested models, fold BatchNorm and activations (rewrites.py)
    here       size the one weights buffer, then read each layer's raw weights, fold,
               pack into it, and drop the raw copy before reading the next layer

Peak memory while loading is the packed weights plus one layer's raw weights.  The file
is closed afterwards; `Layer.get_weights()` reopens it for layers whose stored form
(folded, packed) is not the Keras one.
"""
import contextlib
from dataclasses import dataclass

import numpy as np

from .errors import EdgecoreError, ModelFormatError
from .formats import open_model_file
from .formats.weights import MAX_TENSOR_ELEMENTS, WeightSlots
from .graph.graph import build_graph
from .graph.rewrites import (fold_batchnorm_into_conv, fold_zero_padding_into_conv,
                             folded_weights, fuse_activation_into_producer)
from .layers.model import ModelLayer, walk_layers
from .layers.registry import layer_factory
from .plan.arena import align, aligned_empty
from .plan.builder import Region


@dataclass
class LoadContext:
    path: str
    keras_major: int
    keras_version: str
    flavour: str
    model_config: dict = None  # the file's config as read; Model.save writes it back


def record_weight_shapes(graph, ctx):
    """Give every leaf layer `var_shapes`, from the input shapes of its first call."""
    seen = set()
    for node in graph.nodes:
        layer = node.layer
        if isinstance(layer, ModelLayer):
            record_weight_shapes(layer.graph, ctx)
            continue
        if layer in seen:
            continue
        seen.add(layer)
        try:
            shapes = [tuple(s) for s in layer.weight_shapes([t.shape for t in node.inputs])]
        except EdgecoreError:
            raise
        except (TypeError, ValueError, KeyError, IndexError, ArithmeticError) as exc:
            raise ModelFormatError(f"malformed config: {exc}", path=ctx.path, layer=layer.name,
                                   layer_class=layer.class_name) from None
        for shape in shapes:
            if any(d is None for d in shape):
                raise layer.shape_error(f"weight shape {shape} depends on an unknown input dimension")
            if int(np.prod(shape, dtype=np.int64)) > MAX_TENSOR_ELEMENTS:
                raise layer.format_error(f"weight shape {shape} is absurdly large")
        layer.var_shapes = shapes
    for layer in graph.layers:  # layers never called (InputLayer, unused) hold nothing
        if not isinstance(layer, ModelLayer) and not hasattr(layer, "var_shapes"):
            layer.var_shapes = [] if not layer.variables() else None


def weight_slots(scope, layer):
    return WeightSlots(scope + (layer.name,), layer.class_name, tuple(layer.variables()))


class WeightReader:
    """Reads one layer's Keras-order weights from an open model file."""

    def __init__(self, model_file, refs):
        self.file = model_file
        self.refs = refs

    def read(self, scope, layer, scratch=None):
        """The layer's weights; with scratch (a 1-D float32 array of at least the layer's
        element count) they are read into consecutive views of it, allocating nothing."""
        slots = weight_slots(scope, layer)
        refs = self.refs.get(slots.path, [])
        arrays, offset = [], 0
        for ref, shape in zip(refs, layer.var_shapes):
            out = None
            if scratch is not None:
                size = int(np.prod(shape, dtype=np.int64))
                out = scratch[offset:offset + size].reshape(shape)
                offset += size
            arrays.append(self.file.weights.read(ref, shape, slots, out))
        return arrays


def file_reader(model_file, graph):
    """read(layer, scratch=None) -> Keras-order weights from an open model file."""
    scopes = {layer: scope for scope, layer in walk_layers(graph)}
    reader = WeightReader(model_file, index_weights(model_file, graph))
    return lambda layer, scratch=None: reader.read(scopes[layer], layer, scratch)


def index_weights(model_file, graph):
    leaves = [weight_slots(scope, layer) for scope, layer in walk_layers(graph)
              if layer.variables() and layer.var_shapes is not None]
    return model_file.weights.index(leaves)


class StoredWeights:
    """Where a model's stored (not live) weights come from: a file, read under the layer
    names of `graph` (the model's own graph, or the one it was derived from, with
    `mapping` from the model's layers to that graph's), plus arrays held in memory for
    layers no file has (a head edgecore.transfer.new_head created)."""

    def __init__(self, path, graph, mapping=None, memory=None):
        self.path, self.graph = path, graph
        self.mapping = mapping or {}
        self.memory = memory or {}

    @contextlib.contextmanager
    def open(self):
        """read(layer, scratch=None) -> Keras-order weights, through one open file."""
        model_file = open_model_file(self.path)
        try:
            read = file_reader(model_file, self.graph)

            def read_layer(layer, scratch=None):
                if layer in self.memory:
                    return [np.array(a, dtype=np.float32) for a in self.memory[layer]]
                return read(self.mapping.get(layer, layer), scratch)

            yield read_layer
        finally:
            model_file.close()


def layout_weights(flat):
    """Give every layer of the flat graph its Regions in the weights buffer (sizes come
    from the config alone); returns (layers in order, total floats).  No data is read."""
    layers = list(dict.fromkeys(node.layer for node in flat.nodes))  # first-use order
    total = 0
    for layer in layers:
        layer.params = {}
        for key, n in layer.param_sizes(layer.var_shapes).items():
            layer.params[key] = Region(total, int(n))
            total += align(int(n))
    return layers, total


def fill_weights(layers, total, read):
    """Allocate the weights buffer once and pack every layer into it, one at a time;
    read(layer, scratch) gives a layer's Keras-order weights, read into `scratch` (one
    buffer sized for the largest layer, reused): loading makes two large allocations,
    this buffer and the scratch, instead of one per weight that the allocator may keep."""
    def raw_floats(layer):
        n = layer.elements(layer.var_shapes) if layer.variables() else 0
        bn = getattr(layer, "folded_bn", None)
        return n + (bn.elements(bn.var_shapes) if bn is not None else 0)

    weights = aligned_empty(total)
    scratch = aligned_empty(max((raw_floats(layer) for layer in layers), default=0))
    for layer in layers:
        if not layer.params:
            continue
        raw = read(layer, scratch) if layer.variables() else []
        if getattr(layer, "folded_bn", None) is not None:
            used = layer.elements(layer.var_shapes)
            raw = folded_weights(layer, raw, read(layer.folded_bn, scratch[used:]))
        views = {key: weights[r.offset:r.offset + r.size] for key, r in layer.params.items()}
        layer.pack(raw, views)
        del raw
    return weights


def load_graph(path):
    """(model file, ctx, graph); the caller must close the model file."""
    model_file = open_model_file(path)
    try:
        ctx = LoadContext(path, model_file.keras_major, model_file.keras_version,
                          model_file.flavour, model_file.model_config)
        graph = build_graph(model_file.spec, ctx, layer_factory(ctx))
        record_weight_shapes(graph, ctx)
        return model_file, ctx, graph
    except Exception:
        model_file.close()
        raise


INFERENCE_REWRITES = (fold_zero_padding_into_conv, fold_batchnorm_into_conv,
                      fuse_activation_into_producer)
