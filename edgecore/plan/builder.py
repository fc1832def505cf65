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


# Buffers an op operand may live in: the runner's base table (kernels/runner.pxi).
BASE_ARENA = _kernels.BASES["arena"]
BASE_WEIGHTS = _kernels.BASES["weights"]
BASE_PARAMS = _kernels.BASES["params"]
BASE_GRADS = _kernels.BASES["grads"]


@dataclass(frozen=True)
class Region:
    """A slice of a model-lifetime buffer (float offsets): the packed frozen weights, or
    for training the trainable parameters and their gradients (Keras layout)."""

    offset: int
    size: int
    base: int = BASE_WEIGHTS


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
    y2: object = None  # a second output (backward and loss ops)
    x2: object = None  # a third input
    act: object = None
    ints: tuple = ()
    floats: tuple = ()
    inplace: bool = False  # y may share x0's storage (elementwise ops)
    reads: list = field(default_factory=list)  # every tensor read (for lifetimes)
    writes: list = field(default_factory=list)  # every tensor written


class Temp:
    """An intermediate tensor a layer creates for itself (SeparableConv2D's depthwise
    result); planned like any graph tensor."""

    def __init__(self, shape):
        self.key = ("temp",) + tuple(shape)


@dataclass(frozen=True)
class LiveRegions:
    """Where a live layer's variables are during training (the trainer's layout):
    params[name] in the params buffer (Keras layout), grads[name] for the trained ones."""

    params: dict
    grads: dict


class PlanBuilder:
    """weights: {layer: {key: Region}} of the packed weights buffer (plan/weights.py);
    live: {layer: LiveRegions} of the layers training reads in Keras layout (empty for
    inference before compile).  Both belong to the stage that made them; a layer's
    lowering asks for its own entries through weights_of / live_of."""

    def __init__(self, shapes, weights=None, live=None, training=False, nthreads=1):
        self.shapes = shapes  # graph tensor -> full shape (batch included)
        # The threads the plan runs its kernels with: per-thread scratch is sized for it
        # (a layer passes it to its kernel's *_scratch_size).
        self.nthreads = int(nthreads)
        self.weights = weights or {}
        self.live = live or {}
        self.ops = []
        self.alias_of = {}  # tensor -> tensor whose storage it shares
        self.node = None
        self.training = training  # lowering a training step (Dropout active, etc.)
        self.preact = {}  # node -> its pre-activation tensor, where a live layer keeps one
        self.dropout_masks = {}  # node -> the mask tensor of an active Dropout
        self.saved = {}  # node -> what its forward keeps for its backward (BN batch stats...)

    # --- parameters ------------------------------------------------------------------
    def weights_of(self, layer):
        """{key: Region} of the layer's packed weights (empty when it has none)."""
        return self.weights.get(layer, {})

    def live_of(self, layer):
        """The layer's LiveRegions when training reads it in Keras layout, else None."""
        return self.live.get(layer)

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
           floats=(), inplace=False, y2=None, x2=None, b_out=False):
        """Emit one op.  y (and y2, and b when b_out) are written, the rest read; any
        operand may be a graph/temp tensor in the arena or a Region of a model buffer."""
        code = _kernels.OPCODES[name]
        inputs = (x0, x1, x2) + (() if b_out else (w, b)) + ((w,) if b_out else ())
        outputs = (y, y2) + ((b,) if b_out else ())
        reads = [self.root(t) for t in inputs if t is not None and not isinstance(t, Region)]
        writes = [t for t in outputs if t is not None and not isinstance(t, Region)]
        planned = PlannedOp(code, name, self.node, y=y, x0=x0, x1=x1, w=w, b=b,
                            scratch=int(scratch), y2=y2, x2=x2, act=act,
                            ints=tuple(int(i) for i in ints),
                            floats=tuple(float(f) for f in floats), inplace=inplace,
                            reads=reads, writes=writes)
        if len(planned.ints) > _kernels.ROW_PARAM_INTS:
            raise AssertionError(f"{name}: {len(planned.ints)} int params do not fit the op row")
        if len(planned.floats) > _kernels.ROW_PARAM_FLOATS:
            raise AssertionError(f"{name}: {len(planned.floats)} float params do not fit")
        self.ops.append(planned)
        return planned

    def copy(self, y, x):
        self.op("copy", y, x, ints=(self.size(x),))
