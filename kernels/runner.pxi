# The plan runner: executes a compiled plan's op table in one nogil loop.
#
# A plan (edgecore/plan/planner.py) is an int64 table with one row per op and a float32
# table beside it.  Columns of the int row:
#   0 opcode
#   1 y   2 x0   3 x1   4 w   5 b   6 scratch   7 y2   8 x2      operand refs
#   9 activation code
#   10..  op parameters (sizes, strides, geometry), documented per opcode below
# Float row: 0 alpha, 1 max_value, 2 threshold (the fused activation), 3.. op parameters.
# Opcodes 43 and 48..55 are reserved (unused on this branch); 56..61 are the row
# activations (log_softmax, sparsemax, glu) and their backward.
# Operand refs: -1 for none, else (base << 40) | float offset; bases (plan/builder.py):
# 0 the activation arena, 1 the packed frozen weights, 2 the trainable parameters and the
# frozen parameters training reads (Keras layout), 3 their gradients.  Forward ops use
# y..scratch; backward and loss ops also y2 (a second output) and x2 (a third input), as
# does the training-mode BatchNorm forward (y2 = the statistics it saves for the backward,
# x2 = the moving statistics, which it updates in place).  The planner validated every
# shape and size when it built the table, so the loop calls the kernel cores without
# checks; run_plan only checks that the table and buffers are the ones the plan was made
# for.  nthreads is the plan's thread count (the one its scratch was sized for); the
# runner passes it to every core that runs in parallel (threads.pxi), and with 1 no
# OpenMP region is entered.

from libc.string cimport memcpy
from libc.stdint cimport uint64_t
from posix.time cimport clock_gettime, timespec, CLOCK_MONOTONIC

DEF REF_SHIFT = 40
DEF ROW_INTS_ = 36
DEF ROW_FLOATS_ = 8
DEF N_BASES = 4
DEF P = 10   # first parameter column
DEF FP = 3   # first float parameter column

ROW_INTS = ROW_INTS_
ROW_FLOATS = ROW_FLOATS_
REF_BASE_SHIFT = REF_SHIFT
# The buffers an operand ref may point into, by base index (run_plan fills bases[] so).
BASES = {"arena": 0, "weights": 1, "params": 2, "grads": 3}
ROW_PARAM_INTS = ROW_INTS_ - P
ROW_PARAM_FLOATS = ROW_FLOATS_ - FP

cdef enum OpCode:
    OP_COPY = 0                # n
    OP_GEMM = 1                # m, n, k                      y[m,n] = act(x0[m,k] @ w + b)
    OP_CONV2D = 2              # ConvGeom fields in struct order
    OP_DWCONV2D = 3            # DwConvGeom fields in struct order
    OP_MAXPOOL2D = 4           # PoolGeom fields in struct order
    OP_AVGPOOL2D = 5           # PoolGeom fields in struct order
    OP_GLOBAL_AVGPOOL = 6      # n, hw, c
    OP_GLOBAL_MAXPOOL = 7      # n, hw, c
    OP_ACTIVATION = 8          # count
    OP_SOFTMAX = 9             # outer, n, inner
    OP_BINARY = 10             # op, rank, shape[rank], x0 strides[rank], x1 strides[rank]
    OP_SCALE = 11              # count; float: scale
    OP_CHANNEL_AFFINE = 12     # rows, c; w = scale[c], b = shift[c]
    OP_PRELU = 13              # n, per_sample, rank, sample_shape[rank], alpha_strides[rank]
    OP_LAYERNORM = 14          # rows, cols, NormMode; float: epsilon; w gamma, b beta
    OP_WINDOW_COPY = 15        # n, h, w, c, oh, ow, top, left
    OP_CONCAT = 16             # outer, inner_x, inner_y, offset
    OP_UPSAMPLE_NEAREST = 17   # n, h, w, c, fh, fw
    OP_UPSAMPLE_BILINEAR = 18  # n, h, w, c, oh, ow
    OP_TRANSPOSE = 19          # rank, x_shape[rank], perm[rank]
    # --- training: forward helpers (live weights are kept in Keras layout) -------------
    OP_PACK_GEMM_B = 20        # k, n, groups         y = packed panels of x0 (k, n * groups),
                               #                      one (k, n) block per group (0: one)
    OP_PACK_GEMM_BIAS = 21     # n, groups            y = packed bias from x0 (n * groups)
    OP_BATCHNORM_FORWARD = 22  # rows, c; f: epsilon  inference mode: x0 = x, w = gamma, b = beta
                               #   (either may be -1), x2 = moving [mean(c), variance(c)]
    OP_DROPOUT_FORWARD = 23    # n, seed; f: rate     y = x0 * y2, y2 = the mask
    # --- training: backward (dx = y, may be -1; param gradients in y2 and b) ----------
    OP_DENSE_BACKWARD = 24     # m, k, n              x0 = x, x1 = dy, w = kernel (k, n)
    OP_CONV2D_BACKWARD = 25    # ConvGeom (groups too) x0 = x, x1 = dy, w = kernel HWIO (I = C/groups)
    OP_DWCONV2D_BACKWARD = 26  # DwConvGeom           x0 = x, x1 = dy, w = kernel HWCM
    OP_ACTIVATION_BACKWARD = 27  # n                  x0 = x, x1 = dy, x2 = y
    OP_SOFTMAX_BACKWARD = 28   # outer, n, inner      x1 = dy, x2 = y
    OP_MAXPOOL2D_BACKWARD = 29   # PoolGeom           x0 = x, x1 = dy
    OP_AVGPOOL2D_BACKWARD = 30   # PoolGeom           x1 = dy
    OP_GLOBAL_AVGPOOL_BACKWARD = 31  # n, hw, c       x1 = dy
    OP_GLOBAL_MAXPOOL_BACKWARD = 32  # n, hw, c       x0 = x, x1 = dy
    OP_BATCHNORM_BACKWARD = 33  # rows, c; f: epsilon  inference mode: x0 = x, x1 = dy,
                                #   w = gamma, x2 = moving [mean(c), variance(c)]; y2 = dgamma, b = dbeta
    OP_DROPOUT_BACKWARD = 34   # n                    x0 = mask, x1 = dy
    OP_CONCAT_BACKWARD = 35    # outer, inner_x, inner_y, offset   x1 = dy
    # --- training: losses (y = dL/dlogits, y2 = per-sample losses) --------------------
    OP_SPARSE_SOFTMAX_CE = 36  # rows, classes; f: -, grad_scale   x0 = logits, x1 = int64 labels
    OP_SOFTMAX_CE = 37         # rows, classes; f: smoothing, grad_scale
    OP_SIGMOID_BCE = 38        # rows, cols; f: smoothing, grad_scale
    OP_MSE = 39                # rows, cols; f: -, grad_scale
    # --- training: normalization with batch statistics, and LayerNorm's backward --------
    OP_BATCHNORM_TRAIN_FORWARD = 40   # rows, c, bessel; f: momentum, epsilon, 1 - momentum
                                      #   x0 = x, w = gamma, b = beta (either may be -1);
                                      #   x2 = moving [mean(c), variance(c)], UPDATED in place;
                                      #   y2 = saved [batch mean(c), inv_std(c)], written
    OP_BATCHNORM_TRAIN_BACKWARD = 41  # rows, c        x0 = x, x1 = dy, w = gamma, x2 = saved;
                                      #   y = dx, y2 = dgamma, b = dbeta (each may be -1)
    OP_LAYERNORM_BACKWARD = 42        # rows, cols, NormMode; f: epsilon   x0 = x, x1 = dy,
                                      #   w = gamma; y = dx, y2 = dgamma, b = dbeta (each may be -1)
    # 43 is reserved (normalization family)
    # --- training: backward of broadcasting merges, PReLU, UpSampling2D ----------------
    # (a gradient ref of -1: not wanted, e.g. for a constant operand in the weights buffer)
    OP_BINARY_BACKWARD = 44    # as OP_BINARY         x0 = a, x1 = dy, x2 = b; y = da, y2 = db
    OP_PRELU_BACKWARD = 45     # as OP_PRELU          x0 = x, x1 = dy, w = alpha; y = dx, y2 = dalpha
    OP_UPSAMPLE_NEAREST_BACKWARD = 46   # n, h, w, c, fh, fw (h, w: the input's)   x1 = dy
    OP_UPSAMPLE_BILINEAR_BACKWARD = 47  # n, h, w, c, oh, ow                        x1 = dy
    # 48..55: reserved
    # --- row activations over the last axis besides softmax (rowact.pxi) --------------
    OP_LOG_SOFTMAX = 56        # rows, n              y = log_softmax(x0), may be x0
    OP_SPARSEMAX = 57          # rows, n, SparsemaxMode   y = sparsemax(x0), may be x0;
                               #   scratch: sparsemax_scratch_floats(n)
    OP_GLU = 58                # rows, h              y (rows, h) = glu(x0 (rows, 2h))
    OP_LOG_SOFTMAX_BACKWARD = 59   # rows, n          x1 = dy, x2 = y; y = dx
    OP_SPARSEMAX_BACKWARD = 60     # rows, n, SparsemaxMode   x0 = x, x1 = dy; y = dx;
                                   #   scratch: sparsemax_scratch_floats(n)
    OP_GLU_BACKWARD = 61       # rows, h              x0 = x (rows, 2h), x1 = dy (rows, h); y = dx
    OP_COUNT = 62

OPCODES = {
    "copy": OP_COPY, "gemm": OP_GEMM, "conv2d": OP_CONV2D, "dwconv2d": OP_DWCONV2D,
    "maxpool2d": OP_MAXPOOL2D, "avgpool2d": OP_AVGPOOL2D, "global_avgpool": OP_GLOBAL_AVGPOOL,
    "global_maxpool": OP_GLOBAL_MAXPOOL, "activation": OP_ACTIVATION, "softmax": OP_SOFTMAX,
    "binary": OP_BINARY, "scale": OP_SCALE, "channel_affine": OP_CHANNEL_AFFINE,
    "prelu": OP_PRELU, "layernorm": OP_LAYERNORM, "window_copy": OP_WINDOW_COPY,
    "concat": OP_CONCAT, "upsample_nearest": OP_UPSAMPLE_NEAREST,
    "upsample_bilinear": OP_UPSAMPLE_BILINEAR, "transpose": OP_TRANSPOSE,
    "pack_gemm_b": OP_PACK_GEMM_B, "pack_gemm_bias": OP_PACK_GEMM_BIAS,
    "batchnorm_forward": OP_BATCHNORM_FORWARD, "dropout_forward": OP_DROPOUT_FORWARD,
    "dense_backward": OP_DENSE_BACKWARD, "conv2d_backward": OP_CONV2D_BACKWARD,
    "dwconv2d_backward": OP_DWCONV2D_BACKWARD, "activation_backward": OP_ACTIVATION_BACKWARD,
    "softmax_backward": OP_SOFTMAX_BACKWARD, "maxpool2d_backward": OP_MAXPOOL2D_BACKWARD,
    "avgpool2d_backward": OP_AVGPOOL2D_BACKWARD,
    "global_avgpool_backward": OP_GLOBAL_AVGPOOL_BACKWARD,
    "global_maxpool_backward": OP_GLOBAL_MAXPOOL_BACKWARD,
    "batchnorm_backward": OP_BATCHNORM_BACKWARD, "dropout_backward": OP_DROPOUT_BACKWARD,
    "concat_backward": OP_CONCAT_BACKWARD,
    "sparse_softmax_cross_entropy": OP_SPARSE_SOFTMAX_CE,
    "softmax_cross_entropy": OP_SOFTMAX_CE, "sigmoid_binary_cross_entropy": OP_SIGMOID_BCE,
    "mean_squared_error": OP_MSE,
    "batchnorm_train_forward": OP_BATCHNORM_TRAIN_FORWARD,
    "batchnorm_train_backward": OP_BATCHNORM_TRAIN_BACKWARD,
    "layernorm_backward": OP_LAYERNORM_BACKWARD,
    "binary_backward": OP_BINARY_BACKWARD, "prelu_backward": OP_PRELU_BACKWARD,
    "upsample_nearest_backward": OP_UPSAMPLE_NEAREST_BACKWARD,
    "upsample_bilinear_backward": OP_UPSAMPLE_BILINEAR_BACKWARD,
    "log_softmax": OP_LOG_SOFTMAX, "sparsemax": OP_SPARSEMAX, "glu": OP_GLU,
    "log_softmax_backward": OP_LOG_SOFTMAX_BACKWARD,
    "sparsemax_backward": OP_SPARSEMAX_BACKWARD, "glu_backward": OP_GLU_BACKWARD,
}
ROW_PARAM_START = P


cdef inline float* _ref(int64_t ref, float** bases) noexcept nogil:
    if ref < 0:
        return NULL
    return bases[ref >> REF_SHIFT] + (ref & ((<int64_t>1 << REF_SHIFT) - 1))


cdef void _run_op(const int64_t* r, const float* f, float** bases, int nthreads) noexcept nogil:
    cdef float* y = _ref(r[1], bases)
    cdef float* x0 = _ref(r[2], bases)
    cdef float* x1 = _ref(r[3], bases)
    cdef float* w = _ref(r[4], bases)
    cdef float* b = _ref(r[5], bases)
    cdef float* scratch = _ref(r[6], bases)
    cdef float* y2 = _ref(r[7], bases)
    cdef float* x2 = _ref(r[8], bases)
    cdef Activation act = make_activation(<int>r[9], f[0], f[1], f[2])
    cdef const int64_t* p = r + P
    cdef Py_ssize_t shape[6]
    cdef Py_ssize_t sa[6]
    cdef Py_ssize_t sb[6]
    cdef int perm[6]
    cdef int i, rank
    cdef ConvGeom cg
    cdef DwConvGeom dg
    cdef PoolGeom pg
    cdef int code = <int>r[0]
    if code == OP_COPY:
        if y != x0:
            par_copy(y, x0, p[0], nthreads)
    elif code == OP_GEMM:
        f32_gemm_forward(y, p[1], x0, p[2], w, b, p[0], p[1], p[2], &act, nthreads)
    elif code == OP_CONV2D:
        _fill(&cg, p, sizeof(ConvGeom) // sizeof(Py_ssize_t))
        conv2d_forward(y, x0, w, b, &cg, &act, scratch, nthreads)
    elif code == OP_DWCONV2D:
        _fill(&dg, p, sizeof(DwConvGeom) // sizeof(Py_ssize_t))
        dwconv2d_forward(y, x0, w, b, &dg, &act, nthreads)
    elif code == OP_MAXPOOL2D:
        _fill(&pg, p, sizeof(PoolGeom) // sizeof(Py_ssize_t))
        maxpool2d_forward(y, x0, &pg, nthreads)
    elif code == OP_AVGPOOL2D:
        _fill(&pg, p, sizeof(PoolGeom) // sizeof(Py_ssize_t))
        avgpool2d_forward(y, x0, &pg, nthreads)
    elif code == OP_GLOBAL_AVGPOOL:
        global_avgpool_forward(y, x0, p[0], p[1], p[2], nthreads)
    elif code == OP_GLOBAL_MAXPOOL:
        global_maxpool_forward(y, x0, p[0], p[1], p[2], nthreads)
    elif code == OP_ACTIVATION:
        activation_forward(y, x0, p[0], &act, nthreads)
    elif code == OP_SOFTMAX:
        softmax_forward(y, x0, p[0], p[1], p[2], nthreads)
    elif code == OP_BINARY:
        rank = <int>p[1]
        for i in range(rank):
            shape[i] = p[2 + i]
            sa[i] = p[2 + rank + i]
            sb[i] = p[2 + 2 * rank + i]
        binary_forward(y, x0, x1, <int>p[0], rank, shape, sa, sb, nthreads)
    elif code == OP_SCALE:
        scale_forward(y, x0, p[0], f[FP], nthreads)
    elif code == OP_CHANNEL_AFFINE:
        channel_affine_forward(y, x0, p[0], p[1], w, b, nthreads)
    elif code == OP_PRELU:
        rank = <int>p[2]
        for i in range(rank):
            shape[i] = p[3 + i]
            sa[i] = p[3 + rank + i]
        prelu_forward(y, x0, w, p[0], p[1], rank, shape, sa, nthreads)
    elif code == OP_LAYERNORM:
        layernorm_forward(y, x0, p[0], p[1], w, b, f[FP], <int>p[2], nthreads)
    elif code == OP_WINDOW_COPY:
        window_copy_forward(y, x0, p[0], p[1], p[2], p[3], p[4], p[5], p[6], p[7], nthreads)
    elif code == OP_CONCAT:
        concat_forward(y, x0, p[0], p[1], p[2], p[3], nthreads)
    elif code == OP_UPSAMPLE_NEAREST:
        upsample_nearest_forward(y, x0, p[0], p[1], p[2], p[3], p[4], p[5], nthreads)
    elif code == OP_UPSAMPLE_BILINEAR:
        upsample_bilinear_forward(y, x0, p[0], p[1], p[2], p[3], p[4], p[5], nthreads)
    elif code == OP_TRANSPOSE:
        rank = <int>p[0]
        for i in range(rank):
            shape[i] = p[1 + i]
            perm[i] = <int>p[1 + rank + i]
        transpose_forward(y, x0, rank, shape, perm)
    elif code >= OP_LOG_SOFTMAX:
        _run_row_activation_op(code, y, x0, x1, x2, scratch, p, nthreads)
    elif code >= OP_PACK_GEMM_B:
        _run_training_op(code, y, x0, x1, w, b, scratch, y2, x2, &act, p, f, nthreads)


cdef void _run_training_op(int code, float* y, float* x0, float* x1, float* w, float* b,
                           float* scratch, float* y2, float* x2, const Activation* act,
                           const int64_t* p, const float* f, int nthreads) noexcept nogil:
    cdef ConvGeom cg
    cdef DwConvGeom dg
    cdef PoolGeom pg
    cdef uint64_t counter
    cdef Py_ssize_t grp, groups
    if code == OP_PACK_GEMM_B:
        # A grouped Conv2D's HWIO kernel is (k, n * groups): group g packs columns g*n..
        groups = p[2] if p[2] > 1 else 1
        for grp in range(groups):
            f32_gemm_pack_b(y + grp * gemm_packed_floats(p[0], p[1]), x0 + grp * p[1],
                            p[1] * groups, p[0], p[1], nthreads)
    elif code == OP_PACK_GEMM_BIAS:
        groups = p[1] if p[1] > 1 else 1
        for grp in range(groups):
            f32_gemm_pack_bias(y + grp * gemm_packed_bias_floats(p[0]), x0 + grp * p[0], p[0])
    elif code == OP_BATCHNORM_FORWARD:
        batchnorm_inference_forward(y, x0, p[0], p[1], w, b, x2, f[FP], nthreads)
    elif code == OP_DROPOUT_FORWARD:
        counter = <uint64_t>p[1]  # a fresh seed per step, written by the trainer
        dropout_forward(y, y2, x0, p[0], f[FP], &counter, nthreads)
    elif code == OP_DENSE_BACKWARD:
        dense_backward(y, y2, b, x0, w, x1, p[0], p[1], p[2], scratch, nthreads)
    elif code == OP_CONV2D_BACKWARD:
        _fill(&cg, p, sizeof(ConvGeom) // sizeof(Py_ssize_t))
        conv2d_backward(y, y2, b, x0, w, x1, &cg, scratch, nthreads)
    elif code == OP_DWCONV2D_BACKWARD:
        _fill(&dg, p, sizeof(DwConvGeom) // sizeof(Py_ssize_t))
        dwconv2d_backward(y, y2, b, x0, w, x1, &dg)
    elif code == OP_ACTIVATION_BACKWARD:
        activation_backward(y, x1, x0, x2, p[0], act)
    elif code == OP_SOFTMAX_BACKWARD:
        softmax_backward(y, x1, x2, p[0], p[1], p[2], nthreads)
    elif code == OP_MAXPOOL2D_BACKWARD:
        _fill(&pg, p, sizeof(PoolGeom) // sizeof(Py_ssize_t))
        maxpool2d_backward(y, x1, x0, &pg, nthreads)
    elif code == OP_AVGPOOL2D_BACKWARD:
        _fill(&pg, p, sizeof(PoolGeom) // sizeof(Py_ssize_t))
        avgpool2d_backward(y, x1, &pg, nthreads)
    elif code == OP_GLOBAL_AVGPOOL_BACKWARD:
        global_avgpool_backward(y, x1, p[0], p[1], p[2], nthreads)
    elif code == OP_GLOBAL_MAXPOOL_BACKWARD:
        global_maxpool_backward(y, x1, x0, p[0], p[1], p[2], nthreads)
    elif code == OP_BATCHNORM_BACKWARD:
        batchnorm_inference_backward(y, y2, b, x0, x1, p[0], p[1], w, x2, f[FP], nthreads)
    elif code == OP_DROPOUT_BACKWARD:
        dropout_backward(y, x1, x0, p[0], nthreads)
    elif code == OP_CONCAT_BACKWARD:
        concat_backward(y, x1, p[0], p[1], p[2], p[3], nthreads)
    elif code == OP_SPARSE_SOFTMAX_CE:
        sparse_softmax_cross_entropy(y2, y, x0, <const int64_t*>x1, p[0], p[1], f[FP + 1])
    elif code == OP_SOFTMAX_CE:
        softmax_cross_entropy(y2, y, x0, x1, p[0], p[1], f[FP], f[FP + 1])
    elif code == OP_SIGMOID_BCE:
        sigmoid_binary_cross_entropy(y2, y, x0, x1, p[0], p[1], f[FP], f[FP + 1])
    elif code == OP_MSE:
        mean_squared_error(y2, y, x0, x1, p[0], p[1], f[FP + 1])
    elif code == OP_BATCHNORM_TRAIN_FORWARD:
        # f: float32(momentum), epsilon, float32(1 - momentum) with the difference taken in
        # double by the planner, as Keras takes it from its Python float.
        batchnorm_train_forward(y, y2, x0, p[0], p[1], w, b, x2, f[FP], f[FP + 2], f[FP + 1],
                                <int>p[2], nthreads)
    elif code == OP_BATCHNORM_TRAIN_BACKWARD:
        batchnorm_train_backward(y, y2, b, x0, x1, p[0], p[1], w, x2, nthreads)
    elif code == OP_LAYERNORM_BACKWARD:
        layernorm_backward(y, y2, b, x0, x1, p[0], p[1], w, f[FP], <int>p[2], nthreads)
    elif code == OP_BINARY_BACKWARD or code == OP_PRELU_BACKWARD:
        _run_broadcast_backward(code, y, y2, x0, x1, x2, w, p, nthreads)
    elif code == OP_UPSAMPLE_NEAREST_BACKWARD:
        upsample_nearest_backward(y, x1, p[0], p[1], p[2], p[3], p[4], p[5], nthreads)
    elif code == OP_UPSAMPLE_BILINEAR_BACKWARD:
        upsample_bilinear_backward(y, x1, p[0], p[1], p[2], p[3], p[4], p[5])


cdef void _run_row_activation_op(int code, float* y, const float* x0, const float* x1,
                                 const float* x2, float* scratch, const int64_t* p,
                                 int nthreads) noexcept nogil:
    if code == OP_LOG_SOFTMAX:
        log_softmax_forward(y, x0, p[0], p[1], nthreads)
    elif code == OP_SPARSEMAX:
        sparsemax_forward(y, x0, p[0], p[1], <int>p[2], scratch)
    elif code == OP_GLU:
        glu_forward(y, x0, p[0], p[1], nthreads)
    elif code == OP_LOG_SOFTMAX_BACKWARD:
        log_softmax_backward(y, x1, x2, p[0], p[1], nthreads)
    elif code == OP_SPARSEMAX_BACKWARD:
        sparsemax_backward(y, x1, x0, p[0], p[1], <int>p[2], scratch)
    elif code == OP_GLU_BACKWARD:
        glu_backward(y, x1, x0, p[0], p[1], nthreads)


cdef void _run_broadcast_backward(int code, float* y, float* y2, const float* x0,
                                  const float* x1, const float* x2, const float* w,
                                  const int64_t* p, int nthreads) noexcept nogil:
    # The rows of OP_BINARY_BACKWARD and OP_PRELU_BACKWARD carry the forward's ints.
    cdef Py_ssize_t shape[6]
    cdef Py_ssize_t sa[6]
    cdef Py_ssize_t sb[6]
    cdef int i, rank
    if code == OP_BINARY_BACKWARD:
        rank = <int>p[1]
        for i in range(rank):
            shape[i] = p[2 + i]
            sa[i] = p[2 + rank + i]
            sb[i] = p[2 + 2 * rank + i]
        binary_backward(y, y2, x1, x0, x2, <int>p[0], rank, shape, sa, sb, nthreads)
    else:
        rank = <int>p[2]
        for i in range(rank):
            shape[i] = p[3 + i]
            sa[i] = p[3 + rank + i]
        prelu_backward(y, y2, x1, x0, w, p[0], p[1], rank, shape, sa, nthreads)


cdef inline void _fill(void* geom, const int64_t* p, int count) noexcept nogil:
    # The geometry structs are runs of Py_ssize_t fields (no padding between members of
    # one type) in the order the planner writes them.  Copy field by field rather than
    # cast the int64 row: Py_ssize_t is 32 bits on armv7.
    cdef Py_ssize_t* fields = <Py_ssize_t*>geom
    cdef int i
    for i in range(count):
        fields[i] = <Py_ssize_t>p[i]


def run_plan(const int64_t[:, ::1] ops, const float[:, ::1] fparams, float[::1] arena,
             float[::1] weights, Py_ssize_t arena_floats, int gemm_nr, float[::1] params=None,
             float[::1] grads=None, int nthreads=1):
    """Execute a plan.  arena must hold at least the plan's arena_floats; the weights
    buffer must be the one the plan's model packed for the current GEMM variant; params
    and grads are the training buffers (plans of a compiled model reference them);
    nthreads: the thread count the plan was made for (its scratch holds that many)."""
    cdef float* bases[N_BASES]
    cdef Py_ssize_t i
    _require(ops.shape[1] == ROW_INTS_ and fparams.shape[1] == ROW_FLOATS_
             and fparams.shape[0] == ops.shape[0], "run_plan: op table has the wrong layout")
    _require(arena.shape[0] >= arena_floats, f"run_plan: arena has {arena.shape[0]} floats, "
             f"the plan needs {arena_floats}")
    _require(gemm_nr == _gemm.nr, "run_plan: weights were packed for another GEMM variant")
    _require(nthreads >= 1, f"run_plan: nthreads {nthreads} < 1")
    if ops.shape[0] == 0:
        return
    bases[0] = &arena[0] if arena.shape[0] else NULL
    bases[1] = &weights[0] if weights.shape[0] else NULL
    bases[2] = &params[0] if params is not None and params.shape[0] else NULL
    bases[3] = &grads[0] if grads is not None and grads.shape[0] else NULL
    with nogil:
        for i in range(ops.shape[0]):
            _run_op(&ops[i, 0], &fparams[i, 0], bases, nthreads)



cdef inline double _now() noexcept nogil:
    cdef timespec t
    clock_gettime(CLOCK_MONOTONIC, &t)
    return t.tv_sec + 1e-9 * t.tv_nsec


def run_plan_timed(const int64_t[:, ::1] ops, const float[:, ::1] fparams, float[::1] arena,
                   float[::1] weights, Py_ssize_t arena_floats, int gemm_nr,
                   double[::1] seconds, float[::1] params=None, float[::1] grads=None,
                   int nthreads=1):
    """run_plan, also adding each op's wall time (seconds) into seconds[i]: the per-op
    profiler's runner (Model.profile).  The clock is read between ops, outside them."""
    cdef float* bases[N_BASES]
    cdef Py_ssize_t i
    cdef double start, stop
    _require(seconds.shape[0] == ops.shape[0], "run_plan_timed: one time slot per op")
    # run_plan's checks (arena size, GEMM variant) on an empty table: nothing runs.
    run_plan(ops[:0], fparams[:0], arena, weights, arena_floats, gemm_nr, params, grads,
             nthreads)
    if ops.shape[0] == 0:
        return
    _require(ops.shape[1] == ROW_INTS_ and fparams.shape[1] == ROW_FLOATS_
             and fparams.shape[0] == ops.shape[0], "run_plan_timed: op table has the wrong layout")
    bases[0] = &arena[0] if arena.shape[0] else NULL
    bases[1] = &weights[0] if weights.shape[0] else NULL
    bases[2] = &params[0] if params is not None and params.shape[0] else NULL
    bases[3] = &grads[0] if grads is not None and grads.shape[0] else NULL
    with nogil:
        for i in range(ops.shape[0]):
            start = _now()
            _run_op(&ops[i, 0], &fparams[i, 0], bases, nthreads)
            stop = _now()
            seconds[i] += stop - start
