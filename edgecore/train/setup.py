"""What `compile` decides once: which layers train, which tensors need gradients, and
where the frozen prefix ends.

Keras's rule for the `trainable` flag: a layer's variables train only if it and every
model around it are trainable; BatchNormalization's moving statistics never train, but a
BatchNormalization whose own flag is set runs on batch statistics in fit and updates them
(layers/normalization.py).

The flat graph splits in two:
  * the suffix: every call whose output depends on a trained variable (it needs a
    backward pass), plus every call downstream of what varies from step to step in
    Keras's fit: noise (an active Dropout) or batch statistics (such a
    BatchNormalization); the training plan runs it forward and backward each step;
  * the prefix: the rest, frozen and deterministic per sample; it only produces the
    suffix's inputs (the boundary tensors), so `fit` can compute it once per sample and
    cache the result (exact when the inputs are not augmented).
BatchNormalization and activations are folded into the convolution before them only
inside the prefix; in the suffix every layer keeps its own op for the backward pass.
"""
from dataclasses import dataclass

from ..errors import UnsupportedLayerError
from ..graph.flatten import FlatGraph, flatten
from ..graph.rewrites import (fold_batchnorm_into_conv, fold_zero_padding_into_conv,
                              fuse_activation_into_producer)
from ..layers.core import Identity


@dataclass
class TrainingSetup:
    flat: FlatGraph  # the whole model, rewritten for training
    prefix: FlatGraph  # graph inputs -> boundary tensors (inference only)
    suffix: FlatGraph  # boundary tensors -> model output (trained)
    trained: list  # layers whose variables the optimizer updates, in graph order
    live: list  # layers the suffix reads in Keras layout from the params buffer
    requires_grad: set  # tensors whose gradient the backward pass computes
    # The active augmentation layers the input flows through first, run on each batch
    # before the step (train/augment.py); identity in the plans.
    input_augmentation: list = None

    @property
    def boundary(self):
        return self.suffix.inputs

    @property
    def cacheable(self):
        """The prefix does real work and is deterministic: its outputs can be cached."""
        return bool(self.prefix.nodes)

    def packed_nodes(self):
        """The calls that read the packed weights buffer: the prefix, and suffix calls
        of layers that are not live."""
        live = set(self.live)
        return self.prefix.nodes + [n for n in self.suffix.nodes if n.layer not in live]


def analyze(graph, model_trainable, path=None):
    flat = flatten(graph)
    if len(flat.outputs) != 1:
        raise UnsupportedLayerError(f"training a model with {len(flat.outputs)} outputs "
                                    "(only single-output models train for now)", path=path)
    calls = {}
    for node in flat.nodes:
        calls[node.layer] = calls.get(node.layer, 0) + 1
    trains = {node: bool(model_trainable and node.trainable and node.layer.trainable_variables())
              for node in flat.nodes}
    for node, train in trains.items():
        if train and calls[node.layer] > 1:
            raise node.layer.unsupported("training a layer that is called more than once")
    from .augment import leading_augmentation

    augmenting = leading_augmentation(flat)
    _refuse_random_crop(flat, path)
    requires_grad, varying = set(), set()
    for node in flat.nodes:
        grad = trains[node] or any(t in requires_grad for t in node.inputs)
        vary = (isinstance(node.layer, Identity) and node.layer.active_in_training(node)
                and node not in augmenting
                or node.layer.batch_dependent(node)
                or any(t in varying for t in node.inputs))
        for t in node.outputs:
            if grad:
                requires_grad.add(t)
            if vary:
                varying.add(t)
    output = flat.outputs[0]
    if output not in requires_grad:
        raise ValueError("nothing to train: no trainable layer feeds the model's output "
                         "(every layer on the way is frozen)")
    in_suffix = {node for node in flat.nodes
                 if any(t in requires_grad or t in varying for t in node.outputs)}
    _refuse_untrainable(flat, in_suffix, trains, requires_grad, path)
    both_frozen = lambda producer, consumer: producer not in in_suffix and consumer not in in_suffix
    fold_zero_padding_into_conv(flat)
    fold_batchnorm_into_conv(flat, allow=both_frozen)
    fuse_activation_into_producer(flat, allow=both_frozen)
    suffix_nodes = [node for node in flat.nodes if node in in_suffix]
    prefix_nodes = [node for node in flat.nodes if node not in in_suffix]
    produced = {t for node in suffix_nodes for t in node.outputs}
    boundary = []
    for node in suffix_nodes:
        for t in node.inputs:
            if t not in produced and t not in boundary:
                boundary.append(t)
    prefix = FlatGraph(_needed(prefix_nodes, boundary), flat.inputs, boundary)
    suffix = FlatGraph(suffix_nodes, boundary, flat.outputs)
    trained = _unique(node.layer for node in suffix_nodes if trains[node])
    live = _unique(node.layer for node in suffix_nodes if node.layer.variables() and (
        trains[node] or node.layer.batch_dependent(node)
        or (node.layer.backward_reads_keras_layout
            and any(t in requires_grad for t in node.inputs))))
    return TrainingSetup(flat, prefix, suffix, trained, live, requires_grad,
                         [node.layer for node in augmenting])


def _refuse_random_crop(flat, path):
    from ..layers.augmentation import RandomCrop

    for node in flat.nodes:
        if isinstance(node.layer, RandomCrop) and not node.inference_only:
            try:
                node.layer.check_trainable(node)
            except UnsupportedLayerError as exc:
                raise exc.with_context(path=path)


def _refuse_untrainable(flat, in_suffix, trains, requires_grad, path):
    """Refuse at compile, naming the layer, any call the backward pass must cross (or
    train) for which edgecore has no backward, and any suffix call whose training-mode
    forward edgecore does not implement (layer.check_trainable)."""
    for node in flat.nodes:
        if node not in in_suffix:
            continue
        layer = node.layer
        crossed = trains[node] or any(t in requires_grad for t in node.inputs)
        try:
            if crossed and not layer.trains_in_edgecore():
                raise layer.unsupported(
                    f"{layer.class_name} is not trainable in edgecore (no backward pass); "
                    f"set trainable=False on it and on every layer before it, so no "
                    f"gradient has to cross it")
            layer.check_trainable(node)
        except UnsupportedLayerError as exc:
            raise exc.with_context(path=path)


def _needed(nodes, targets):
    """The calls among `nodes` that the targets depend on, in order."""
    wanted, keep = set(targets), []
    for node in reversed(nodes):
        if any(t in wanted for t in node.outputs):
            keep.append(node)
            wanted.update(node.inputs)
    return keep[::-1]


def _unique(layers):
    seen = []
    for layer in layers:
        if layer not in seen:
            seen.append(layer)
    return seen
