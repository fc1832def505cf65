"""Each graph rewrite keeps the outputs (float32 round-off) and fires only where legal."""
import numpy as np
import pytest

import edgecore as ec
from edgecore.graph.rewrites import (fold_batchnorm_into_conv, fold_zero_padding_into_conv,
                                     fuse_activation_into_producer)
from edgecore.layers.normalization import BatchNormalization
from fixtures import FIXTURES, inputs_outputs, reference

NETS = ["mobilenet_v2", "resnet_small", "efficientnet_b0", "transfer_mobilenet_v2"]
BN_CASES = ["bn_after_conv_nobias", "bn_after_conv_bias", "bn_after_dense", "bn_center_false",
            "bn_scale_false", "bn_epsilon_large"]


def _ops(model, x):
    model.predict(x)
    return [name for plan in model._plans.values() for name, _ in plan.op_names]


def _bn_nodes(model):
    return [n for n in model.flat.nodes if isinstance(n.layer, BatchNormalization)]


# Each rewrite against the pipeline stage before it (activations follow BatchNormalization
# in these nets, so fusing them needs the fold first), on cases where it must fire.
PADDED = ["mobilenet_v2", "transfer_mobilenet_v2", "resnet_small"]  # pads before valid convs
STAGES = ([(case, (), fold_zero_padding_into_conv) for case in PADDED]
          + [(case, (), fold_batchnorm_into_conv) for case in BN_CASES + NETS]
          + [(case, (fold_batchnorm_into_conv,), fuse_activation_into_producer) for case in NETS])


@pytest.mark.parametrize("case,before,rewrite", STAGES,
                         ids=[f"{c}-{r.__name__}" for c, _, r in STAGES])
def test_rewrite_keeps_outputs(case, before, rewrite):
    path = FIXTURES / f"{case}.k3.h5"
    xs, ys = inputs_outputs(reference(case, "k3.h5"))
    plain = ec.load(path, _rewrites=before)
    rewritten = ec.load(path, _rewrites=before + (rewrite,))
    assert len(rewritten.flat.nodes) < len(plain.flat.nodes), "the rewrite never fired"
    a, b = plain.predict(xs[0]), rewritten.predict(xs[0])
    scale = max(1.0, float(np.abs(ys[0]).max()))
    assert np.abs(a - b).max() <= 1e-5 * scale
    assert np.abs(b - ys[0]).max() <= 1e-4 * scale


def test_folding_removes_every_foldable_batchnorm():
    model = ec.load(FIXTURES / "mobilenet_v2.k3.h5")
    assert _bn_nodes(model) == []
    assert "channel_affine" not in _ops(model, np.zeros((1, 96, 96, 3), np.float32))


def test_batchnorm_after_the_input_stays_standalone():
    model = ec.load(FIXTURES / "bn_after_input.k3.h5")
    assert len(_bn_nodes(model)) == 1


def test_batchnorm_is_not_folded_when_the_conv_output_has_another_consumer():
    model = ec.load(FIXTURES / "bn_conv_output_shared.k3.h5")
    assert len(_bn_nodes(model)) == 1
    xs, ys = inputs_outputs(reference("bn_conv_output_shared", "k3.h5"))
    assert np.abs(model.predict(xs[0]) - ys[0]).max() <= 1e-4 * max(1, np.abs(ys[0]).max())


def test_batchnorm_on_a_non_channel_axis_is_not_folded():
    model = ec.load(FIXTURES / "bn_axis_1.k3.h5")
    assert len(_bn_nodes(model)) == 1


@pytest.mark.parametrize("case", ["graph_shared_conv", "mobilenet_v2"])
def test_only_convolutions_called_once_are_folded(case):
    # graph_shared_conv calls one Conv2D twice: one kernel cannot hold two folds.
    model = ec.load(FIXTURES / f"{case}.k3.h5")
    calls = {}
    for n in model.flat.nodes:
        calls[n.layer] = calls.get(n.layer, 0) + 1
    folded = [n for n in model.flat.nodes if n.folded_bn is not None]
    assert bool(folded) == (case == "mobilenet_v2")
    assert all(calls[n.layer] == 1 for n in folded)


def test_folds_are_marked_on_the_flat_graph_not_on_the_layers():
    # Each flatten owns its folds: a second model from the same graph (compile, or
    # _rewrites=()) starts from unmarked layers.
    model = ec.load(FIXTURES / "bn_after_conv_nobias.k3.h5")
    assert [n.folded_bn.name for n in model.flat.nodes if n.folded_bn is not None]
    for layer in model.layers:
        assert not hasattr(layer, "folded_bn") and not hasattr(layer, "folded_into")
        assert not hasattr(layer, "params") and not hasattr(layer, "live")


def test_folding_zero_padding_lowers_the_arena_peak():
    path = FIXTURES.parent / "pretrained" / "mobilenet_v2_imagenet.h5"
    padded = ec.load(path, _rewrites=(fold_batchnorm_into_conv, fuse_activation_into_producer))
    folded = ec.load(path)
    assert folded.memory_plan((224, 224, 3)).arena_bytes < 0.7 * padded.memory_plan((224, 224, 3)).arena_bytes
