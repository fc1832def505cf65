"""The compiled training state of a model, and the step, evaluate and fit loops.

Buffers, all allocated once at compile (or when a larger batch is first planned):
  params   Keras-layout variables of the live layers: the trainable block first (what
           the optimizer updates), then the frozen variables the suffix reads
  grads    one gradient per trainable variable, same offsets as the trainable block
  slots    the optimizer's state (momentum, velocity...), one buffer per slot
  arena    activations, gradients of activations and scratch of the largest plan
  staging  the boundary tensors of one batch (prefix output -> training input)
  cache    the frozen prefix's output for every training sample (fit, when cacheable)
A memory budget covers all of them plus the packed frozen weights; compile and fit raise
MemoryBudgetError before any work when the plan does not fit.
"""
import numpy as np

from .. import _kernels
from ..errors import MemoryBudgetError, ShapeError
from ..plan.arena import align, aligned_empty
from ..plan.budget import check_budget
from ..plan.builder import BASE_GRADS, BASE_PARAMS, LiveRegions, Region
from ..plan.planner import build_plan, concrete_shapes
from . import losses as losses_module
from .program import build_step_plan, label_shape

# The frozen prefix's arena target when it runs in chunks (see Trainer.prefix_chunk).
PREFIX_ARENA_BYTES = 16 << 20


def layout_live(live, trained):
    """({layer: LiveRegions}, trainable floats, total floats): every live layer's
    variables in the params buffer, the trainable block first (what the optimizer
    updates, mirrored by the grads buffer), then the rest."""
    params = {layer: {} for layer in live}
    grads = {layer: {} for layer in live}
    offset = 0
    for block_trainable in (True, False):
        if not block_trainable:
            n_trainable = offset
        for layer in live:
            for key, size, trainable in layer.live_layout(layer in trained):
                if trainable != block_trainable:
                    continue
                params[layer][key] = Region(offset, size, BASE_PARAMS)
                if trainable:
                    grads[layer][key] = Region(offset, size, BASE_GRADS)
                offset += align(size)
    regions = {layer: LiveRegions(params[layer], grads[layer]) for layer in live}
    return regions, n_trainable, offset


class Trainer:
    """Owns what compile decided and training changes: the live layout and the params,
    grads and optimizer buffers, the plans of the prefix and of the training and
    evaluation steps, the staging buffers and the random stream of shuffles and Dropout.
    Runs everything through the model's one Executor (plan/executor.py)."""

    def __init__(self, model, setup, layout, optimizer, loss, metrics, budget):
        self.model = model
        self.executor = model.executor
        self.setup = setup
        self.layout = layout  # the packed weights' WeightLayout (prefix, frozen suffix)
        self.optimizer = optimizer
        self.loss = loss
        self.metric_names = list(metrics)
        self.budget = budget
        self.trained = setup.trained
        self.live, self.n_trainable, self.n_params = layout_live(setup.live, setup.trained)
        self.params = self.grads = None  # allocate() once the budget allows them
        self.plans = {}  # (kind, full shapes) -> Plan
        self._boundary = {}  # full input shapes -> full boundary shapes
        self._per_sample = {}  # per-sample input shapes -> prefix arena bytes per sample
        self.staging = {}  # boundary shapes -> [boundary arrays]
        self.run_parts = {}  # {name: bytes} the current fit holds (train/memory.py)
        self.step_outputs = {}  # step plan -> (losses, output) arrays the step copies into
        self.rng = None
        self._seed_generation = None
        self.reseed()

    def reseed(self):
        """Take edgecore.utils.set_random_seed's seed if one was set since the last time
        (Keras: a seed set before fit decides that fit's shuffles and masks)."""
        from ..utils import _global_seed, _seed_generation

        if self.rng is None or _seed_generation() != self._seed_generation:
            self.rng = np.random.default_rng(_global_seed())
            self._seed_generation = _seed_generation()

    # --- buffers ---------------------------------------------------------------------
    def state_bytes(self):
        """params + grads + optimizer slots, known before anything is allocated."""
        return 4 * (self.n_params + self.n_trainable) + self.optimizer.slot_bytes(self.n_trainable)

    def allocate(self):
        self.params = aligned_empty(self.n_params)
        self.grads = aligned_empty(self.n_trainable)
        self.grads[...] = 0.0
        self.optimizer.build(self.n_trainable, aligned_empty)

    def views(self, layer):
        """{key: float32 view of the params buffer} of a live layer."""
        return {key: self.params[r.offset:r.offset + r.size]
                for key, r in self.live[layer].params.items()}

    def fill_params(self, current_weights):
        """Write each live layer's Keras weights (current_weights(layer)) into params."""
        self.params[:] = 0.0
        for layer in self.setup.live:
            layer.live_pack(current_weights(layer), self.views(layer))

    def weights_of(self, layer):
        """Keras-order weights of a live layer (None for any other: the WeightStore then
        looks elsewhere)."""
        if layer not in self.live or self.params is None:
            return None
        return layer.live_weights(self.views(layer))

    def changed_layers(self):
        """Live layers whose values training changes: trained variables, or moving
        statistics of a BatchNormalization on batch statistics."""
        batch = {node.layer for node in self.setup.suffix.nodes
                 if node.layer.batch_dependent(node)}
        return [layer for layer in self.setup.live if layer in self.trained or layer in batch]

    def fixed_bytes(self):
        return self.state_bytes() + 4 * self.layout.floats

    # --- plans -----------------------------------------------------------------------
    # Plans are keyed by full shapes: the prefix by its input shapes, the training and
    # evaluation steps by their boundary shapes, so models with unknown spatial
    # dimensions plan for the data they get.

    def boundary_shapes(self, input_shapes):
        """Full boundary shapes for full model input shapes."""
        key = tuple(map(tuple, input_shapes))
        if key not in self._boundary:
            if self.setup.prefix.nodes:
                shapes = concrete_shapes(self.setup.prefix, list(key), self.model.path)
                self._boundary[key] = [shapes[t] for t in self.setup.boundary]
            else:
                self._boundary[key] = list(key)
        return self._boundary[key]

    def plan(self, kind, shapes):
        """The plan of `kind` ("prefix": for these input shapes; "train"/"eval": for
        these boundary shapes), built and budget-checked on first use."""
        key = (kind, tuple(map(tuple, shapes)), self.model.num_threads)
        if key not in self.plans:
            plan = self._build(kind, shapes)
            batch = shapes[0][0]
            self.check_fits(max(self.executor.arena.size, plan.arena_floats),
                            f"the {kind} plan for batch size {batch}")
            self.plans[key] = plan
            self.executor.reserve(plan.arena_floats)
        return self.plans[key]

    def _build(self, kind, shapes):
        nthreads = self.model.num_threads
        if kind == "prefix":  # frozen: every layer from the packed weights
            return build_plan(self.setup.prefix, shapes, self.model.path, self.layout.regions,
                              nthreads=nthreads)
        return build_step_plan(self.setup, self.loss, shapes, self.trained, self.model.path,
                               backward=(kind == "train"), weights=self.layout.regions,
                               live=self.live, nthreads=nthreads)

    def prefix_chunk(self, input_shapes):
        """How many samples the frozen prefix runs at once for a batch of these shapes: as
        many as keep its arena near PREFIX_ARENA_BYTES.  Its outputs are per sample, so
        chunking changes nothing but memory: at 224x224 a MobileNetV2 prefix needs 5.7 MiB
        of arena per sample, 184 MiB for a batch of 32."""
        batch = input_shapes[0][0]
        key = (tuple(tuple(s[1:]) for s in input_shapes), self.model.num_threads)
        if key not in self._per_sample:
            one = [(1,) + tuple(s[1:]) for s in input_shapes]
            self._per_sample[key] = self._build("prefix", one).arena_floats * 4
        return int(max(1, min(batch, PREFIX_ARENA_BYTES // max(1, self._per_sample[key]))))

    def chunk_shapes(self, input_shapes):
        chunk = self.prefix_chunk(input_shapes)
        return [(chunk,) + tuple(s[1:]) for s in input_shapes]

    def plans_for(self, input_shapes):
        """Build (and budget-check) every plan one batch of these input shapes needs."""
        boundary = self.boundary_shapes(input_shapes)
        if self.setup.prefix.nodes:
            chunk = self.chunk_shapes(input_shapes)
            self.plan("prefix", chunk)
            if chunk[0][0] != input_shapes[0][0] and input_shapes[0][0] % chunk[0][0]:
                rest = input_shapes[0][0] % chunk[0][0]
                self.plan("prefix", [(rest,) + tuple(s[1:]) for s in input_shapes])
        self.plan("train", boundary)
        self.plan("eval", boundary)

    def check_fits(self, arena_floats, what, parts=None):
        """MemoryBudgetError unless the fixed buffers, this arena and what the run holds
        (parts, default: the current fit's run_parts) fit the budget."""
        check_budget(self.budget, weights_bytes=self.fixed_bytes(),
                     arena_bytes=4 * arena_floats, path=self.model.path, what=what,
                     extra=self.run_parts if parts is None else parts)

    def arena_for(self, input_shapes_list):
        """The arena every plan of these batches needs (plans made, not kept)."""
        needed = self.executor.arena.size
        for input_shapes in input_shapes_list:
            boundary = self.boundary_shapes(input_shapes)
            needed = max(needed, self._plan_floats("train", boundary),
                         self._plan_floats("eval", boundary))
            if self.setup.prefix.nodes:
                needed = max(needed, self._plan_floats("prefix", self.chunk_shapes(input_shapes)))
        return needed

    def _plan_floats(self, kind, shapes):
        key = (kind, tuple(map(tuple, shapes)), self.model.num_threads)
        plan = self.plans.get(key) or self._build(kind, shapes)
        return plan.arena_floats

    def auto_batch_size(self, run_for, sample_shapes, n_samples, cap):
        """The largest batch, at most `cap`, whose run fits the budget: run_for(batch) ->
        (input shapes of every batch the run will use, its parts)."""
        if self.budget is None:
            raise ValueError("batch_size='auto' needs a memory_budget in compile()")

        def fits(batch):
            shapes, parts = run_for(batch)
            try:
                self.check_fits(self.arena_for(shapes), f"batch size {batch}", parts)
                return True
            except MemoryBudgetError:
                return False

        lo, hi, best = 1, max(1, min(cap, n_samples)), None
        while lo <= hi:
            mid = (lo + hi) // 2
            if fits(mid):
                best, lo = mid, mid + 1
            else:
                hi = mid - 1
        if best is None:
            shapes, parts = run_for(1)
            self.check_fits(self.arena_for(shapes), "batch size 1 (the smallest)", parts)
        return best

    # --- one batch -------------------------------------------------------------------
    def boundary_of(self, inputs):
        """The suffix's inputs for a batch of raw model inputs (any numeric dtype): the
        frozen prefix runs on chunks of prefix_chunk samples, each converted to float32
        in the arena, its outputs written into one staging array per tensor."""
        if not self.setup.prefix.nodes:
            return list(inputs)  # the step converts them as it binds them
        shapes = [a.shape for a in inputs]
        boundary = self.boundary_shapes(shapes)
        key = tuple(map(tuple, boundary))
        staging = self.staging.get(key)
        if staging is None:
            staging = self.staging[key] = [np.empty(s, np.float32) for s in boundary]
        n, chunk = shapes[0][0], self.prefix_chunk(shapes)
        for start in range(0, n, chunk):
            stop = min(n, start + chunk)
            plan = self.plan("prefix", [(stop - start,) + tuple(s[1:]) for s in shapes])
            self.executor(plan, [a[start:stop] for a in inputs],
                          [a[start:stop] for a in staging])
        return staging

    def step(self, boundary, labels, train=True):
        """One training (or evaluation) step on a batch of boundary tensors; returns
        (per-sample losses, model output), arrays owned by the trainer and overwritten by
        the next step of the same shape (copy to keep).  A training step whose loss is not
        finite changes no weight."""
        executor = self.executor
        plan = self.plan("train" if train else "eval", [a.shape for a in boundary])
        outputs = self.step_outputs.get(id(plan))
        if outputs is None:
            outputs = self.step_outputs[id(plan)] = [np.empty(s, np.float32)
                                                     for s in plan.output_shapes]
        with executor.lock:
            executor.bind(plan, boundary)
            label_slot = len(boundary)
            if labels.dtype == np.int64:  # sparse class indices, two float slots each
                executor.input_view(plan, label_slot, labels.shape, labels.dtype)[...] = labels
            else:
                executor.input_view(plan, label_slot, labels.shape)[...] = labels
            if train:
                for row in plan.dropout_rows:
                    plan.ops[row, _kernels.ROW_PARAM_START + 1] = int(self.rng.integers(1, 2**62))
            executor.run(plan)
            for array, view in zip(outputs, executor.output_views(plan)):
                array[...] = view
            # A non-finite loss means non-finite gradients: the update is skipped, so the
            # weights stay those of the last good step (the loop then stops the run).
            if train and np.isfinite(outputs[0]).all():
                self.optimizer.apply(self.params[:self.n_trainable], self.grads,
                                     plan.nthreads)
        return outputs[0], outputs[1]

    # --- labels and metrics ------------------------------------------------------------
    def labels_array(self, y, n, sample_shapes):
        boundary = self.boundary_shapes([(n,) + tuple(s) for s in sample_shapes])
        out_shape = concrete_shapes(self.setup.suffix, boundary,
                                    self.model.path)[self.setup.suffix.outputs[0]]
        want = label_shape(self.loss, out_shape)
        y = np.asarray(y)
        if y.dtype.kind not in "fiub":
            raise ShapeError(f"labels have dtype {y.dtype}; numbers expected", path=self.model.path)
        if y.shape == want + (1,) or (want and want[-1] == 1 and y.shape == want[:-1]):
            # Keras squeezes or expands a trailing unit axis so the ranks agree: (N,)
            # labels for a one-unit output, (N, 1) class ids for sparse cross-entropy.
            y = y.reshape(want)
        if y.shape != want:
            raise ShapeError(f"labels of shape {y.shape} do not fit the model output "
                             f"{out_shape} with {self.loss.name} (expects {want})",
                             path=self.model.path)
        if self.loss.kind == "sparse_ce":
            classes = out_shape[-1]
            if not np.all((y >= 0) & (y < classes) & (y == np.floor(y))):
                raise ShapeError(f"sparse labels must be integers in [0, {classes})",
                                 path=self.model.path)
            return np.ascontiguousarray(y, dtype=np.int64)
        return np.ascontiguousarray(y, dtype=np.float32)

    def metric_values(self, y, output):
        """{name: per-sample metric values} for the compiled metrics."""
        values = {}
        for name in self.metric_names:
            kind = name if name in losses_module.ACCURACIES else \
                losses_module.accuracy_kind(np.shape(y), output.shape)
            if kind == "binary_accuracy":
                # Keras: equal(y_true, cast(y_pred > 0.5)) -- soft labels never match.
                predicted = (output > 0.5).astype(np.float32)
                hits = (predicted == y.reshape(output.shape)).mean(axis=-1)
            elif kind == "sparse_categorical_accuracy":
                hits = output.argmax(axis=-1) == y.reshape(output.shape[:-1])
            else:
                hits = output.argmax(axis=-1) == y.argmax(axis=-1)
            values[name] = np.asarray(hits, np.float64).reshape(len(output), -1).mean(axis=1)
        return values

