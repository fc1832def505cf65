"""Problem-size grids for the kernel tests.

In the spirit of XNNPACK's generated GEMM tests (test/f32-gemm.yaml: k_eq, k_lt, k_gt, k_div,
n_gt, n_div, subtile_m, subtile_n, strided_a, all relative to the micro-kernel's MR x NR
tile) and ncnn's tests/test_convolution.cpp (odd spatial sizes 9x7 and 18x17, channel counts
on and off the vector width, a table of kernel / dilation / stride / padding).  Every case
has an id naming it, and the grids are deterministic: no randomness here, seeds are fixed in
the tests.
"""
from dataclasses import dataclass, field

# Sizes that miss every tile and vector width, plus the degenerate 1x1 image.
SPATIAL = [(9, 7), (18, 17), (1, 1)]
CHANNELS = [1, 3, 4, 8, 12, 13, 15, 16, 24, 33]

# The GEMM micro-kernel has no K unroll (every k is a tail), so the XNNPACK k-case names are
# taken relative to a nominal block of 8: small enough to keep problems cheap, and it puts
# k both below and above the vector widths of every variant's A loads.
K_BLOCK = 8


def same_pads(h, w, kh, kw, sh, sw, dh=1, dw=1):
    """Keras/TF 'same' padding (top, bottom, left, right): the odd pixel goes after."""
    def axis(size, k, s, d):
        total = max((-(-size // s) - 1) * s + (k - 1) * d + 1 - size, 0)
        return total // 2, total - total // 2
    return axis(h, kh, sh, dh) + axis(w, kw, sw, dw)


def out_size(size, k, s, d, before, after):
    return (size + before + after - (k - 1) * d - 1) // s + 1


@dataclass(frozen=True)
class GemmCase:
    name: str
    m: int
    n: int
    k: int
    lda: int = 0          # 0: contiguous rows (lda = k)
    ldc: int = 0          # 0: contiguous rows (ldc = n)
    act: str = "linear"
    act_params: dict = field(default_factory=dict, hash=False, compare=False)

    @property
    def id(self):
        s = f"{self.name}_m{self.m}_n{self.n}_k{self.k}"
        if self.lda:
            s += f"_lda{self.lda}"
        if self.ldc:
            s += f"_ldc{self.ldc}"
        return s        # activation cases carry the activation in their name


def gemm_cases(mr, nr, kb=K_BLOCK):
    """GEMM cases relative to the current variant's MR x NR tile."""
    c = [GemmCase("k_eq", mr, nr, kb)]
    c += [GemmCase("k_lt", mr, nr, k) for k in (1, kb - 1)]
    c += [GemmCase("k_gt", mr, nr, k) for k in (kb + 1, 2 * kb - 1)]
    c += [GemmCase("k_div", mr, nr, k) for k in (2 * kb, 5 * kb)]
    c += [GemmCase("n_gt", mr, n, k) for n in (nr + 1, 2 * nr - 1) for k in (1, kb + 3)]
    c += [GemmCase("n_div", mr, n, kb + 1) for n in (2 * nr, 3 * nr)]
    # Every row count below MR: the leftover rows go to the 1-row and half-MR tiles.
    c += [GemmCase("subtile_m", m, nr, kb + 1) for m in range(1, max(mr, 2))]
    c += [GemmCase("subtile_n", mr, n, kb + 1) for n in (1, nr - 1)]
    # A last panel of at most NR/2 columns runs on the narrow tiles: its edge, both sides.
    c += [GemmCase("narrow_n", m, n, kb + 2) for m in (1, mr, 2 * mr + 1)
          for n in (max(nr // 2, 1), nr // 2 + 1, nr + nr // 2)]
    c += [GemmCase("subtile_mn", max(mr - 1, 1), nr // 2 + 1, 3)]
    c += [GemmCase("m_gt", m, nr + 3, kb + 2) for m in (mr + 1, 3 * mr + 1)]
    c += [GemmCase("strided_a", mr + 1, nr + 1, k, lda=k + 5) for k in (kb, 2 * kb + 1)]
    c += [GemmCase("strided_c", 2 * mr + 1, nr + 5, kb, ldc=nr + 12)]
    # K = 1000 makes the row block ~32 rows (gemm.pxi: ~128 KiB of A per block), so M
    # spans several blocks with a partial last one.
    c += [GemmCase("m_blocks", 101, nr + 7, 1000)]
    # K past the blocking threshold (gemm.pxi: _GEMM_KC_SPLIT = 512, slices of 256): the
    # slices accumulate onto C, the clamp runs after the last; a ragged last slice.
    c += [GemmCase("k_blocked", m, n, 777) for m, n in ((1, nr // 2), (mr, nr + 3), (2 * mr + 1, 2 * nr))]
    for act, params in [("relu", {"max_value": 6.0}), ("relu", {"alpha": 0.1, "threshold": 0.5}),
                        ("swish", {})]:
        tag = act + "".join(f"_{k}{v}" for k, v in params.items())
        c += [GemmCase("k_blocked_act_" + tag, 2 * mr + 3, nr + 5, 600, act=act, act_params=params)]
    # Fused clamp (relu, relu6) and the separate epilogue (others), contiguous and strided.
    for act, params in [("relu", {}), ("relu", {"max_value": 6.0}),
                        ("relu", {"alpha": 0.1, "threshold": 0.5}), ("leaky_relu", {"alpha": 0.2}),
                        ("swish", {}), ("hard_swish", {})]:
        tag = act + "".join(f"_{k}{v}" for k, v in params.items())
        c += [GemmCase("act_" + tag, 2 * mr + 3, nr + 5, kb + 3, act=act, act_params=params)]
        c += [GemmCase("act_strided_" + tag, 2 * mr + 3, nr + 5, kb + 3, lda=kb + 9,
                       ldc=nr + 9, act=act, act_params=params)]
    return c


@dataclass(frozen=True)
class ConvCase:
    n: int
    h: int
    w: int
    cin: int
    cout: int         # Conv2D: filters; DepthwiseConv2D: depth multiplier M
    kh: int
    kw: int
    sh: int
    sw: int
    dh: int
    dw: int
    padding: str      # 'same', 'valid' or 'explicit'
    pads: tuple       # (top, bottom, left, right)
    groups: int = 1

    @property
    def id(self):
        s = (f"{self.h}x{self.w}_c{self.cin}_o{self.cout}_k{self.kh}x{self.kw}"
             f"_s{self.sh}x{self.sw}_d{self.dh}x{self.dw}_{self.padding}")
        if self.padding == "explicit":
            s += "".join(str(p) for p in self.pads)
        if self.groups > 1:
            s += f"_g{self.groups}"
        return s if self.n == 1 else f"n{self.n}_{s}"

    @property
    def geometry(self):
        """The geometry keywords the kernels and the references take."""
        return dict(strides=(self.sh, self.sw), dilation=(self.dh, self.dw), pads=self.pads)

    @property
    def out_hw(self):
        t, b, l, r = self.pads
        return (out_size(self.h, self.kh, self.sh, self.dh, t, b),
                out_size(self.w, self.kw, self.sw, self.dw, l, r))


# (kh, kw, sh, sw, dh, dw, padding), after ncnn's table.  Keras forbids strides > 1 together
# with dilation > 1 in Conv2D, but the kernels are general, so one such row stays.
CONV_TABLE = [
    (1, 1, 1, 1, 1, 1, "valid"), (1, 1, 2, 2, 1, 1, "valid"), (1, 1, 1, 1, 1, 1, "same"),
    (3, 3, 1, 1, 1, 1, "same"), (3, 3, 2, 2, 1, 1, "same"), (3, 3, 1, 1, 1, 1, "valid"),
    (3, 3, 2, 2, 1, 1, "valid"), (3, 3, 1, 1, 2, 2, "same"), (3, 3, 1, 1, 2, 2, "valid"),
    (2, 3, 1, 1, 1, 1, "same"), (2, 3, 2, 1, 1, 1, "same"), (2, 3, 1, 2, 1, 2, "valid"),
    (5, 5, 1, 1, 1, 1, "same"), (5, 5, 2, 2, 1, 1, "same"), (5, 5, 2, 2, 2, 2, "same"),
]


def _case(n, hw, cin, cout, row, groups=1, pads=None):
    kh, kw, sh, sw, dh, dw, padding = row
    h, w = hw
    if pads is not None:
        padding = "explicit"
    elif padding == "same":
        pads = same_pads(h, w, kh, kw, sh, sw, dh, dw)
    else:
        pads = (0, 0, 0, 0)
    case = ConvCase(n, h, w, cin, cout, kh, kw, sh, sw, dh, dw, padding, tuple(pads), groups)
    return case if min(case.out_hw) > 0 else None       # valid kernel larger than image


def conv_cases():
    """Conv2D grid: every table row at every spatial size, with (cin, cout) pairs cycled
    through CHANNELS so all counts appear without the full product; then groups, batch 2
    and asymmetric explicit pads."""
    cases, i = [], 0
    for row in CONV_TABLE:
        for hw in SPATIAL:
            for _ in range(2):
                cin, cout = CHANNELS[i % len(CHANNELS)], CHANNELS[(3 * i + 5) % len(CHANNELS)]
                i += 1
                cases.append(_case(1, hw, cin, cout, row))
    for groups, cin, cout in [(2, 8, 12), (3, 3, 3), (4, 16, 24), (3, 33, 15), (8, 16, 16)]:
        for row in (CONV_TABLE[0], CONV_TABLE[4], CONV_TABLE[7]):
            cases.append(_case(1, (9, 7), cin, cout, row, groups))
    cases += [_case(2, (9, 7), 4, 13, CONV_TABLE[3]), _case(2, (18, 17), 13, 8, CONV_TABLE[13])]
    for pads in [(0, 2, 1, 0), (2, 0, 0, 1), (1, 1, 0, 3)]:
        cases += [_case(1, (9, 7), 5, 12, CONV_TABLE[3], pads=pads),
                  _case(1, (18, 17), 12, 5, CONV_TABLE[10], pads=pads)]
    return [c for c in cases if c is not None]


def grouped_conv_cases():
    """Grouped Conv2D grid for the backward: groups 2, 3, 4 (and 8) with one input or one
    output channel per group, strides 2, dilation 2, same and valid, at 9x7 and 18x17."""
    rows = [CONV_TABLE[i] for i in (0, 1, 4, 6, 7, 8, 10, 14)]
    cases, i = [], 0
    for groups, cin, cout in [(2, 8, 12), (3, 3, 3), (4, 16, 24), (3, 33, 15), (2, 4, 2),
                              (4, 4, 8), (3, 12, 9), (8, 16, 16)]:
        for row in rows:
            hw = SPATIAL[i % 2]
            i += 1
            cases.append(_case(1, hw, cin, cout, row, groups))
    cases += [_case(2, (9, 7), 6, 4, CONV_TABLE[3], 2),
              _case(1, (9, 7), 6, 9, CONV_TABLE[3], 3, pads=(0, 2, 1, 0))]
    return [c for c in cases if c is not None]


# Depthwise: the channel counts around the 16-channel register block of dwconv2d.pxi matter
# most (tails of 1..15 after zero, one or two full blocks).
DW_CHANNELS = CHANNELS + [17, 31, 32, 48]
DW_TABLE = CONV_TABLE[3:] + [(7, 7, 1, 1, 1, 1, "same"), (3, 3, 2, 2, 2, 2, "valid")]


def dwconv_cases():
    """DepthwiseConv2D grid; ConvCase.cout is the depth multiplier M."""
    cases, i = [], 0
    for row in DW_TABLE:
        for hw in SPATIAL + [(14, 14)]:
            for _ in range(2):
                cin = DW_CHANNELS[i % len(DW_CHANNELS)]
                i += 1
                cases.append(_case(1, hw, cin, 1, row))
    for m, cin in [(2, 3), (3, 8), (2, 17), (4, 1)]:
        for row in (DW_TABLE[0], DW_TABLE[1], DW_TABLE[5]):
            cases.append(_case(1, (9, 7), cin, m, row))
    cases += [_case(2, (18, 17), 24, 1, DW_TABLE[1]), _case(3, (9, 7), 33, 2, DW_TABLE[0])]
    # Pads beyond the kernel reach: whole output rows/columns see only padding (= bias).
    for pads in [(0, 2, 1, 0), (3, 1, 0, 4), (4, 4, 4, 4)]:
        cases += [_case(1, (9, 7), 16, 1, DW_TABLE[0], pads=pads),
                  _case(1, (18, 17), 13, 1, DW_TABLE[1], pads=pads)]
    return [c for c in cases if c is not None]


@dataclass(frozen=True)
class PoolCase:
    n: int
    h: int
    w: int
    c: int
    ph: int
    pw: int
    sh: int
    sw: int
    padding: str
    pads: tuple

    @property
    def id(self):
        s = f"{self.h}x{self.w}_c{self.c}_p{self.ph}x{self.pw}_s{self.sh}x{self.sw}_{self.padding}"
        if self.padding == "explicit":
            s += "".join(str(p) for p in self.pads)
        return s if self.n == 1 else f"n{self.n}_{s}"

    @property
    def out_hw(self):
        t, b, l, r = self.pads
        return (out_size(self.h, self.ph, self.sh, 1, t, b), out_size(self.w, self.pw, self.sw, 1, l, r))


POOL_TABLE = [
    (2, 2, 2, 2, "valid"), (2, 2, 2, 2, "same"), (3, 3, 2, 2, "same"), (3, 3, 1, 1, "same"),
    (3, 3, 2, 2, "valid"), (2, 3, 1, 2, "same"), (5, 5, 3, 3, "same"), (1, 1, 1, 1, "valid"),
    (3, 3, 3, 3, "valid"),
]


def pool_cases():
    cases, i = [], 0
    for ph, pw, sh, sw, padding in POOL_TABLE:
        for h, w in SPATIAL + [(14, 14)]:
            for _ in range(2):
                c = CHANNELS[i % len(CHANNELS)]
                i += 1
                pads = same_pads(h, w, ph, pw, sh, sw) if padding == "same" else (0, 0, 0, 0)
                cases.append(PoolCase(1, h, w, c, ph, pw, sh, sw, padding, pads))
    cases += [PoolCase(2, 18, 17, 24, 3, 3, 2, 2, "same", same_pads(18, 17, 3, 3, 2, 2)),
              PoolCase(1, 9, 7, 8, 3, 3, 2, 2, "explicit", (2, 0, 1, 2)),
              PoolCase(1, 9, 7, 13, 4, 2, 1, 3, "explicit", (3, 1, 0, 1))]
    return [c for c in cases if min(c.out_hw) > 0]


# Normalization: rows (N*H*W for BatchNorm, independent rows for LayerNorm) from a single row
# up, and channel counts around the vector widths and the 256-column block of the
# per-column reductions (normalization.pxi _NORM_BLOCK): below, at and past one block.
NORM_ROWS = [1, 2, 3, 7, 64, 1000]
NORM_CHANNELS = [1, 3, 4, 7, 8, 15, 16, 17, 33, 256, 300]


def norm_cases():
    """Every (rows, channels) pair of the two lists above."""
    return [(r, c) for r in NORM_ROWS for c in NORM_CHANNELS]
