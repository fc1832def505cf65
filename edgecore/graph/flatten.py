"""Inline nested models: the flat list of leaf-layer calls the planner lowers.

Each call of a nested model becomes a copy of its inner calls wired to the outer tensors
(weights stay shared: the copies point at the same Layer objects).  A flat node remembers
the chain of models it came from, so the trainable flag can be resolved the Keras way
(tf.keras: a layer trains only if it and every model around it are trainable; Keras 3:
its own flag, under the outermost model's).

A flat graph is made fresh by every `flatten` and owns what rewrites decide about it (a
fused activation, absorbed padding, a folded BatchNormalization): those live on its
FlatNodes, never on the shared Layer objects, so compiling again with other flags starts
from the layers as parsed.
"""
from ..layers.model import ModelLayer, nested_flags_gate
from .graph import Tensor


class FlatNode:
    __slots__ = ("layer", "inputs", "outputs", "call", "call_index", "scope", "activation",
                 "inference_only", "extra_pads", "folded_bn")

    def __init__(self, node, inputs, outputs, scope, inference_only=False):
        self.layer = node.layer
        self.inputs = inputs
        self.outputs = outputs
        self.call = node.call
        self.call_index = node.call_index
        self.scope = scope  # enclosing ModelLayers, outermost first
        # The activation this call applies; rewrites may fuse a following one in here.
        self.activation = getattr(node.layer, "act", None)
        # Whether Keras's fit runs this call in inference mode although it is training
        # (Dropout off, BatchNormalization on its moving statistics): see _training_false.
        self.inference_only = inference_only
        # (top, bottom, left, right) zero padding a rewrite moved into this convolution.
        self.extra_pads = None
        # The BatchNormalization layer a rewrite folded into this call's kernel and bias.
        self.folded_bn = None

    @property
    def trainable(self):
        """The layer's flag and, in tf.keras's rule, every enclosing model's (Keras 3: the
        layer's own; layers/model.nested_flags_gate).  The outermost model's flag is the
        caller's to check."""
        if not self.layer.trainable:
            return False
        return all(model.trainable for model in self.scope if nested_flags_gate(model))

    def __repr__(self):
        return f"<FlatNode {self.layer.class_name} {self.layer.name!r}>"


class FlatGraph:
    def __init__(self, nodes, inputs, outputs):
        self.nodes = nodes
        self.inputs = inputs
        self.outputs = outputs

    def consumers(self):
        """{tensor: [FlatNode]} for the current node list."""
        users = {}
        for node in self.nodes:
            for t in node.inputs:
                users.setdefault(t, []).append(node)
        return users


def flatten(graph):
    inputs = [Tensor(t.key, t.shape) for t in graph.inputs]
    nodes = []
    outputs = _inline(graph, dict(zip(graph.inputs, inputs)), (), nodes, False)
    return FlatGraph(nodes, inputs, outputs)


def _training_false(node):
    """A call recorded with training=False that Keras's fit honours.  tf.keras (Keras 2)
    honours it for the call and everything inside (the transfer recipe's
    `base(x, training=False)`); Keras 3.15's fit passes training=True to every call and
    overrides it (verified against Keras when writing the training fixtures), so for
    Keras 3 files it changes nothing."""
    return (node.call is not None and node.call.kwargs.get("training") is False
            and node.layer.ctx.keras_major == 2)


def _inline(graph, mapping, scope, nodes, inference_only):
    """Append graph's calls to nodes with inputs renamed by mapping; return its outputs."""
    for node in graph.nodes:
        inputs = [mapping[t] for t in node.inputs]
        frozen_mode = inference_only or _training_false(node)
        if isinstance(node.layer, ModelLayer):
            inner = node.layer.graph
            inner_outputs = _inline(inner, dict(zip(inner.inputs, inputs)),
                                    scope + (node.layer,), nodes, frozen_mode)
            for outer, inner_t in zip(node.outputs, inner_outputs):
                mapping[outer] = inner_t
            continue
        outputs = [Tensor(t.key, t.shape) for t in node.outputs]
        for old, new in zip(node.outputs, outputs):
            mapping[old] = new
        flat = FlatNode(node, inputs, outputs, scope, frozen_mode)
        for t in outputs:
            t.producer = flat
        nodes.append(flat)
    return [mapping[t] for t in graph.outputs]
