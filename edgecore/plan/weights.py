"""The packed weights buffer of a flat graph: its layout (a table of regions) and its filling.

    layout_weights(nodes)       -> WeightLayout: every layer's packed size and offset,
                                   from the config alone (nothing is read)
    pack_weights(layout, read)  -> the one float32 buffer, filled one layer at a time

The layout belongs to the flat graph it was made from: which BatchNormalization folds
into which convolution is read off that graph's nodes (graph/rewrites.py decides), so
another flatten (a compile with other trainable flags) gets a layout of its own and the
parsed layers are never marked.  Plans refer to the buffer through the layout's Regions.
"""
from dataclasses import dataclass, field

from ..graph.rewrites import folded_weights
from .arena import align, aligned_empty
from .builder import Region


@dataclass
class WeightLayout:
    regions: dict = field(default_factory=dict)  # layer -> {key: Region}, first-use order
    folds: dict = field(default_factory=dict)  # producer layer -> the BN folded into it
    floats: int = 0  # the buffer's size

    @property
    def layers(self):
        return list(self.regions)


def layout_weights(nodes):
    """The WeightLayout of the layers these flat nodes call (each layer once, in first-use
    order, its BatchNormalization fold taken from its node)."""
    layout = WeightLayout()
    for node in nodes:
        if node.folded_bn is not None:
            layout.folds[node.layer] = node.folded_bn
    for node in nodes:
        layer = node.layer
        if layer in layout.regions:
            continue
        regions = {}
        for key, n in layer.param_sizes(layer.var_shapes, layout.folds.get(layer)).items():
            regions[key] = Region(layout.floats, int(n))
            layout.floats += align(int(n))
        layout.regions[layer] = regions
    return layout


def _raw_floats(layout, layer):
    bn = layout.folds.get(layer)
    return layer.elements(layer.var_shapes or []) + (
        bn.elements(bn.var_shapes) if bn is not None else 0)


def pack_layer(layout, layer, weights, read, scratch=None):
    """Pack one layer (its BatchNormalization folded in, if the layout folds one) into its
    regions of the weights buffer, from read(layer, scratch) -> Keras-order arrays."""
    regions = layout.regions[layer]
    if not regions:
        return
    raw = read(layer, scratch) if layer.variables() else []
    bn = layout.folds.get(layer)
    if bn is not None:
        used = layer.elements(layer.var_shapes)
        raw = folded_weights(layer, bn, raw, read(bn, None if scratch is None else scratch[used:]))
    layer.pack(raw, {key: weights[r.offset:r.offset + r.size] for key, r in regions.items()})


def pack_weights(layout, read):
    """Allocate the weights buffer once and pack every layer into it, one at a time;
    read(layer, scratch) gives a layer's Keras-order weights, read into `scratch` (one
    buffer sized for the largest layer, reused): loading makes two large allocations,
    this buffer and the scratch, instead of one per weight that the allocator may keep."""
    weights = aligned_empty(layout.floats)
    scratch = aligned_empty(max((_raw_floats(layout, layer) for layer in layout.regions),
                                default=0))
    for layer in layout.regions:
        pack_layer(layout, layer, weights, read, scratch)
    return weights


def layers_packed_from(layout, layers):
    """The layers whose packed form depends on any of `layers` (itself, or the producer a
    BatchNormalization among them is folded into)."""
    changed = set(layers)
    return [layer for layer in layout.regions
            if layer in changed or layout.folds.get(layer) in changed]
