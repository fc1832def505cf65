# edgecore._kernels: every numeric kernel and the plan runner, in one compile unit.
#
# Design (see setup.py for why this is one extension):
#   * each family lives in its own .pxi, included below; forward and backward of a family
#     sit side by side in its file;
#   * a family exposes `cdef ... noexcept nogil` cores taking raw pointers and sizes, and a
#     thin checked `def` wrapper over typed memoryviews (`const float[...]` inputs so frozen,
#     read-only weights are accepted) that validates every shape before releasing the GIL;
#   * the plan runner (runner.pxi) calls the cores directly: the planner validated shapes
#     once, at compile time;
#   * no kernel allocates: scratch comes from the arena, sized by `<kernel>_scratch_floats`;
#   * training adds the backward of each trainable family beside its forward, plus
#     losses.pxi (losses fused with their gradient), optimizers.pxi (Keras's update rules,
#     arithmetic in f32_optimizer_updates.h) and dropout.pxi.
#   * threads: a core that runs in parallel takes `int nthreads` last (threads.pxi has the
#     convention); the runner passes the plan's thread count.
# Non-goals: dtypes other than float32.

from libc.math cimport INFINITY, NAN

include "common.pxi"
include "threads.pxi"
include "activations.pxi"
include "activations_k3.pxi"
include "gemm.pxi"
include "dense.pxi"
include "conv2d.pxi"
include "dwconv2d.pxi"
include "pooling.pxi"
include "softmax.pxi"
include "rowact.pxi"
include "elementwise.pxi"
include "normalization.pxi"
include "batchnorm.pxi"
include "losses.pxi"
include "optimizers.pxi"
include "dropout.pxi"
include "layout.pxi"
include "runner.pxi"
