"""Add, Subtract, Multiply, Average, Maximum, Minimum, Concatenate.

Elementwise merges broadcast like Keras 3 (numpy rules over the non-batch axes, shorter
shapes padded on the left), which is what squeeze-and-excite needs: (N,H,W,C) * (N,1,1,C).
Three or more inputs accumulate into the output in place, left to right, as Keras does.
"""
import numpy as np

from .base import Layer

BINARY_OPS = {"add": 0, "subtract": 1, "multiply": 2, "divide": 3, "maximum": 4, "minimum": 5}
MAX_BINARY_RANK = 6


def broadcast_shapes(layer, shapes):
    rank = max(len(s) for s in shapes)
    padded = [(1,) * (rank - len(s)) + tuple(s) for s in shapes]
    out = []
    for dims in zip(*padded):
        known = {d for d in dims if d is not None and d != 1}
        if len(known) > 1:
            raise layer.shape_error(f"inputs of shapes {shapes} do not broadcast")
        if known:
            out.append(known.pop())
        elif None in dims:
            out.append(None)
        else:
            out.append(1)
    return tuple(out)


def broadcast_strides(out_shape, in_shape):
    """Element strides reading in_shape (left padded with 1s) as out_shape."""
    in_shape = (1,) * (len(out_shape) - len(in_shape)) + tuple(in_shape)
    strides, stride = [], 1
    for o, i in zip(reversed(out_shape), reversed(in_shape)):
        strides.append(0 if i == 1 and o != 1 else stride)
        stride *= i
    return list(reversed(strides))


def collapse_dims(shape, *strides_list):
    """Merge neighbouring axes that every operand walks contiguously (or broadcasts), so
    the kernel sees the smallest rank: (2,7,7,32) + (2,7,7,32) becomes one flat axis and
    (2,7,7,32) * (2,1,1,32) becomes (2, 49, 32).  The output is contiguous, so it can
    always merge; size-1 axes are dropped first."""
    keep = [i for i, d in enumerate(shape) if d != 1] or [len(shape) - 1]
    shape = [shape[i] for i in keep]
    strides_list = [[s[i] for i in keep] for s in strides_list]
    i = len(shape) - 2
    while i >= 0:
        # True both for a contiguous pair and for a pair broadcast on both axes (0 == 0).
        if all(s[i] == s[i + 1] * shape[i + 1] for s in strides_list):
            shape[i + 1] *= shape[i]
            del shape[i]
            for s in strides_list:
                del s[i]
        i -= 1
    return shape, strides_list


def lower_binary(b, op, y, a, bb, a_shape=None, b_shape=None):
    """y = a (op) bb with broadcasting; a or bb may be a weights Region (a constant) with
    its shape given explicitly."""
    out = b.shape(y)
    a_shape = b.shape(a) if a_shape is None else a_shape
    b_shape = b.shape(bb) if b_shape is None else b_shape
    shape, (sa, sb) = collapse_dims(out, broadcast_strides(out, a_shape),
                                    broadcast_strides(out, b_shape))
    if len(shape) > MAX_BINARY_RANK:
        raise AssertionError(f"broadcast needs rank {len(shape)} > {MAX_BINARY_RANK}")
    b.op("binary", y, a, bb, ints=(BINARY_OPS[op], len(shape), *shape, *sa, *sb),
         inplace=tuple(a_shape) == tuple(out))


def call_operands(call):
    """The operands of one call in order: ("tensor", i) for the i-th input tensor, or
    ("const", array) for a number Keras 3 ops (`x + 3.0`) keep in the call's args."""
    from ..formats.config import TensorKey

    operands, count = [], 0

    def walk(value):
        nonlocal count
        if isinstance(value, TensorKey):
            operands.append(("tensor", count))
            count += 1
        elif isinstance(value, (list, tuple)) and value and all(
                isinstance(v, (list, tuple, TensorKey)) for v in value):
            for v in value:
                walk(v)
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            operands.append(("const", np.asarray(value, dtype=np.float32)))
        elif isinstance(value, list):
            operands.append(("const", np.asarray(value, dtype=np.float32)))
        else:
            raise ValueError(f"operand {value!r}")

    for arg in call.args:
        walk(arg)
    return operands


class _ElementwiseMerge(Layer):
    """Merge layers, and Keras 3 numpy ops on tensors with constant operands."""

    op = None
    min_inputs = 2

    def parse(self, config):
        try:
            self.operands = [call_operands(call) for call in self.calls]
        except ValueError as exc:
            raise self.unsupported(f"unsupported {exc}") from None

    def output_shapes(self, input_shapes, call):
        shapes = list(input_shapes)
        index = next((i for i, c in enumerate(self.calls) if c is call), None)
        if index is not None:
            shapes = [input_shapes[v] if kind == "tensor" else v.shape
                      for kind, v in self.operands[index]]
        if len(shapes) < self.min_inputs:
            raise self.shape_error(f"needs at least {self.min_inputs} operands, got {len(shapes)}")
        return [broadcast_shapes(self, shapes)]

    def param_sizes(self, weight_shapes, folded_bn=None):
        return {f"const{i}.{j}": value.size
                for i, operands in enumerate(self.operands)
                for j, (kind, value) in enumerate(operands) if kind == "const"}

    def pack(self, raw, views):
        for i, operands in enumerate(self.operands):
            for j, (kind, value) in enumerate(operands):
                if kind == "const":
                    views[f"const{i}.{j}"][:] = value.ravel()

    def resolve_operands(self, b, node):
        """[(tensor_or_region, full_shape)] for this node's call."""
        if not self.calls:
            return [(t, b.shape(t)) for t in node.inputs]
        resolved = []
        for j, (kind, value) in enumerate(self.operands[node.call_index]):
            if kind == "tensor":
                t = node.inputs[value]
                resolved.append((t, b.shape(t)))
            else:
                resolved.append((b.weights_of(self)[f"const{node.call_index}.{j}"],
                                 (1,) + value.shape))
        return resolved

    def lower(self, b, node):
        y = node.outputs[0]
        operands = self.resolve_operands(b, node)
        (a, a_shape), (second, second_shape) = operands[0], operands[1]
        lower_binary(b, self.op, y, a, second, a_shape, second_shape)
        for extra, extra_shape in operands[2:]:
            lower_binary(b, self.op, y, y, extra, b.shape(y), extra_shape)


    def lower_backward(self, b, node, dy, need_dx, dy_is_preact=False):
        """Gradients of y = a op b (broadcast), each summed back to its operand's shape;
        Add of any number of operands routes dy itself where nothing was broadcast."""
        operands = self.resolve_operands(b, node)
        index = self._input_index(node)
        wanted = [index[j] is not None and need_dx[index[j]] for j in range(len(operands))]
        grads = [None] * len(operands)
        if self.op == "subtract":  # dy and -dy, each summed to its operand's shape
            (a, a_shape), (c, c_shape) = operands
            grads[0] = reduce_to_shape(b, dy, a, a_shape) if wanted[0] else None
            if wanted[1]:
                negated = b.temp(b.shape(dy))
                b.op("scale", negated, dy, ints=(b.size(dy),), floats=(-1.0,))
                grads[1] = reduce_to_shape(b, negated, c, c_shape)
        elif self.op == "add":  # dy itself where no broadcast happened: no copy
            for j, (operand, shape) in enumerate(operands):
                if wanted[j]:
                    grads[j] = reduce_to_shape(b, dy, operand, shape)
        elif len(operands) == 2:
            (a, a_shape), (c, c_shape) = operands
            da = b.temp(a_shape) if wanted[0] else None
            dc = b.temp(c_shape) if wanted[1] else None
            if da is not None or dc is not None:
                lower_binary_backward(b, self.op, da, dc, dy, a, c, a_shape, c_shape)
            grads = [da, dc]
        else:
            raise self.unsupported(f"training through a {self.class_name} of "
                                   f"{len(operands)} operands (only two)")
        result = [None] * len(node.inputs)
        for j, g in enumerate(grads):
            if g is not None:
                result[index[j]] = g
        return result

    def _input_index(self, node):
        """For each operand of this call, the index of the input tensor it is (or None
        for a constant)."""
        if not self.calls:
            return list(range(len(node.inputs)))
        return [value if kind == "tensor" else None
                for kind, value in self.operands[node.call_index]]


def lower_binary_backward(b, op, da, db, dy, a, bb, a_shape, b_shape):
    """da, db (either may be None) = the gradients of y = a (op) bb given dy, each summed
    over the axes its operand was broadcast along (a squeeze-excite gate's dL/ds)."""
    out = b.shape(dy)
    shape, (sa, sb) = collapse_dims(out, broadcast_strides(out, a_shape),
                                    broadcast_strides(out, b_shape))
    if len(shape) > MAX_BINARY_RANK:
        raise AssertionError(f"broadcast needs rank {len(shape)} > {MAX_BINARY_RANK}")
    b.op("binary_backward", da, a, dy, x2=bb, y2=db,
         ints=(BINARY_OPS[op], len(shape), *shape, *sa, *sb))


def reduce_to_shape(b, dy, operand, shape):
    """dy summed over the axes where `shape` broadcasts (dy itself when it does not)."""
    if tuple(shape) == tuple(b.shape(dy)):
        return dy
    g = b.temp(shape)
    lower_binary_backward(b, "add", g, None, dy, operand, dy, shape, b.shape(dy))
    return g


class Add(_ElementwiseMerge):
    keras_classes = ("Add",)
    op = "add"


class Subtract(_ElementwiseMerge):
    keras_classes = ("Subtract",)
    op = "subtract"

    def output_shapes(self, input_shapes, call):
        index = next((i for i, c in enumerate(self.calls) if c is call), None)
        operands = len(self.operands[index]) if index is not None else len(input_shapes)
        if operands != 2:  # two tensors, or a tensor and a constant (Keras 3's `x - c`)
            raise self.shape_error(f"takes exactly 2 operands, got {operands}")
        return super().output_shapes(input_shapes, call)


class Multiply(_ElementwiseMerge):
    keras_classes = ("Multiply",)
    op = "multiply"


class Maximum(_ElementwiseMerge):
    keras_classes = ("Maximum",)
    op = "maximum"


class Minimum(_ElementwiseMerge):
    keras_classes = ("Minimum",)
    op = "minimum"


class Average(_ElementwiseMerge):
    keras_classes = ("Average",)
    op = "add"

    def lower(self, b, node):
        super().lower(b, node)
        y = node.outputs[0]
        b.op("scale", y, y, ints=(b.size(y),), floats=(1.0 / len(node.inputs),), inplace=True)

    def lower_backward(self, b, node, dy, need_dx, dy_is_preact=False):
        # y = (a + b + ...) / n: each operand gets dy / n, summed over its broadcast axes.
        operands = self.resolve_operands(b, node)
        share = b.temp(b.shape(dy))
        b.op("scale", share, dy, ints=(b.size(dy),), floats=(1.0 / len(operands),))
        index = self._input_index(node)
        result = [None] * len(node.inputs)
        for j, (operand, shape) in enumerate(operands):
            if index[j] is not None and need_dx[index[j]]:
                result[index[j]] = reduce_to_shape(b, share, operand, shape)
        return result


class Concatenate(Layer):
    keras_classes = ("Concatenate",)

    def parse(self, config):
        self.axis = int(config.get("axis", -1))

    def output_shapes(self, input_shapes, call):
        if len(input_shapes) < 1:
            raise self.shape_error("needs at least one input")
        rank = len(input_shapes[0])
        if any(len(s) != rank for s in input_shapes):
            raise self.shape_error(f"inputs have different ranks: {input_shapes}")
        axis = self.axis % (rank + 1)
        if axis == 0:
            raise self.unsupported("concatenation along the batch axis")
        out = list(input_shapes[0])
        for shape in input_shapes[1:]:
            for i, (d, e) in enumerate(zip(out, shape)):
                if i == axis - 1:
                    out[i] = None if d is None or e is None else d + e
                elif d is not None and e is not None and d != e:
                    raise self.shape_error(f"inputs {input_shapes} differ off the concat axis")
                elif d is None:
                    out[i] = e
        return [tuple(out)]

    def blocks(self, b, node):
        """(outer, inner_y, [(input, inner_x, offset)]) of the (outer, inner) views."""
        y = node.outputs[0]
        out = b.shape(y)
        outer = 1
        for d in out[:self.axis % len(out)]:
            outer *= d
        parts, offset = [], 0
        for x in node.inputs:
            parts.append((x, b.size(x) // outer, offset))
            offset += b.size(x) // outer
        return outer, b.size(y) // outer, parts

    def lower(self, b, node):
        outer, inner_y, parts = self.blocks(b, node)
        for x, inner_x, offset in parts:
            b.op("concat", node.outputs[0], x, ints=(outer, inner_x, inner_y, offset))

    def lower_backward(self, b, node, dy, need_dx, dy_is_preact=False):
        outer, inner_y, parts = self.blocks(b, node)
        grads = []
        for (x, inner_x, offset), need in zip(parts, need_dx):
            dx = None
            if need:
                dx = b.temp(b.shape(x))
                b.op("concat_backward", dx, None, dy, ints=(outer, inner_x, inner_y, offset))
            grads.append(dx)
        return grads
