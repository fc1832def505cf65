"""compile re-derives every stage's state from the graph (issue: a frozen convolution with a
trainable BatchNormalization was folded at load and applied twice after compile).

For every rewrite the inference pipeline applies (BatchNormalization into Conv2D,
DepthwiseConv2D and Dense, ZeroPadding2D into a convolution, an activation into its
producer) and every freeze pattern of the pair (producer frozen and consumer trainable,
the reverse, both trainable; the head always trains), `predict` on the same input is the
same before compile, after it, and after a second compile with another pattern; and
`evaluate` against the model's own predictions is ~0.  Training against Keras for these
patterns, after a first compile with other flags, is in test_training_parity.py (the
train_fold_matrix fixture, recorded by Keras 3 and tf.keras).
"""
import numpy as np
import pytest

import edgecore as ec
from edgecore.layers.model import walk_layers
from fixtures import FIXTURES, inputs_outputs, reference

PATTERNS = {"producer_frozen": (False, True), "consumer_frozen": (True, False),
            "both_trainable": (True, True)}


def _fold_pairs(case):
    """{fold kind: (producer name, consumer name)}: every layer the inference rewrites
    absorbed (present without rewrites, gone with them), with its partner."""
    model = ec.load(FIXTURES / f"{case}.k3.h5")
    plain = ec.load(FIXTURES / f"{case}.k3.h5", _rewrites=())
    kept = {node.layer.name for node in model.flat.nodes}
    users = plain.flat.consumers()
    pairs = {}
    for node in plain.flat.nodes:
        if node.layer.name in kept:
            continue
        kind = type(node.layer).__name__
        if kind == "ZeroPadding2D":
            conv = users[node.outputs[0]][0]
            pairs.setdefault(f"pad_into_{type(conv.layer).__name__}",
                             (node.layer.name, conv.layer.name))
        else:  # BatchNormalization or an activation, into the layer before it (an
            producer = node.inputs[0].producer  # activation after a folded BN: the conv)
            while producer.layer.name not in kept:
                producer = producer.inputs[0].producer
            label = "bn" if kind == "BatchNormalization" else "act"
            pairs.setdefault(f"{label}_into_{type(producer.layer).__name__}",
                             (producer.layer.name, node.layer.name))
    return pairs


CASES = ["bn_after_conv_nobias", "bn_after_conv_bias", "bn_after_dense", "resnet_small",
         "mobilenet_v2"]


def _matrix():
    seen = set()
    for case in CASES:
        for kind, (producer, consumer) in sorted(_fold_pairs(case).items()):
            if kind in seen:
                continue
            seen.add(kind)
            for pattern in PATTERNS:
                yield pytest.param(case, producer, consumer, pattern,
                                   id=f"{kind}-{case}-{pattern}")


def _set_flags(model, producer, consumer, pattern):
    """Everything frozen but the last layer with weights and the pair per the pattern."""
    leaves = [layer for _, layer in walk_layers(model.graph)]
    for layer in leaves:
        layer.trainable = False
    for model_layer in model.layers:  # nested models stay trainable: the inner flags decide
        if hasattr(model_layer, "graph"):
            model_layer._trainable = True
    weighted = [layer for layer in leaves if layer.variables()]
    weighted[-1].trainable = True
    flags = dict(zip((producer, consumer), PATTERNS[pattern]))
    for layer in leaves:
        if layer.name in flags:
            layer.trainable = flags[layer.name]


def _close(a, b, ref):
    scale = max(1.0, float(np.abs(ref).max()))
    return float(np.abs(np.asarray(a) - np.asarray(b)).max()) <= 1e-5 * scale


@pytest.mark.parametrize("case,producer,consumer,pattern", list(_matrix()))
def test_compile_leaves_predict_unchanged(case, producer, consumer, pattern):
    xs, ys = inputs_outputs(reference(case, "k3.h5"))
    model = ec.load(FIXTURES / f"{case}.k3.h5")
    before = model.predict(xs[0])
    _set_flags(model, producer, consumer, pattern)
    model.compile(optimizer="sgd", loss="mse")
    assert _close(model.predict(xs[0]), before, ys[0]), "the first compile changed predict"
    assert model.evaluate(xs[0], before) <= 1e-9 * max(1.0, float(np.abs(before).max())) ** 2
    other = next(p for p in PATTERNS if p != pattern)
    _set_flags(model, producer, consumer, other)
    model.compile(optimizer="adam", loss="mse")
    assert _close(model.predict(xs[0]), before, ys[0]), "a second compile changed predict"


def test_every_fold_kind_is_in_the_matrix():
    kinds = {p.id.split("-")[0] for p in _matrix()}
    assert {"bn_into_Conv2D", "bn_into_DepthwiseConv2D", "bn_into_Dense", "pad_into_Conv2D",
            "act_into_Conv2D"} <= kinds, kinds


def test_frozen_convolutions_with_trainable_batchnorm_predict_as_loaded():
    # The reproduction: resnet_small with every non-BN layer frozen (BN-only
    # fine-tuning) moved predict by up to 44% of the output scale after compile.
    xs, ys = inputs_outputs(reference("resnet_small", "k3.h5"))
    model = ec.load(FIXTURES / "resnet_small.k3.h5")
    before = model.predict(xs[0])
    for _, layer in walk_layers(model.graph):
        layer.trainable = type(layer).__name__ == "BatchNormalization"
    model.compile(optimizer="sgd", loss="mse")
    after = model.predict(xs[0])
    assert _close(after, before, ys[0])
    assert model.evaluate(xs[0], before) < 1e-10
