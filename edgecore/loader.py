"""`load(path)`: Keras file -> graph -> weight store; the model then packs its weights.

    formats/   read the config and index the weights (names only, no data yet)
    layers/    one object per Keras layer (the registry); graph/ wires their calls
    here       the LoadContext every layer of one model shares, the weight shapes from
               the config, and the WeightStore: where each layer's Keras-order values are
               (the file, arrays in memory, or the trainer's live params)

The model (model.py) flattens and rewrites the graph and packs the weights through
plan/weights.py, reading one layer at a time from the store.  The file is closed after
loading; `Layer.get_weights()` reopens it for layers whose stored form (folded, packed)
is not the Keras one.
"""
import contextlib
import os
import threading
from dataclasses import dataclass

import numpy as np

from .errors import EdgecoreError, ModelFormatError, ShapeError
from .formats import open_model_file
from .formats.weights import MAX_TENSOR_ELEMENTS, WeightSlots
from .graph.graph import build_graph
from .graph.rewrites import (fold_batchnorm_into_conv, fold_zero_padding_into_conv,
                             fuse_activation_into_producer)
from .layers.model import ModelLayer, walk_layers
from .layers.registry import layer_factory


@dataclass
class LoadContext:
    """What the layers of one model share: the file they came from, its Keras version and
    flavour, its config as read (Model.save writes it back), and the model's WeightStore
    (where Layer.get_weights finds the values)."""
    path: str
    keras_major: int
    keras_version: str
    flavour: str
    model_config: dict = None
    store: object = None


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


class WeightStore:
    """Where each layer's Keras-order values are.  Owned by one model (its layers reach
    it through their LoadContext); in the order it looks:

      live    the trainer of a compiled model: the layers training reads in Keras layout
      memory  arrays held for layers no file has (a head edgecore.transfer.new_head made)
              or whose values left the live set (trained, then frozen by a new compile)
      file    the model file, read under the layer names of `graph` (the model's own
              graph, or the one it was derived from, with `mapping` from the model's
              layers to that graph's)
    """

    def __init__(self, path, graph=None, mapping=None, memory=None, fingerprint=None):
        self.path, self.graph = path, graph
        # The file's identity when its values were taken as the model's (at load, or at
        # the save that wrote it): reading it after it changed would give another model.
        self.fingerprint = fingerprint if fingerprint is not None else file_fingerprint(path)
        self.mapping = mapping or {}
        self.memory = memory or {}
        self.live = None
        # The model's lock (its executor shares it): values are read while a training step
        # may be writing them.
        self.lock = threading.RLock()

    @contextlib.contextmanager
    def open(self):
        """read(layer, scratch=None) -> the stored (not live) Keras-order weights, through
        one open file (opened only if a layer needs it)."""
        opened = []

        def read_layer(layer, scratch=None):
            if layer in self.memory:
                return [np.array(a, dtype=np.float32) for a in self.memory[layer]]
            if not opened:
                self.check_unchanged()
                model_file = open_model_file(self.path)
                opened.append((model_file, file_reader(model_file, self.graph)))
            return opened[0][1](self.mapping.get(layer, layer), scratch)

        try:
            yield read_layer
        finally:
            for model_file, _ in opened:
                model_file.close()

    def check_unchanged(self):
        """ModelFormatError if the file is not the one the values were taken from."""
        try:
            now = file_fingerprint(self.path)
        except OSError:
            now = None
        if now != self.fingerprint:
            raise ModelFormatError(
                "the model file was replaced or modified after the model was loaded from "
                "it; its frozen weights are read from that file (to save, compile again or "
                "get_weights), so the model in memory can no longer be completed from it. "
                "Load the model again (or save it before changing the file)", path=self.path)

    def adopt(self, path, graph, mapping):
        """The model's values are now all in the file at `path` (a save just wrote them):
        read from it from now on, through `mapping` {model layer: that graph's layer}, and
        drop the copies held in memory.  Live layers stay with the trainer."""
        self.path, self.graph, self.mapping = path, graph, mapping
        self.fingerprint = file_fingerprint(path)
        self.memory = {}

    # Set by the model that owns the store: apply({layer: arrays}) writes new values into
    # the model's buffers (packed weights, the trainer's params).
    apply = None

    def set_weights(self, layer, weights):
        """Keras's layer.set_weights: validate the arrays against the layer's variables
        (a nested model: every layer inside, in get_weights order), then hold them as the
        layer's values and have the model re-pack what depends on them."""
        arrays = [np.asarray(w) for w in weights]
        leaves = list(_weighted_leaves(layer))
        expected = [tuple(shape) for leaf in leaves for shape in leaf.var_shapes]
        got = [tuple(a.shape) for a in arrays]
        if got != expected:
            raise ShapeError(f"set_weights expects {len(expected)} arrays of shapes {expected}, "
                             f"got {len(got)} of shapes {got}", path=self.path,
                             layer=layer.name, layer_class=layer.class_name)
        for a in arrays:
            if a.dtype.kind not in "fiub":
                raise ShapeError(f"set_weights got an array of dtype {a.dtype}; numbers "
                                 f"expected", path=self.path, layer=layer.name,
                                 layer_class=layer.class_name)
        values, start = {}, 0
        for leaf in leaves:
            count = len(leaf.var_shapes)
            values[leaf] = [np.array(a, dtype=np.float32) for a in arrays[start:start + count]]
            start += count
        with self.lock:
            self.memory.update(values)
            if self.apply is not None:
                self.apply(values)

    def weights_of(self, layer, read=None):
        """Keras-order weights of a layer (a nested model: of every layer inside)."""
        if read is None:
            with self.lock, self.open() as read:
                return self.weights_of(layer, read)
        if isinstance(layer, ModelLayer):
            weights = []
            for inner in layer.graph.layers:
                weights.extend(self.weights_of(inner, read))
            return weights
        if not layer.variables() or not getattr(layer, "var_shapes", None):
            return []
        if self.live is not None:
            live = self.live.weights_of(layer)
            if live is not None:
                return live
        return read(layer)


def _weighted_leaves(layer):
    """The leaf layers holding weights in `layer` (itself, or every one inside a nested
    model), in get_weights order."""
    if isinstance(layer, ModelLayer):
        for inner in layer.graph.layers:
            yield from _weighted_leaves(inner)
    elif layer.variables() and getattr(layer, "var_shapes", None):
        yield layer


def file_fingerprint(path):
    """What identifies a file's content without reading it: device, inode (a replacement
    by rename changes it), size and modification time in nanoseconds (an in-place write
    changes it)."""
    st = os.stat(path)
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


def load_graph(path):
    """(model file, ctx, graph); the caller must close the model file."""
    fingerprint = file_fingerprint(path) if os.path.exists(path) else None
    model_file = open_model_file(path)
    try:
        ctx = LoadContext(path, model_file.keras_major, model_file.keras_version,
                          model_file.flavour, model_file.model_config)
        graph = build_graph(model_file.spec, ctx, layer_factory(ctx))
        record_weight_shapes(graph, ctx)
        ctx.store = WeightStore(path, graph, fingerprint=fingerprint)
        return model_file, ctx, graph
    except Exception:
        model_file.close()
        raise


INFERENCE_REWRITES = (fold_zero_padding_into_conv, fold_batchnorm_into_conv,
                      fuse_activation_into_producer)
