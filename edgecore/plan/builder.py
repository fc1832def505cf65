"""PlanBuilder: what a layer's `lower()` talks to.

A layer lowers one graph node into ops on symbolic operands: graph tensors, regions of the
weights buffer, and per-op scratch.  Nothing is placed yet; after every node is lowered the
arena planner (plan/arena.py) assigns offsets from the op order, and plan/encode.py writes
the op table the Cython runner executes.  Views (Flatten, Reshape, Dropout at inference)
are aliases, not ops.

Operand encoding, op-table columns and the runner's switch are kept in one place each:
the opcodes and the row layout come from `edgecore._kernels` (OPCODES, ROW_*), so Python
never hard-codes a number the Cython side defines.
"""
from dataclasses import dataclass, field

from .. import _kernels


@dataclass(frozen=True)
class Region:
    """A slice of the model's weights buffer (float offsets)."""

    offset: int
    size: int


@dataclass
class PlannedOp:
    code: int
    name: str
    node: object  # the graph node it came from (for messages and memory tables)
    y: object = None
    x0: object = None
    x1: object = None
    w: object = None
    b: object = None
    scratch: int = 0  # floats of arena scratch this op needs
    act: object = None
    ints: tuple = ()
    floats: tuple = ()
    inplace: bool = False  # y may share x0's storage (elementwise ops)
    reads: list = field(default_factory=list)  # every tensor read (for lifetimes)


class Temp:
    """An intermediate tensor a layer creates for itself (SeparableConv2D's depthwise
    result); planned like any graph tensor."""

    def __init__(self, shape):
        self.key = ("temp",) + tuple(shape)


class PlanBuilder:
    def __init__(self, shapes):
        self.shapes = shapes  # graph tensor -> full shape (batch included)
        self.ops = []
        self.alias_of = {}  # tensor -> tensor whose storage it shares
        self.node = None

    # --- shapes ----------------------------------------------------------------------
    def shape(self, tensor):
        return self.shapes[tensor]

    def size(self, tensor):
        n = 1
        for d in self.shapes[tensor]:
            n *= d
        return n

    def temp(self, shape):
        """A buffer for an intermediate result inside one layer's lowering."""
        tensor = Temp(shape)
        self.shapes[tensor] = tuple(shape)
        return tensor

    # --- emission --------------------------------------------------------------------
    def alias(self, out, source):
        """`out` is a view of `source` (same elements, possibly another shape)."""
        assert self.size(out) == self.size(source), (out, source)
        self.alias_of[out] = self.root(source)

    def root(self, tensor):
        while tensor in self.alias_of:
            tensor = self.alias_of[tensor]
        return tensor

    def op(self, name, y, x0=None, x1=None, w=None, b=None, scratch=0, act=None, ints=(),
           floats=(), inplace=False):
        code = _kernels.OPCODES[name]
        reads = [self.root(t) for t in (x0, x1) if t is not None and not isinstance(t, Region)]
        planned = PlannedOp(code, name, self.node, y=y, x0=x0, x1=x1, w=w, b=b,
                            scratch=int(scratch), act=act, ints=tuple(int(i) for i in ints),
                            floats=tuple(float(f) for f in floats), inplace=inplace,
                            reads=reads)
        if len(planned.ints) > _kernels.ROW_PARAM_INTS:
            raise AssertionError(f"{name}: {len(planned.ints)} int params do not fit the op row")
        if len(planned.floats) > _kernels.ROW_PARAM_FLOATS:
            raise AssertionError(f"{name}: {len(planned.floats)} float params do not fit")
        self.ops.append(planned)
        return planned

    def copy(self, y, x):
        self.op("copy", y, x, ints=(self.size(x),))
