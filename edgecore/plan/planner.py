"""Compile a flat graph into an executable plan for one set of input shapes.

    flat graph + input shapes
      -> concrete shapes of every tensor
      -> ops (each layer lowers its calls through PlanBuilder)
      -> in-place decisions, lifetimes, arena offsets (plan/arena.py)
      -> the op table the Cython runner executes (one int64 row + one float32 row per op)

A plan is specific to its input shapes (batch included); the weights buffer is shared by
every plan of a model.  Nothing here runs on the hot path.
"""
from dataclasses import dataclass

import numpy as np

from .. import _kernels
from ..errors import EdgecoreError, ShapeError
from .arena import Buffer, align, live_lower_bound, place
from .builder import PlanBuilder, Region
from .cost import op_flops, op_shape

REF_BASE_SHIFT = _kernels.REF_BASE_SHIFT  # operand ref = (base << shift) | float offset
ROW_INTS = _kernels.ROW_INTS
ROW_FLOATS = _kernels.ROW_FLOATS


@dataclass(eq=False)
class Plan:
    input_shapes: list
    output_shapes: list
    ops: np.ndarray  # int64 (n_ops, ROW_INTS)
    fparams: np.ndarray  # float32 (n_ops, ROW_FLOATS)
    arena_floats: int
    input_offsets: list
    output_offsets: list
    buffers: list  # arena.Buffer, for memory reports and tests
    op_names: list  # (op name, layer name) per row
    gemm_isa: tuple
    nthreads: int  # the threads its kernels run with; its scratch is sized for them
    lower_bound_floats: int
    naive_floats: int
    op_flops: list = None  # per row: floating-point operations (plan/cost.py)
    op_shapes: list = None  # per row: the output shape


def concrete_shapes(flat, input_shapes, path=None):
    """{tensor: full shape} for the given full input shapes; every dim must be known."""
    shapes = {}
    for tensor, shape in zip(flat.inputs, input_shapes):
        shapes[tensor] = tuple(int(d) for d in shape)
    for node in flat.nodes:
        batch = shapes[node.inputs[0]][0] if node.inputs else input_shapes[0][0]
        in_shapes = [shapes[t][1:] for t in node.inputs]
        if node.extra_pads:  # a folded ZeroPadding2D: the layer sees the padded size
            (h, w, c), (top, bottom, left, right) = in_shapes[0], node.extra_pads
            in_shapes = [(h + top + bottom, w + left + right, c)]
        outs = node.layer.output_shapes(in_shapes, node.call)
        for tensor, shape in zip(node.outputs, outs):
            if any(d is None for d in shape):
                raise ShapeError(f"output shape {shape} is not fully known for inputs "
                                 f"{input_shapes}", path=path, layer=node.layer.name,
                                 layer_class=node.layer.class_name)
            shapes[tensor] = (batch,) + tuple(shape)
    return shapes


def lower(flat, shapes, path=None, weights=None, live=None, nthreads=1):
    b = PlanBuilder(shapes, weights, live, nthreads=nthreads)
    for node in flat.nodes:
        b.node = node
        try:
            node.layer.lower(b, node)
        except EdgecoreError as exc:
            raise exc.with_context(path=path, layer=node.layer.name,
                                   layer_class=node.layer.class_name)
    return b


def _lifetimes(b, inputs, outputs):
    """Decide in-place ops, then return {root tensor: [first, last]} op indices."""
    n_ops = len(b.ops)
    reads = {}
    for i, op in enumerate(b.ops):
        for t in op.reads:
            reads.setdefault(b.root(t), []).append(i)
    for t in outputs:
        reads.setdefault(b.root(t), []).append(n_ops)
    graph_inputs = inputs
    inputs = {b.root(t) for t in graph_inputs}
    for i, op in enumerate(b.ops):
        x = op.x0
        if not op.inplace or x is None or isinstance(x, Region) or op.y in b.alias_of:
            continue
        src, dst = b.root(x), op.y
        if src is dst or b.size(src) != b.size(dst) or src in inputs:
            continue
        if max(reads.get(src, [i])) == i:
            # x dies here: write y over it.  y's later reads now keep that storage alive.
            b.alias_of[dst] = src
            reads.setdefault(src, []).extend(reads.pop(dst, []))
    spans = {}
    for t in graph_inputs:
        spans[b.root(t)] = [-1, -1]
    for i, op in enumerate(b.ops):
        for written in op.writes:
            root = b.root(written)
            if root not in spans:
                spans[root] = [i, i]
    for root, indices in reads.items():
        span = spans.setdefault(root, [min(indices), min(indices)])
        span[1] = max([span[1]] + indices)
    return spans


def build_plan(flat, input_shapes, path=None, weights=None, live=None, nthreads=1):
    """The inference plan of a flat graph for these full input shapes; weights: the
    WeightLayout regions ({layer: {key: Region}}), live: the trainer's LiveRegions;
    nthreads: the threads it will run with (its per-thread scratch is planned for them)."""
    input_shapes = [tuple(int(d) for d in s) for s in input_shapes]
    shapes = concrete_shapes(flat, input_shapes, path)
    b = lower(flat, shapes, path, weights, live, nthreads)
    return finish_plan(b, flat.inputs, flat.outputs, input_shapes)


def finish_plan(b, inputs, outputs, input_shapes):
    """Lifetimes, arena placement and the op table for the ops lowered into b."""
    spans = _lifetimes(b, inputs, outputs)
    buffers, where = [], {}
    for root, (first, last) in spans.items():
        buf = Buffer(f"{root.key}", align(b.size(root)), first, last)
        buffers.append(buf)
        where[root] = buf
    for i, op in enumerate(b.ops):
        if op.scratch:
            buf = Buffer(f"scratch:{i}:{op.name}", align(op.scratch), i, i)
            buffers.append(buf)
            where[("scratch", i)] = buf
    arena_floats = place(buffers)

    def ref(operand, i):
        if operand is None:
            return -1
        if isinstance(operand, Region):
            return (operand.base << REF_BASE_SHIFT) | operand.offset
        return where[b.root(operand)].offset

    ops = np.zeros((len(b.ops), ROW_INTS), dtype=np.int64)
    fparams = np.zeros((len(b.ops), ROW_FLOATS), dtype=np.float32)
    names = []
    for i, op in enumerate(b.ops):
        act = op.act
        row = [op.code, ref(op.y, i), ref(op.x0, i), ref(op.x1, i), ref(op.w, i), ref(op.b, i),
               where[("scratch", i)].offset if op.scratch else -1, ref(op.y2, i), ref(op.x2, i),
               act.code if act is not None else 0]
        ops[i, :len(row)] = row
        ops[i, len(row):len(row) + len(op.ints)] = op.ints
        if act is not None:
            fparams[i, :3] = (act.alpha, act.max_value, act.threshold)
        fparams[i, 3:3 + len(op.floats)] = op.floats
        names.append((op.name, op.node.layer.name if op.node is not None else ""))
    return Plan(
        input_shapes=input_shapes,
        output_shapes=[b.shape(t) for t in outputs],
        ops=ops, fparams=fparams, arena_floats=arena_floats,
        input_offsets=[where[b.root(t)].offset for t in inputs],
        output_offsets=[where[b.root(t)].offset for t in outputs],
        buffers=buffers, op_names=names, gemm_isa=_kernels.gemm_isa(), nthreads=b.nthreads,
        lower_bound_floats=live_lower_bound(buffers, len(b.ops)),
        naive_floats=sum(buf.size for buf in buffers),
        op_flops=[op_flops(op, b.shape) for op in b.ops],
        op_shapes=[op_shape(op, b.shape) for op in b.ops])
