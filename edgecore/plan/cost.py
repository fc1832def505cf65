"""What an op of a plan computes, for the per-op profiler: floating-point operations (a
multiply-add counts 2, as benchncnn and TFLite's profilers count) and output shape.

Counted from the op's own parameters (the ints the planner wrote for the runner), so the
profile describes the plan that ran, folds and fusions included.
"""


def _prod(values):
    n = 1
    for v in values:
        n *= v
    return n


def op_flops(op, shapes):
    """FLOPs of one PlannedOp (0 for pure data movement); shapes: its builder's shape()."""
    name, p = op.name, op.ints
    if name == "gemm":
        m, n, k = p[:3]
        return 2 * m * n * k
    if name == "conv2d":  # ConvGeom: n h w c kh kw sh sw dh dw top left oh ow co groups
        n, _, _, c, kh, kw = p[:6]
        oh, ow, co, groups = p[12], p[13], p[14], p[15]
        return 2 * n * oh * ow * co * kh * kw * (c // max(1, groups))
    if name == "dwconv2d":  # DwConvGeom: n h w c kh kw sh sw dh dw top left oh ow m
        n, _, _, c, kh, kw = p[:6]
        oh, ow, m = p[12], p[13], p[14]
        return 2 * n * oh * ow * c * m * kh * kw
    if name in ("maxpool2d", "avgpool2d"):
        n, _, _, c, ph, pw = p[:6]
        return n * p[10] * p[11] * c * ph * pw
    if name in ("global_avgpool", "global_maxpool"):
        return _prod(p[:3])
    if name == "dense_backward":
        m, k, n = p[:3]
        return 4 * m * k * n
    if name == "conv2d_backward":
        return 2 * op_flops(_as(op, "conv2d"), shapes)
    if name == "dwconv2d_backward":
        return 2 * op_flops(_as(op, "dwconv2d"), shapes)
    y = op.y
    if y is not None and not hasattr(y, "base"):  # an arena tensor: one flop per element
        return _prod(shapes(y))
    return 0


def _as(op, name):
    class Shadow:
        pass

    shadow = Shadow()
    shadow.name, shadow.ints, shadow.y = name, op.ints, op.y
    return shadow


def op_shape(op, shapes):
    """The op's output shape (its y), or None when it writes a model buffer."""
    y = op.y
    if y is None or hasattr(y, "base"):
        return None
    return tuple(shapes(y))
