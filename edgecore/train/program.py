"""The training step (and the evaluation step) as one plan: suffix forward, loss, backward.

    boundary tensors + labels
      -> the suffix forward, lowered in training mode (Dropout active where Keras's fit
         would apply it; live layers read Keras-layout params and keep pre-activations)
      -> the loss op: per-sample losses and dL/d(logits) in one fused kernel
      -> the backward pass, calls in reverse order: each layer's lower_backward turns
         dL/d(output) into dL/d(inputs) (only for inputs that need it) and writes its
         parameter gradients into the grads buffer
Every tensor, forward or gradient, is placed in the one activation arena by the same
lifetime planner as inference, so a forward activation lives exactly until its backward
use.  A tensor consumed twice gets its gradient contributions summed: the first is kept
as is, later ones are added in place, copying first when the gradient tensor is shared
(an Add hands the same dy to both inputs).
"""
import contextlib

from ..errors import EdgecoreError
from ..layers.activations import SOFTMAX, Act, CODES
from ..layers.activations import Activation, Softmax
from ..plan.builder import PlanBuilder
from ..plan.planner import concrete_shapes, finish_plan

_SIGMOID = Act(CODES["sigmoid"])


def _logits(b, loss, node, output, path):
    """(logits tensor, node whose backward starts from dL/d(pre-activation) or None)."""
    if loss.kind == "mse":
        return output, None
    wanted = SOFTMAX if loss.kind in ("ce", "sparse_ce") else _SIGMOID
    layer = node.layer
    if isinstance(layer, (Activation, Softmax)):
        act = SOFTMAX if isinstance(layer, Softmax) and layer.axis in (-1,) else layer.act
        if act == wanted:
            return node.inputs[0], None  # the activation layer is skipped in backward
    elif node.activation == wanted and node in b.preact:
        return b.preact[node], node
    if loss.from_logits:
        return output, None
    raise ValueError(
        f"{loss.name} with from_logits=False needs the model output to come straight from a "
        f"{'softmax' if wanted == SOFTMAX else 'sigmoid'} activation (Keras then uses the "
        f"logits behind it); layer {layer.name!r} is not one. Use from_logits=True if its "
        f"output is logits.")


LOSS_OPS = {"sparse_ce": "sparse_softmax_cross_entropy", "ce": "softmax_cross_entropy",
            "bce": "sigmoid_binary_cross_entropy", "mse": "mean_squared_error"}


def label_shape(loss, output_shape):
    """Full shape of the labels a user passes (class indices for sparse)."""
    return output_shape[:-1] if loss.kind == "sparse_ce" else output_shape


def label_slots(loss, output_shape):
    """The arena buffer holding the labels: float32 targets, or for sparse int64 class
    indices, two float slots each (arena offsets are 64-byte aligned)."""
    if loss.kind == "sparse_ce":
        n = 1
        for d in output_shape[:-1]:
            n *= d
        return (2 * n,)
    return output_shape


def build_step_plan(setup, loss, boundary_shapes, trained, path=None, backward=True,
                    weights=None, live=None, nthreads=1):
    """The plan of one training step (backward=True) or one evaluation step; weights:
    the packed weights' regions, live: the trainer's LiveRegions; nthreads: the threads
    it runs with.

    Inputs: the boundary tensors, then the labels (label_slots).  Outputs: the
    per-sample losses, then the model output."""
    suffix = setup.suffix
    shapes = concrete_shapes(suffix, boundary_shapes, path)
    b = PlanBuilder(shapes, weights, live, training=backward, nthreads=nthreads)
    for node in suffix.nodes:
        b.node = node
        with _layer_context(node, path):
            node.layer.lower(b, node)
    output = suffix.outputs[0]
    out_node = output.producer
    logits, preact_node = _logits(b, loss, out_node, output, path)
    out_shape = b.shape(output)
    labels = b.temp(label_slots(loss, out_shape))
    rows = b.size(logits) // b.shape(logits)[-1]
    losses = b.temp((out_shape[0],))
    dlogits = b.temp(b.shape(logits))
    b.node = out_node
    b.op(LOSS_OPS[loss.kind], dlogits, logits, labels, y2=losses,
         ints=(rows, b.shape(logits)[-1]),
         floats=(loss.label_smoothing, 1.0 / out_shape[0]))
    if backward:
        _backward(b, setup, trained, logits, dlogits, preact_node, path)
    inputs = list(suffix.inputs) + [labels]
    plan = finish_plan(b, inputs, [losses, output],
                       [tuple(s) for s in boundary_shapes] + [b.shape(labels)])
    plan.dropout_rows = [i for i, (name, _) in enumerate(plan.op_names)
                         if name == "dropout_forward"]
    return plan


def _backward(b, setup, trained, logits, dlogits, preact_node, path):
    grads = {}  # tensor -> gradient tensor
    holders = {}  # root of a gradient tensor -> how many tensors use it as their gradient

    def hold(t, g):
        grads[t] = g
        holders[b.root(g)] = holders.get(b.root(g), 0) + 1

    def release(t):
        g = grads.pop(t, None)
        if g is not None:
            holders[b.root(g)] -= 1

    def accumulate(t, g):
        current = grads.get(t)
        if current is None:
            hold(t, g)
            return
        n = b.size(t)
        if holders[b.root(current)] > 1:  # shared: sum into a fresh buffer
            total = b.temp(b.shape(t))
            b.op("binary", total, current, g, ints=(0, 1, n, 1, 1))
            release(t)
            hold(t, total)
        else:
            b.op("binary", current, current, g, ints=(0, 1, n, 1, 1))

    hold(logits, dlogits)
    for node in reversed(setup.suffix.nodes):
        b.node = node
        preact = node is preact_node
        dy = dlogits if preact else grads.get(node.outputs[0])
        if dy is None:
            continue
        need = [t in setup.requires_grad for t in node.inputs]
        if any(need) or node.layer in trained:
            with _layer_context(node, path):
                dxs = node.layer.lower_backward(b, node, dy, need, dy_is_preact=preact)
            for t, dx, needed in zip(node.inputs, dxs, need):
                if needed and dx is not None:
                    accumulate(t, dx)
        for t in node.outputs:
            release(t)


@contextlib.contextmanager
def _layer_context(node, path):
    """Errors raised while lowering name the file and the layer."""
    try:
        yield
    except EdgecoreError as exc:
        raise exc.with_context(path=path, layer=node.layer.name,
                               layer_class=node.layer.class_name)
