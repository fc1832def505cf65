"""Model: the Keras-named API over a loaded graph and its compiled plans.

`predict` splits its input into batches (Keras's default batch_size of 32), finds or
compiles the plan for each batch shape, and runs each batch through the model's one
Executor (plan/executor.py: bind into the arena, run the op table in one Cython call,
copy the outputs out).  Plans are cached per input shape (at most MAX_CACHED_PLANS, least
recently used dropped) and share the executor's one arena, grown only when a new plan
needs more.  A model may be used from several threads: the executor's lock serializes
the calls (one model per thread gives parallel throughput).

Threads inside a call: `num_threads` (load's argument, settable at any time) is the
thread count every plan of the model is made for and runs with; plans are cached per
(input shapes, num_threads), so a new count re-plans on next use.  It is the model's
own: two models with different counts in two Python threads do not interfere.

What each stage owns: the flat graph and its folds (`flat`), the packed weights' table
(`layout`) and buffer (the executor's), the trainer after compile (live layout, params,
optimizer), and the WeightStore (`store`: where Keras-order values are).  compile
re-derives all of them from the graph; the parsed layers are never marked.
"""
import numpy as np

from . import _kernels
from .errors import ShapeError
from .layers.core import InputLayer
from .layers.model import ModelLayer, param_counts, walk_layers
from .plan.executor import Executor
from .plan.planner import build_plan, concrete_shapes
from .plan.threads import check_num_threads
from .summary import format_summary

MAX_CACHED_PLANS = 4
DEFAULT_BATCH_SIZE = 32


def serialized(method):
    """Run the method under the model's lock (the executor's, re-entrant): plans, the plan
    cache, the arena, the trainer's staging and step buffers and its parameters are
    shared, so calls from several threads take turns (fit holds it for the whole run: a
    predict from another thread waits and sees the trained model)."""
    import functools

    @functools.wraps(method)
    def locked(self, *args, **kwargs):
        with self.executor.lock:
            return method(self, *args, **kwargs)

    return locked


class Model:
    def __init__(self, graph, flat, layout, ctx, trainable=True, memory_budget=None,
                 num_threads=None):
        self.name = graph.name
        self.graph = graph
        self.flat = flat
        self.layout = layout  # plan/weights.WeightLayout of the packed weights
        self.ctx = ctx
        self.path = ctx.path
        self.store = ctx.store  # loader.WeightStore
        self._trainable = bool(trainable)
        self.memory_budget = memory_budget  # bytes, or None
        self.executor = Executor(lock=self.store.lock)
        self.store.apply = self._apply_weights
        self._plans = {}  # input shapes -> Plan, least recently used first
        self._last_plan = None
        self._output_shapes = {}  # per-sample input shapes -> per-sample output shapes
        self._packed_isa = _kernels.gemm_isa()
        self._num_threads = check_num_threads(num_threads)

    @property
    def num_threads(self):
        """Threads each call's kernels use (1: no thread is started)."""
        return self._num_threads

    @num_threads.setter
    def num_threads(self, value):
        """Any positive int, or None for the CPUs this process may use; plans made for
        another count are re-planned on next use (their per-thread scratch differs), and
        checked against the memory budget then."""
        value = check_num_threads(value)
        with self.executor.lock:  # not in the middle of another thread's call
            self._num_threads = value

    @property
    def trainable(self):
        return self._trainable

    @trainable.setter
    def trainable(self, value):
        """Keras's setter: the flag of the model and of every layer in it, at every
        depth (takes effect at the next compile)."""
        self._trainable = bool(value)
        for layer in self.graph.layers:
            layer.trainable = value

    @property
    def weights_buffer(self):
        """The packed weights (frozen layers, BatchNormalization folded in)."""
        return self.executor.weights

    @property
    def weights_floats(self):
        return self.layout.floats

    # --- introspection -----------------------------------------------------------------
    @property
    def layers(self):
        """Top-level layers as Keras lists them (Sequential omits its InputLayer)."""
        if self.graph.kind == "sequential":
            return [layer for layer in self.graph.layers if not isinstance(layer, InputLayer)]
        return list(self.graph.layers)

    @property
    def input_shape(self):
        shapes = [(None,) + tuple(t.shape) for t in self.graph.inputs]
        return shapes[0] if len(shapes) == 1 else shapes

    @property
    def output_shape(self):
        shapes = [(None,) + tuple(t.shape) for t in self.graph.outputs]
        return shapes[0] if len(shapes) == 1 else shapes

    @property
    def input_names(self):
        return [t.key[0] for t in self.graph.inputs]

    def get_layer(self, name=None, index=None):
        """The top-level layer with this name (or at this index), like Keras."""
        if index is not None:
            return self.layers[index]
        for layer in self.graph.layers:
            if layer.name == name:
                return layer
        raise ValueError(f"no layer named {name!r}; layers: {[l.name for l in self.layers]}")

    def count_params(self):
        return sum(param_counts(layer, True)[0] for layer in self.graph.layers)

    def summary(self, print_fn=None, line_length=None):
        text = format_summary(self, line_length)
        if print_fn is None:
            print(text)
        else:
            for line in text.split("\n"):
                print_fn(line)

    @serialized
    def get_weights(self):
        """Every weight of every layer, Keras order (as keras Model.get_weights)."""
        with self.store.open() as read:
            weights = []
            for layer in self.graph.layers:
                weights.extend(self.store.weights_of(layer, read))
            return weights

    def _weight_flags(self):
        from .layers.model import weight_trainable_flags

        return [f for layer in self.graph.layers
                for f in weight_trainable_flags(layer, self.trainable, top=False)]

    @serialized
    def set_weights(self, weights):
        """Keras's model.set_weights: every weight of every layer, in get_weights order
        and shapes; checked whole before anything changes (ShapeError naming the first
        layer that does not fit)."""
        from .layers.model import weight_shapes

        weights = list(weights)
        shapes = [weight_shapes(layer) for layer in self.graph.layers]
        if len(weights) != sum(map(len, shapes)):
            raise ShapeError(f"set_weights expects {sum(map(len, shapes))} arrays (as the "
                             f"model's get_weights), got {len(weights)}", path=self.path)
        pieces, start = [], 0
        for layer, expected in zip(self.graph.layers, shapes):
            arrays = weights[start:start + len(expected)]
            start += len(expected)
            got = [tuple(np.shape(a)) for a in arrays]
            if got != expected:  # validate everything first: all or nothing
                raise ShapeError(f"set_weights: the layer's weights have shapes {expected}, "
                                 f"got {got}", path=self.path, layer=layer.name,
                                 layer_class=layer.class_name)
            pieces.append((layer, arrays))
        for layer, arrays in pieces:
            if arrays:
                layer.set_weights(arrays)

    def _apply_weights(self, values):
        """New Keras-order values {layer: arrays} (the store holds them): write them where
        the plans read them, the trainer's params for live layers and the packed weights
        (re-folded with their BatchNormalization) for the rest."""
        from .plan.weights import layers_packed_from, pack_layer

        trainer = self.trainer
        if trainer is not None:
            for layer, arrays in values.items():
                if layer in trainer.live:
                    layer.live_pack(arrays, trainer.views(layer))
        with self.store.open() as read:
            for layer in layers_packed_from(self.layout, values):
                pack_layer(self.layout, layer, self.executor.weights, read)

    @property
    def trainable_weights(self):
        """Arrays of the weights Keras's model.trainable_weights lists (what trains)."""
        return [w for w, f in zip(self.get_weights(), self._weight_flags()) if f]

    @property
    def non_trainable_weights(self):
        return [w for w, f in zip(self.get_weights(), self._weight_flags()) if not f]

    @serialized
    def memory_plan(self, input_shape=None, batch_size=1, print_fn=None, detail=False,
                    training=False, samples=None, input_dtype="float32",
                    validation_samples=0, feature_cache="auto", augment=False):
        """The memory plan for one batch: arena, weights, scratch, naive sum and the
        live-bytes lower bound.  input_shape (without batch; a list for several inputs)
        defaults to the model's declared input shape.  Prints the plan (print_fn(text),
        print by default; print_fn=False only returns it; detail=True adds every buffer
        and the timeline) and returns the MemoryPlan.  samples=N adds the result arrays of
        predict on N samples.

        training=True (after compile): a fit on `samples` samples (default one batch) of
        input_dtype (uint8 images: "uint8") with validation_samples more: the arena of
        every plan it runs (frozen prefix, training and evaluation steps), the params,
        gradients and optimizer state, and everything the run holds (feature cache, batch
        gathers, staging, labels, step outputs: train/memory.py), as fit counts them."""
        from .plan.report import memory_plan_of

        shapes = self._full_input_shapes(input_shape, batch_size)
        if training:
            report = self._training_memory_plan(shapes, batch_size, samples, input_dtype,
                                                validation_samples, feature_cache, augment)
        else:
            report = memory_plan_of(self._plan_for(shapes), self.weights_buffer.size)
            if samples is not None:  # predict on that many: its result arrays
                outputs = self.output_shapes_for([s[1:] for s in shapes])
                report.run_parts = {"predict outputs": 4 * int(samples) * sum(
                    int(np.prod(s, dtype=np.int64)) for s in outputs)}
        if print_fn is not False:  # None: print, as summary() does; False: just return it
            (print if print_fn is None else print_fn)(report.format(detail))
        return report

    def _training_memory_plan(self, shapes, batch_size, samples, input_dtype,
                              validation_samples, feature_cache, augment):
        from .plan.report import memory_plan_of
        from .train.loops import run_memory

        self._require_compiled()
        trainer = self.trainer
        samples = batch_size if samples is None else int(samples)
        per_sample = [s[1:] for s in shapes]
        parts, run_shapes = run_memory(trainer, per_sample,
                                       [np.dtype(input_dtype).itemsize] * len(shapes), samples,
                                       int(validation_samples), batch_size, feature_cache,
                                       augment)
        boundary = trainer.boundary_shapes(shapes)
        plans = [trainer._build(kind, boundary) for kind in ("train", "eval")]
        if trainer.setup.prefix.nodes:
            plans.append(trainer._build("prefix", trainer.chunk_shapes(shapes)))
        report = memory_plan_of(plans[0], self.weights_buffer.size)
        # One arena serves the prefix chunks, the training and the evaluation steps.
        report.input_shapes = shapes
        report.arena_bytes = 4 * trainer.arena_for(run_shapes)
        report.lower_bound_bytes = 4 * max(p.lower_bound_floats for p in plans)
        report.naive_bytes = 4 * max(p.naive_floats for p in plans)
        report.scratch_bytes = max(memory_plan_of(p, 0).scratch_bytes for p in plans)
        report.training_bytes = trainer.state_bytes()
        report.run_parts = parts
        return report

    def _full_input_shapes(self, input_shape, batch_size):
        declared = [tuple(t.shape) for t in self.graph.inputs]
        if input_shape is None:
            shapes = declared
        elif len(declared) == 1 and input_shape and not isinstance(input_shape[0], (list, tuple)):
            shapes = [tuple(input_shape)]
        else:
            shapes = [tuple(s) for s in input_shape]
        if len(shapes) != len(declared):
            raise ShapeError(f"the model takes {len(declared)} inputs, got shapes {shapes}",
                             path=self.path)
        for given, want in zip(shapes, declared):
            if any(d is None for d in given):
                raise ShapeError(f"input shape {(None,) + given} has unknown dimensions; pass "
                                 f"input_shape=(...) with every dimension", path=self.path)
            if len(given) != len(want) or any(w is not None and w != g for w, g in zip(want, given)):
                raise ShapeError(f"input shape {given} does not match the model's {want}",
                                 path=self.path)
        return [(int(batch_size),) + tuple(s) for s in shapes]

    # --- inference ---------------------------------------------------------------------
    def predict(self, x, batch_size=None, verbose=0, out=None):
        """Outputs for inputs x (array, or list/dict of arrays for several inputs; any
        numeric dtype, uint8 images say), in batches of batch_size (default 32).  Returns
        an array, or a list for several outputs.  Each batch is converted to float32 as
        it is copied into the plan's arena, so nothing the size of x is ever made; with
        `out` (an array, or a list for several outputs, float32 C-contiguous of the output
        shape) nothing at all is allocated once the plan for this batch shape exists.

        Memory is that of one batch whatever len(x): the output shapes come from shape
        inference, and at most two plans run (batch_size, and a partial last batch),
        cached per input shape (the MAX_CACHED_PLANS most recent).  With a memory budget,
        the plans and the result arrays are checked before the first batch runs."""
        inputs = self._standardize_inputs(x, convert=False)
        n = inputs[0].shape[0]
        batch_size = DEFAULT_BATCH_SIZE if batch_size is None else _positive_int(
            batch_size, "batch_size")
        batch_size = max(1, min(batch_size, n))
        sizes = [batch_size] * (n // batch_size) + ([n % batch_size] if n % batch_size else [])
        with self.executor.lock:  # plans, the plan cache and the arena are shared
            outputs = self._output_arrays(out, n, inputs)
            if out is None and self.memory_budget is not None:
                self._check_predict_budget(inputs, sizes, outputs)
            plans = {size: self._plan_for([(size,) + a.shape[1:] for a in inputs])
                     for size in set(sizes)}
            start = 0
            for size in sizes:
                stop = start + size
                self.executor(plans[size], [a[start:stop] for a in inputs],
                              [o[start:stop] for o in outputs])
                start = stop
        return outputs[0] if len(outputs) == 1 else outputs

    @serialized
    def profile(self, x, repeats=20, warmup=2, print_fn=None, top=None):
        """Run the batch x (its plan: inputs of x's shape) repeats times and report, per op,
        its kind, layer, output shape, median time, share of the total and GFLOP/s, and a
        summary by op kind (print_fn(text), print by default, False: only return it; top=N
        lists the N slowest ops).  Returns a plan/profile.Profile."""
        from . import _kernels
        from .plan.profile import profile_plan

        inputs = self._standardize_inputs(x, convert=False)
        shapes = [a.shape for a in inputs]
        plan = self._plan_for(shapes)
        executor = self.executor
        executor.bind(plan, inputs)

        def run_timed(seconds):
            _kernels.run_plan_timed(plan.ops, plan.fparams, executor.arena, executor.weights,
                                    plan.arena_floats, plan.gemm_isa[2], seconds,
                                    executor.params, executor.grads, plan.nthreads)

        result = profile_plan(plan, run_timed, _positive_int(repeats, "repeats"), int(warmup),
                              shapes, plan.nthreads)
        if print_fn is not False:
            (print if print_fn is None else print_fn)(result.format(top))
        return result

    def __call__(self, x, training=False):
        """Keras's model(x): the outputs for the batch x (run in batches of 32 inside:
        every op is per sample at inference, so the numbers are the same)."""
        if training:
            raise NotImplementedError("call with training=True: use train_on_batch/fit")
        return self.predict(x)

    def _check_predict_budget(self, inputs, sizes, outputs):
        """MemoryBudgetError before any batch: the weights, the arena of the largest batch
        plan (planned for its shapes only), the training state and the result arrays."""
        from .plan.budget import check_budget

        arena = self.executor.arena.size
        for size in set(sizes):
            shapes = [(size,) + a.shape[1:] for a in inputs]
            key = (tuple(tuple(s) for s in shapes), self._num_threads)
            plan = self._plans.get(key) or build_plan(
                self.flat, shapes, self.path, self.layout.regions,
                self.trainer.live if self.trainer is not None else None, self._num_threads)
            arena = max(arena, plan.arena_floats)
        extra = {"predict outputs": sum(o.nbytes for o in outputs)}
        if self.trainer is not None:
            extra["params, gradients, optimizer state"] = self.trainer.state_bytes()
        check_budget(self.memory_budget, weights_bytes=4 * self.weights_floats,
                     arena_bytes=4 * arena, path=self.path,
                     what=f"predict on {len(outputs[0])} samples in batches of {max(sizes)}",
                     extra=extra)

    def output_shapes_for(self, sample_shapes):
        """Per-sample output shapes for per-sample input shapes, by shape inference (no
        plan is made)."""
        # (A list, not a generator: tuple() of a generator leaves 48 bytes behind per call
        # in CPython 3.11, which the steady-state test counts.)
        key = tuple([tuple(s) for s in sample_shapes])
        found = self._output_shapes.get(key)
        if found is None:  # kept per input shape (steady-state predict allocates nothing)
            shapes = concrete_shapes(self.flat, [(1,) + s for s in key], self.path)
            found = [shapes[t][1:] for t in self.flat.outputs]
            if len(self._output_shapes) >= 4 * MAX_CACHED_PLANS:
                self._output_shapes.clear()
            self._output_shapes[key] = found
        return found

    def _output_arrays(self, out, n, inputs):
        shapes = [(n,) + tuple(s) for s in self.output_shapes_for([a.shape[1:] for a in inputs])]
        if out is None:
            return [np.empty(shape, dtype=np.float32) for shape in shapes]
        outs = list(out) if isinstance(out, (list, tuple)) else [out]
        if len(outs) != len(shapes):
            raise ShapeError(f"out has {len(outs)} arrays, the model has {len(shapes)} outputs",
                             path=self.path)
        for i, (array, shape) in enumerate(zip(outs, shapes)):
            if (not isinstance(array, np.ndarray) or array.dtype != np.float32
                    or array.shape != tuple(shape) or not array.flags.c_contiguous
                    or not array.flags.writeable):
                raise ShapeError(f"out[{i}] must be a writable C-contiguous float32 array of "
                                 f"shape {tuple(shape)}", path=self.path)
        return outs

    def declared_input_shapes(self, input_shape=None, batch_size=1):
        """Full input shapes for a batch, from input_shape or the model's declaration;
        None when some dimension is unknown (planning waits for the first predict)."""
        if input_shape is not None:
            return self._full_input_shapes(input_shape, batch_size)
        declared = [tuple(t.shape) for t in self.graph.inputs]
        if any(d is None for shape in declared for d in shape):
            return None
        return [(batch_size,) + shape for shape in declared]

    def _plan_for(self, input_shapes):
        """The plan for these full input shapes (list of tuples), planning if needed."""
        last = self._last_plan
        if (last is not None and last.input_shapes == input_shapes
                and last.nthreads == self._num_threads):
            return last  # steady state: no hashing, no dict work, nothing allocated
        key = (tuple(tuple(s) for s in input_shapes), self._num_threads)
        plan = self._plans.pop(key, None)
        if plan is None:
            live = self.trainer.live if self.trainer is not None else None
            return self.cache_plan(build_plan(self.flat, input_shapes, self.path,
                                              self.layout.regions, live, self._num_threads))
        self._plans[key] = plan  # re-inserted: now the most recently used
        self._last_plan = plan
        return plan

    def cache_plan(self, plan):
        """Keep a plan (after checking it against the memory budget) and size the arena."""
        from .plan.budget import check_budget

        if plan.gemm_isa != self._packed_isa:
            raise RuntimeError("the GEMM variant changed after this model was loaded; "
                               "reload the model")
        arena_floats = max(self.executor.arena.size, plan.arena_floats)
        training = {} if self.trainer is None else {
            "params, gradients, optimizer state": self.trainer.state_bytes()}
        check_budget(self.memory_budget, weights_bytes=4 * self.weights_floats,
                     arena_bytes=4 * arena_floats, path=self.path,
                     what=f"the plan for inputs {plan.input_shapes}", extra=training)
        self._plans[(tuple(tuple(s) for s in plan.input_shapes), plan.nthreads)] = plan
        while len(self._plans) > MAX_CACHED_PLANS:
            del self._plans[next(iter(self._plans))]  # least recently used
        self._last_plan = plan
        self.executor.reserve(plan.arena_floats)
        return plan

    def _standardize_inputs(self, x, convert=True):
        """Validated input arrays; float32 C-contiguous unless convert=False (training
        datasets stay in their dtype, uint8 images say, and convert per batch)."""
        declared = self.graph.inputs
        if isinstance(x, dict):
            names = self.input_names
            missing = [n for n in names if n not in x]
            if missing:
                raise ShapeError(f"inputs {missing} missing from the dict (expects {names})",
                                 path=self.path)
            x = [x[n] for n in names]
        elif not isinstance(x, (list, tuple)):
            x = [x]
        if len(x) != len(declared):
            raise ShapeError(f"the model takes {len(declared)} input(s), got {len(x)}",
                             path=self.path)
        arrays = []
        for i, (array, tensor) in enumerate(zip(x, declared)):
            array = np.asarray(array)
            if array.dtype.kind not in "fiub":
                raise ShapeError(f"input {i} ({tensor.key[0]!r}) has dtype {array.dtype}; "
                                 f"numbers expected", path=self.path)
            if convert:
                array = np.ascontiguousarray(array, dtype=np.float32)
            expected = (None,) + tuple(tensor.shape)
            if array.ndim != len(expected) or any(
                    e is not None and e != g for e, g in zip(expected[1:], array.shape[1:])):
                raise ShapeError(f"input {i} ({tensor.key[0]!r}) expects shape {expected}, "
                                 f"got {array.shape}", path=self.path)
            if any(d == 0 for d in array.shape[1:]):
                raise ShapeError(f"input {i} has an empty dimension: {array.shape}",
                                 path=self.path)
            arrays.append(array)
        if len({a.shape[0] for a in arrays}) > 1:
            raise ShapeError(f"inputs have different batch sizes {[a.shape[0] for a in arrays]}",
                             path=self.path)
        return arrays

    # --- training ----------------------------------------------------------------------
    trainer = None  # set by compile()
    stop_training = False
    _verbose_fit = False

    @serialized
    def compile(self, optimizer="rmsprop", loss=None, metrics=None, memory_budget=None):
        """Prepare training, with Keras's names: optimizer (an edgecore.optimizers object or
        "sgd"/"adam"/"adamw"/"rmsprop"), loss (an edgecore.losses object or a Keras loss
        name), metrics (["accuracy"]).  The layers whose `trainable` flag is set (and whose
        enclosing models' are) train; everything else stays bit-for-bit as loaded.

        The params, gradients and optimizer state are sized here and checked against
        memory_budget (default: the one given to load) before anything is allocated;
        the activation arena is checked when a batch size is first planned (fit checks
        every shape it will use before its first step)."""
        from .plan.budget import check_budget, parse_bytes
        from .plan.weights import layout_weights
        from .train import losses as losses_module
        from .train import optimizers as optimizers_module
        from .train.setup import analyze
        from .train.trainer import Trainer

        if loss is None:
            raise ValueError("compile needs a loss")
        optimizer = optimizers_module.get(optimizer)
        loss = losses_module.get(loss)
        metrics = losses_module.metric_names(metrics)
        budget = parse_bytes(memory_budget) if memory_budget is not None else self.memory_budget
        with self.executor.lock:
            setup = analyze(self.graph, self.trainable, self.path)
            layout = layout_weights(setup.packed_nodes())
            trainer = Trainer(self, setup, layout, optimizer, loss, metrics, budget)
            check_budget(budget, weights_bytes=4 * layout.floats, arena_bytes=0,
                         path=self.path, what="training",
                         extra={"params, gradients, optimizer state": trainer.state_bytes()})
            self._rebind(setup.flat, layout, trainer)
        self.memory_budget, self.optimizer, self.loss = budget, optimizer, loss

    def _rebind(self, flat, layout, trainer):
        """Replace the packed weights (and the trainer) by ones made for `flat`.  Values
        a previous trainer changed stay the model's: those of layers the new one does not
        hold live go to the WeightStore's memory, and every new buffer is filled from the
        store.  The old buffers are freed before the new ones are allocated."""
        from .plan.weights import pack_weights

        store, old = self.store, self.trainer
        if old is not None:
            keep = set(trainer.setup.live) if trainer is not None else set()
            for layer in old.changed_layers():
                if layer not in keep:
                    store.memory[layer] = old.weights_of(layer)
            previous = {layer: old.weights_of(layer) for layer in old.setup.live
                        if trainer is not None and layer in keep}
        else:
            previous = {}
        store.live = None
        self.trainer, self._plans, self._last_plan = None, {}, None
        self._output_shapes = {}
        self.executor.release()
        with store.open() as from_store:
            read = lambda layer, scratch=None: (previous[layer] if layer in previous
                                                else from_store(layer, scratch))
            self.executor.weights = pack_weights(layout, read)
            if trainer is not None:
                trainer.allocate()
                trainer.fill_params(read)
        self.flat, self.layout = flat, layout
        if trainer is not None:
            self.executor.params, self.executor.grads = trainer.params, trainer.grads
            store.live = trainer
            self.trainer = trainer

    def _require_compiled(self):
        if self.trainer is None:
            raise RuntimeError("the model must be compiled first: model.compile(optimizer=..., "
                               "loss=...)")

    @serialized
    def train_on_batch(self, x, y, return_dict=False):
        """One optimizer step on one batch; returns the loss (and metrics) of that batch
        as Keras 3 does (metrics are not accumulated across calls)."""
        from .train.loops import train_on_batch

        self._require_compiled()
        return _keras_result(train_on_batch(self, x, y), return_dict)

    @serialized
    def evaluate(self, x=None, y=None, batch_size=None, verbose=0, return_dict=False):
        """Loss (and metrics) over all samples, inference mode, like Keras; x may also
        yield (x, y) batches (then y is None)."""
        from .train.loops import evaluate

        self._require_compiled()
        return _keras_result(evaluate(self, x, y, batch_size or DEFAULT_BATCH_SIZE), return_dict)

    @serialized
    def fit(self, x=None, y=None, batch_size=None, epochs=1, verbose="auto", callbacks=None,
            validation_split=0.0, validation_data=None, shuffle=True, initial_epoch=0,
            steps_per_epoch=None, *, augment=None, feature_cache="auto",
            feature_cache_dir=None, max_batch_size=32, checkpoint=None, resume=False):
        """Train like Keras's fit and return a History.

        x, y: arrays (or lists/dicts of arrays for several inputs, any numeric dtype), or x
        alone yielding (x, y) batches (a generator or dataset; steps_per_epoch caps an
        epoch).  Labels of shape (N,) for a one-unit output are taken as (N, 1), as Keras
        does.  validation_split: the last fraction of x/y (before shuffling) is held out,
        as in Keras; validation_data, when given, wins.

        Memory: everything the run holds (the feature cache, the batch gathers, staging,
        the step outputs, the labels) is sized before the first step and, with a memory
        budget, checked with the model's buffers and the largest plan's arena
        (MemoryBudgetError before any work).  batch_size="auto": the largest batch, at
        most max_batch_size (32, Keras's default batch, unless raised), whose run fits.

        Beyond Keras: augment (a callable(x_batch, rng) -> x_batch applied to each batch;
        it bypasses the feature cache), feature_cache ("auto": cache the frozen prefix's
        output per sample, in memory or, when the budget says so, in a temporary file in
        feature_cache_dir (default: the system's temporary directory); True, False,
        "disk"), checkpoint (a .h5 path written atomically after each epoch, optimizer
        state included) and resume (continue from that checkpoint if it exists)."""
        from .train.loops import fit

        self._require_compiled()
        return fit(self, x, y, batch_size, epochs, verbose, callbacks, validation_data,
                   shuffle, initial_epoch, augment, feature_cache, checkpoint, resume,
                   validation_split, steps_per_epoch, feature_cache_dir, max_batch_size)

    @serialized
    def save(self, path):
        """Write the model as a legacy Keras .h5 (Keras 3 spelling) that
        `keras.models.load_model` opens; .keras paths are refused (ValueError).  Atomic:
        an existing file at path is replaced only once the new one is complete."""
        from .formats.save_hdf5 import check_save_path, save_hdf5

        path = check_save_path(path)
        with self._weights_reader() as weights_of:
            save_hdf5(self, path, weights_of=weights_of)
        self._adopt(path)

    def _adopt(self, path):
        """After a save: the file just written holds every value of the model, so the
        model reads its stored values from it from now on (never again from the file it
        was loaded from, which may be replaced, or be the one just saved over), and the
        copies held in memory go."""
        from .formats.keras3_config import keras3_name
        from .loader import load_graph

        model_file, _, graph = load_graph(path)
        model_file.close()

        def key(scope, layer):
            return tuple(keras3_name(n) for n in scope + (layer.name,))

        saved = {key(scope, layer): layer for scope, layer in walk_layers(graph)}
        mapping = {layer: saved[key(scope, layer)] for scope, layer in walk_layers(self.graph)
                   if layer.variables()}
        self.store.adopt(path, graph, mapping)

    def _weights_reader(self):
        """A context giving weights_of(layer) that reads through one open model file
        (a save asks for every layer: one open instead of one per layer)."""
        import contextlib

        @contextlib.contextmanager
        def reader():
            with self.executor.lock, self.store.open() as read:
                yield lambda layer: self.store.weights_of(layer, read)

        return reader()


def load_model(path, memory_budget=None, input_shape=None, rewrites=None, num_threads=None):
    """The whole of `edgecore.load`: read the config, plan, check the budget, and only then
    read and pack the weights (see edgecore.load for the arguments)."""
    # The loader (and with it h5py) is imported here, not at `import edgecore`.
    from .loader import file_reader, load_graph

    from .train.checkpoint import read_delta

    if _is_hdf5(path):
        delta = read_delta(path)
        if delta is not None:
            return _load_delta(path, delta, memory_budget, input_shape, rewrites, num_threads)
    model_file, ctx, graph = load_graph(path)
    try:
        return assemble(graph, ctx, model_file.spec.trainable, file_reader(model_file, graph),
                        memory_budget, input_shape, rewrites, num_threads)
    finally:
        model_file.close()


def _is_hdf5(path):
    import os

    from .formats import sniff

    return os.path.isfile(path) and sniff(path) == "hdf5"


def _load_delta(path, delta, memory_budget, input_shape, rewrites, num_threads=None):
    """A per-epoch checkpoint of fit (train/checkpoint.py): its config and the values that
    training changed, the rest from the model file it refers to (checked unchanged)."""
    from .formats.config import parse_model_config
    from .formats.keras3_config import KERAS_VERSION
    from .graph.graph import build_graph
    from .layers.registry import layer_factory
    from .loader import LoadContext, WeightStore, load_graph, record_weight_shapes
    from .train.checkpoint import check_reference, layer_key

    import json

    import h5py

    meta, values = delta
    source = check_reference(meta, path)
    with h5py.File(path, "r") as f:
        config = json.loads(f.attrs["model_config"])
    ctx = LoadContext(str(path), 3, KERAS_VERSION, "edgecore-delta-checkpoint", config)
    graph = build_graph(parse_model_config(config, 3, str(path)), ctx, layer_factory(ctx))
    record_weight_shapes(graph, ctx)
    source_file, _, source_graph = load_graph(source)
    source_file.close()
    by_key = {layer_key(scope, layer): layer for scope, layer in walk_layers(source_graph)}
    mapping, memory = {}, {}
    for scope, layer in walk_layers(graph):
        key = layer_key(scope, layer)
        if key in values:
            memory[layer] = values[key]
        elif key in by_key:
            mapping[layer] = by_key[key]
    ctx.store = WeightStore(source, source_graph, mapping, memory,
                            fingerprint=tuple(meta["identity"]))
    with ctx.store.open() as read:
        return assemble(graph, ctx, config.get("config", {}).get("trainable", True), read,
                        memory_budget, input_shape, rewrites, num_threads)


def assemble(graph, ctx, trainable, read, memory_budget=None, input_shape=None,
             rewrites=None, num_threads=None):
    """A Model from a built graph (its weights in ctx.store): flatten, rewrite, lay out
    the weights, check the budget (weights alone, then the batch-1 plan when the input
    shape is known), and only then read (read(layer, scratch)) and pack the weights."""
    from .graph.flatten import flatten
    from .loader import INFERENCE_REWRITES
    from .plan.budget import check_budget, parse_bytes
    from .plan.weights import layout_weights, pack_weights

    budget = parse_bytes(memory_budget)
    flat = flatten(graph)
    for rewrite in INFERENCE_REWRITES if rewrites is None else rewrites:
        rewrite(flat)
    layout = layout_weights(flat.nodes)
    model = Model(graph, flat, layout, ctx, trainable=trainable, memory_budget=budget,
                  num_threads=num_threads)
    shapes = model.declared_input_shapes(input_shape)
    if budget is not None:
        check_budget(budget, weights_bytes=4 * layout.floats, arena_bytes=0, path=ctx.path,
                     what="the packed weights alone")
    if shapes is not None:
        model.cache_plan(build_plan(flat, shapes, ctx.path, layout.regions,
                                    nthreads=model.num_threads))  # checks the budget
    model.executor.weights = pack_weights(layout, read)
    return model


def _positive_int(value, what):
    """A positive int from a user's argument, or a ValueError that says so."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
        raise ValueError(f"{what} must be a positive integer, got {value!r}")
    return int(value)


def _keras_result(logs, return_dict):
    """Keras's return convention: the dict, or the values in order (a scalar alone)."""
    if return_dict:
        return logs
    values = list(logs.values())
    return values[0] if len(values) == 1 else values
