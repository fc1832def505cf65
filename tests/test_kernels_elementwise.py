"""Broadcasting binary ops, scale, per-channel affine and PReLU: same-shape fast path,
squeeze-excite broadcast, scalar constants, general broadcasts, in-place accumulation."""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from hypothesis.extra import numpy as hnp

from edgecore import _kernels as K
from reference.check import assert_close, assert_unchanged, frozen
from reference.elementwise import binary as ref_binary, binary_magnitude, channel_affine, prelu

# (shape of a, shape of b): the output shape is their broadcast.
BROADCASTS = {
    "same": ((2, 9, 7, 13), (2, 9, 7, 13)),
    "squeeze_excite": ((2, 9, 7, 24), (2, 1, 1, 24)),
    "scalar_b": ((3, 5, 33), ()),
    "scalar_a": ((), (3, 5, 33)),
    "row_bias": ((18, 17), (17,)),
    "column": ((4, 6, 1), (4, 1, 5)),
    "outer": ((7, 1), (1, 9)),
    "middle": ((2, 3, 4, 5), (1, 3, 1, 1)),
    "rank6": ((2, 1, 3, 2, 1, 4), (1, 2, 1, 2, 3, 1)),
    "rank1": ((37,), (37,)),
}


def _operand(arr, shape):
    """Flat contiguous buffer and element strides of arr broadcast to shape."""
    flat = np.ascontiguousarray(arr).reshape(-1)
    if flat.size == 0:
        flat = flat.reshape(1)
    strides = tuple(s // 4 for s in np.broadcast_to(arr, shape).strides)
    return flat, strides


@pytest.mark.parametrize("op", list(K.BINARY_OPS))
@pytest.mark.parametrize("case", list(BROADCASTS))
def test_binary_matches_numpy(case, op):
    rng = np.random.default_rng(17)
    sa, sb = BROADCASTS[case]
    a = rng.standard_normal(sa).astype(np.float32)
    b = rng.standard_normal(sb).astype(np.float32)
    if op == "divide":
        b = np.where(np.abs(b) < 0.1, np.float32(0.5), b).astype(np.float32)
    shape = np.broadcast_shapes(sa, sb)
    (fa, fb), copies = frozen(a.reshape(-1), b.reshape(-1))
    _, stra = _operand(a, shape)
    _, strb = _operand(b, shape)
    y = np.full(shape, np.nan, np.float32)
    K.binary(fa, fb, y.reshape(-1), K.BINARY_OPS[op], shape, stra, strb)
    ref = ref_binary(a, b, op)
    assert_close(y, ref, binary_magnitude(a, b, op), rtol=6e-8, atol=0, what=f"binary {op} {case}")
    assert_unchanged([fa, fb], copies, "binary")


def test_binary_accumulates_in_place():
    """Add of 3 inputs as the plan runs it: y = a; y += b; y += c, y aliasing a."""
    rng = np.random.default_rng(3)
    a, b, c = (rng.standard_normal((2, 9, 7, 16)).astype(np.float32) for _ in range(3))
    y = a.copy()
    shape, strides = y.shape, tuple(s // 4 for s in y.strides)
    add = K.BINARY_OPS["add"]
    K.binary(y.reshape(-1), b.reshape(-1), y.reshape(-1), add, shape, strides, strides)
    K.binary(c.reshape(-1), y.reshape(-1), y.reshape(-1), add, shape, strides, strides)
    ref = a.astype(np.float64) + b + c
    assert_close(y, ref, np.abs(a) + np.abs(b) + np.abs(c), rtol=1.2e-7, atol=0, what="a+b+c")


def test_binary_in_place_squeeze_excite():
    rng = np.random.default_rng(4)
    x = rng.standard_normal((1, 9, 7, 24)).astype(np.float32)
    s = rng.standard_normal((1, 1, 1, 24)).astype(np.float32)
    ref = x.astype(np.float64) * s
    _, strs = _operand(s, x.shape)
    K.binary(x.reshape(-1), s.reshape(-1), x.reshape(-1), K.BINARY_OPS["multiply"], x.shape,
             tuple(v // 4 for v in x.strides), strs)
    assert_close(x, ref, rtol=6e-8, atol=0, what="in-place SE")


def test_binary_validation():
    a = np.ones(12, np.float32)
    y = np.empty(12, np.float32)
    add = K.BINARY_OPS["add"]
    bad = [
        lambda: K.binary(a, a, y, add, (3, 5), (5, 1), (5, 1)),                   # y size
        lambda: K.binary(a, a, y, add, (3, 4), (4, 1), (5, 1)),                   # b overruns
        lambda: K.binary(a, a, y, add, (3, 4), (4, 1), (4,)),                     # stride count
        lambda: K.binary(a, a, y, add, (3, 4), (4, -1), (4, 1)),
        lambda: K.binary(a, a, y, 17, (3, 4), (4, 1), (4, 1)),
        lambda: K.binary(a, a, y, add, (), (), ()),
        lambda: K.binary(a, a, y, add, (1,) * 6 + (12,), (0,) * 6 + (1,), (0,) * 6 + (1,)),
        lambda: K.binary(a, a, y, add, (3, 0), (4, 1), (4, 1)),
        lambda: K.binary(y, a[:4], y, add, (3, 4), (1, 0), (0, 1)),  # y is a, a broadcast
    ]
    for call in bad:
        with pytest.raises(K.KernelShapeError):
            call()


def test_scale():
    rng = np.random.default_rng(6)
    (x,), copies = frozen(rng.standard_normal(1001))
    y = np.empty_like(x)
    K.scale(x, y, 0.37)
    assert_close(y, x.astype(np.float64) * np.float32(0.37), rtol=6e-8, atol=0, what="scale")
    assert_unchanged([x], copies, "scale")
    z = x.copy()
    K.scale(z, z, -2.0)
    assert np.array_equal(z, x * np.float32(-2.0))
    with pytest.raises(K.KernelShapeError):
        K.scale(x, np.empty(1000, np.float32), 1.0)


@pytest.mark.parametrize("rows, c", [(1, 1), (63, 13), (9 * 7, 16), (5, 33), (50, 3),
                                     (1001, 3), (40, 1), (31, 15)])
def test_channel_affine(rows, c):
    rng = np.random.default_rng(rows * 100 + c)
    (x, scale, shift), copies = frozen(rng.standard_normal((rows, c)), rng.standard_normal(c),
                                       rng.standard_normal(c))
    y = np.empty((rows, c), np.float32)
    K.channel_affine(x, scale, shift, y)
    mag = np.abs(x.astype(np.float64) * scale) + np.abs(shift)
    assert_close(y, channel_affine(x, scale, shift), mag, rtol=1.2e-7, atol=0, what="affine")
    assert_unchanged([x, scale, shift], copies, "channel_affine")
    z = x.copy()
    K.channel_affine(z, scale, shift, z)
    assert np.array_equal(z, y)
    # Fewer than 16 channels run as 16-row groups against a repeated pattern, with the rows
    # before and after a group one by one: every split of the rows gives the same bits.
    previous = K._set_parallel_grain(1 << 30)
    try:
        for threads in (2, 3):
            z = np.empty_like(y)
            K.channel_affine(x, scale, shift, z, nthreads=threads)
            assert np.array_equal(z, y), threads
    finally:
        K._set_parallel_grain(previous)
    with pytest.raises(K.KernelShapeError):
        K.channel_affine(x, scale[:-1] if c > 1 else np.ones(2, np.float32), shift, y)
    with pytest.raises(K.KernelShapeError):
        K.channel_affine(x, scale, shift, np.empty((rows + 1, c), np.float32))


PRELU_CASES = {
    "full_alpha": ((2, 9, 7, 13), ()),
    "shared_hw": ((2, 9, 7, 13), (1, 2)),       # Keras shared_axes=[1, 2]: alpha (1, 1, C)
    "shared_c": ((3, 5, 4, 6), (3,)),
    "dense": ((4, 37), ()),
    "shared_all": ((2, 3, 4), (1, 2)),
}


@pytest.mark.parametrize("case", list(PRELU_CASES))
def test_prelu(case):
    shape, shared = PRELU_CASES[case]
    rng = np.random.default_rng(21)
    alpha_shape = tuple(1 if i + 1 in shared else d for i, d in enumerate(shape[1:]))
    (x, alpha), copies = frozen(rng.standard_normal(shape), rng.standard_normal(alpha_shape))
    strides = tuple(s // 4 for s in np.broadcast_to(alpha, shape[1:]).strides)
    y = np.empty(shape, np.float32)
    K.prelu(x.reshape(-1), alpha.reshape(-1), y.reshape(-1), shape[1:], strides)
    ref = prelu(x, alpha)
    assert_close(y, ref, rtol=6e-8, atol=0, what=f"prelu {case}")
    assert_unchanged([x, alpha], copies, "prelu")
    z = x.copy()
    K.prelu(z.reshape(-1), alpha.reshape(-1), z.reshape(-1), shape[1:], strides)
    assert np.array_equal(z, y), "in-place prelu differs"


def test_prelu_validation():
    x = np.ones(24, np.float32)
    alpha = np.ones(4, np.float32)
    y = np.empty(24, np.float32)
    bad = [
        lambda: K.prelu(x, alpha, y, (5,), (1,)),               # 24 is not whole samples of 5
        lambda: K.prelu(x, alpha, y, (3, 4), (4, 1)),           # alpha overrun
        lambda: K.prelu(x, alpha, y, (3, 4), (1,)),
        lambda: K.prelu(x, alpha, np.empty(12, np.float32), (3, 4), (0, 1)),
        lambda: K.prelu(x, x[:4], x, (3, 4), (0, 1)),           # y overlaps alpha
    ]
    for call in bad:
        with pytest.raises(K.KernelShapeError):
            call()


@settings(max_examples=200, deadline=None, derandomize=True)
@given(shapes_=hnp.mutually_broadcastable_shapes(num_shapes=2, min_dims=0, max_dims=6,
                                                 min_side=1, max_side=5),
       op=st.sampled_from(sorted(K.BINARY_OPS)))
def test_binary_random_broadcasts(shapes_, op):
    (sa, sb), shape = shapes_
    if not shape:
        shape, sa, sb = (1,), sa or (1,), sb or (1,)
    rng = np.random.default_rng(0)
    a = rng.standard_normal(sa).astype(np.float32)
    b = (rng.uniform(0.5, 2, sb) * rng.choice([-1, 1], sb)).astype(np.float32)
    y = np.full(shape, np.nan, np.float32)
    (fa, stra), (fb, strb) = _operand(a, shape), _operand(b, shape)
    K.binary(fa, fb, y.reshape(-1), K.BINARY_OPS[op], shape, stra, strb)
    assert_close(y, ref_binary(a, b, op), binary_magnitude(a, b, op), rtol=6e-8, atol=0,
                 what=f"binary {op} {sa} {sb}")
