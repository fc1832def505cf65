"""The one list of Keras layer classes edgecore supports."""
from ..errors import EdgecoreError, ModelFormatError, UnsupportedLayerError
from . import (activations, convolutional, core, merging, model, normalization, ops, pooling,
               preprocessing, reshaping, scale)

_FAMILIES = (
    core.InputLayer, core.Dense, core.Identity,
    activations.Activation, activations.ReLU, activations.LeakyReLU, activations.ELU,
    activations.Softmax, activations.PReLU,
    convolutional.Conv2D, convolutional.DepthwiseConv2D, convolutional.SeparableConv2D,
    normalization.BatchNormalization, normalization.LayerNormalization,
    normalization.RMSNormalization,
    preprocessing.Rescaling, preprocessing.Normalization,
    pooling.MaxPooling2D, pooling.AveragePooling2D,
    pooling.GlobalAveragePooling2D, pooling.GlobalMaxPooling2D,
    reshaping.ZeroPadding2D, reshaping.Cropping2D, reshaping.UpSampling2D,
    reshaping.Flatten, reshaping.Reshape, reshaping.Permute,
    merging.Add, merging.Subtract, merging.Multiply, merging.Average, merging.Maximum,
    merging.Minimum, merging.Concatenate,
    ops.Divide, ops.TFOpLambda, ops.Lambda,
    scale.LayerScale, scale.CustomScaleLayer,
)

LAYER_CLASSES = {}
for _family in _FAMILIES:
    for _name in _family.keras_classes:
        assert _name not in LAYER_CLASSES, _name
        LAYER_CLASSES[_name] = _family

SUPPORTED_LAYERS = sorted(name for name, cls in LAYER_CLASSES.items() if cls is not ops.Lambda)


def layer_factory(ctx):
    """make_layer(LayerSpec) -> Layer, for graph.build_graph."""

    def make_layer(spec):
        if spec.submodel is not None:
            return model.ModelLayer(spec, ctx)
        cls = LAYER_CLASSES.get(spec.class_name)
        if cls is None:
            raise UnsupportedLayerError(
                f"layer class {spec.class_name!r} is not supported by edgecore "
                f"(supported: {', '.join(SUPPORTED_LAYERS)})",
                path=ctx.path, layer=spec.name, layer_class=spec.class_name)
        try:
            return cls(spec, ctx)
        except EdgecoreError:
            raise
        except (KeyError, TypeError, ValueError, AttributeError, ArithmeticError) as exc:
            # A config value of the wrong type (a string where Keras writes an int...).
            raise ModelFormatError(f"malformed config: {type(exc).__name__}: {exc}",
                                   path=ctx.path, layer=spec.name,
                                   layer_class=spec.class_name) from None

    return make_layer
