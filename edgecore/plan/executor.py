"""The one place plans run: bind inputs into the arena, run the op table, read outputs.

An Executor owns the activation arena (grown, never shrunk, to the largest plan it was
asked to hold: one arena serves a model's inference plans, its frozen prefix and its
training and evaluation steps) and refers to the model-lifetime buffers that operand refs
point into: the packed weights, and once the model is compiled the trainer's params and
grads.  Model.predict, the frozen prefix and the training step all go through it.

Its lock makes bind -> run -> read one indivisible step: the arena is shared, and the
runner releases the GIL, so two threads interleaving would read each other's tensors.
The lock is re-entrant, so a caller may hold it across several steps (a whole predict).
"""
import threading

from .. import _kernels
from .arena import aligned_empty


class Executor:
    def __init__(self, weights=None, lock=None):
        self.lock = threading.RLock() if lock is None else lock
        self.arena = aligned_empty(0)
        self.weights = aligned_empty(0) if weights is None else weights
        self.params = None  # the trainer's buffers, after compile
        self.grads = None

    def release(self):
        """Drop every buffer (the model is about to lay out new ones)."""
        with self.lock:
            self.arena = aligned_empty(0)
            self.weights = aligned_empty(0)
            self.params = self.grads = None

    def reserve(self, arena_floats):
        """Grow the arena to hold a plan of arena_floats (the caller checked the budget)."""
        with self.lock:
            if self.arena.size < arena_floats:
                self.arena = aligned_empty(arena_floats)

    def input_view(self, plan, index, shape, dtype=None):
        """The arena slot of the plan's input `index`, as an array of `shape` (and dtype:
        sparse labels are int64 in two float slots each)."""
        offset = plan.input_offsets[index]
        count = 1
        for d in shape:
            count *= d
        if dtype is not None and dtype != self.arena.dtype:
            floats = count * dtype.itemsize // 4
            return self.arena[offset:offset + floats].view(dtype).reshape(shape)
        return self.arena[offset:offset + count].reshape(shape)

    def bind(self, plan, arrays):
        """Copy the arrays into the plan's input slots (converted to float32 there)."""
        for i, array in enumerate(arrays):
            self.input_view(plan, i, array.shape)[...] = array

    def run(self, plan):
        _kernels.run_plan(plan.ops, plan.fparams, self.arena, self.weights, plan.arena_floats,
                          plan.gemm_isa[2], self.params, self.grads, plan.nthreads)

    def output_views(self, plan):
        """Views of the plan's outputs in the arena (valid until the next run)."""
        views = []
        for offset, shape in zip(plan.output_offsets, plan.output_shapes):
            count = 1
            for d in shape:
                count *= d
            views.append(self.arena[offset:offset + count].reshape(shape))
        return views

    def __call__(self, plan, inputs, outputs):
        """Run the plan on inputs, copying its outputs into `outputs` (arrays of the
        output shapes); nothing is allocated."""
        with self.lock:
            self.bind(plan, inputs)
            self.run(plan)
            for array, view in zip(outputs, self.output_views(plan)):
                array[...] = view
