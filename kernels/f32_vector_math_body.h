/* f32 vector activations, one instantiation per ISA: f32_vector_math.h includes this file
 * once per ISA after defining
 *   EC_VM_SUF   the name suffix (vec128, neon, avx2, avx512f)
 *   EC_VM_ATTR  the target attribute of every function (empty for the baseline)
 *   VT VI VU    float / int32 / uint32 vectors of VW lanes
 *   HT DT DI    VW/2 floats, VW/2 doubles, VW/2 int64 (the exact double-lane functions)
 * No include guard on purpose.  Every function here is lane-wise: lane i of the result
 * depends on lane i of the input only, so an element gives the same bits wherever it sits
 * in a buffer (main loop or zero-padded tail) and at any thread count.
 *
 * Accuracy (measured by bench/measure_activations.py over every finite float; the tests
 * assert these bounds per ISA): see the table in f32_vector_math.h. */

#define EC_VM_CAT2(a, b) a##__##b
#define EC_VM_CAT(a, b) EC_VM_CAT2(a, b)
#define FN(name) EC_VM_CAT(name, EC_VM_SUF)
#define INL static inline __attribute__((always_inline)) EC_VM_ATTR

/* --- lane helpers -------------------------------------------------------------------- */

INL VT FN(ec_bcast)(float v) { return (VT){0} + v; }

/* m ? a : b for a comparison mask m (C has no vector ?:). */
INL VT FN(ec_sel)(VI m, VT a, VT b) { return (VT)((m & (VI)a) | (~m & (VI)b)); }

INL VT FN(ec_abs)(VT x) { return (VT)((VU)x & 0x7fffffffu); }

/* 2^k for integer lanes k in [-126, 127]: the biased exponent shifted into place. */
INL VT FN(ec_pow2)(VI k) { return (VT)((VU)(k + 127) << 23); }

/* e^t = 2^n (1 + em) with em = e^r - 1, r = t - n ln2 in [-ln2/2, ln2/2] (Cody-Waite: n ln2_hi
 * is exact for |n| < 256, so the subtraction is exact by Sterbenz), e^r - 1 = r + r^2 Q(r)
 * with Q a degree-4 minimax fit (relative error of e^r 3e-9, tests/reference/vmath_fit.py).
 * n comes from the rounding add of 1.5 * 2^23, whose low mantissa bits then hold n.
 * t must lie in [-170, 120] or be NaN (n is garbage then, em NaN: the result stays NaN). */
INL VT FN(ec_expm1_reduced)(VT t, VI *n) {
    const VT magic = FN(ec_bcast)(EC_VM_MAGIC);
    VT vn = t * EC_VM_LOG2E + magic;
    *n = (VI)vn - (VI)magic;
    vn = vn - magic;
    VT r = t - vn * EC_VM_LN2_HI;
    r = r - vn * EC_VM_LN2_LO;
    VT q = FN(ec_bcast)(EC_VM_EXP_Q4);
    q = q * r + EC_VM_EXP_Q3;
    q = q * r + EC_VM_EXP_Q2;
    q = q * r + EC_VM_EXP_Q1;
    q = q * r + EC_VM_EXP_Q0;
    return r + (r * r) * q;
}

/* expm1(t) for t in [-18, 0] (or NaN): 2^n em + (2^n - 1); 2^n - 1 is exact down to n = -24
 * and within half an ulp of the result below.  expm1(-0) = -0 is left to the callers. */
INL VT FN(ec_expm1_neg)(VT t) {
    VI n;
    VT er = FN(ec_expm1_reduced)(t, &n);
    VT s = FN(ec_pow2)(n);
    return er * s + (s - 1.0f);
}

/* e^-z for z = |x| clamped to [0, EC_VM_ZMAX], kept as parts so a result that goes
 * denormal is rounded once, at the very end: e = ps1 * s2 with ps1 = (1 + em) 2^n1 normal
 * and s2 = 2^n2, n1 + n2 = n (both halves of n >= -81 stay normal).  s2 is 0 where |x| >
 * EC_VM_ZMAX (there x e^-|x| underflows to 0 for every |x| the activations multiply by,
 * and x = -inf then gives -inf * 0 = NaN, as today's x * sigmoid(x)). */
typedef struct { VT ps1, s2, e; VI pos; } FN(ec_expneg_parts);

INL FN(ec_expneg_parts) FN(ec_expneg)(VT x) {
    FN(ec_expneg_parts) p;
    VT z = FN(ec_abs)(x);
    VI big = z > EC_VM_ZMAX;
    z = FN(ec_sel)(big, FN(ec_bcast)(EC_VM_ZMAX), z);        /* NaN stays NaN */
    VI n;
    VT em = FN(ec_expm1_reduced)(-z, &n);
    VI n1 = n >> 1, n2 = n - n1;
    VT s1 = FN(ec_pow2)(n1);
    p.s2 = FN(ec_sel)(big, FN(ec_bcast)(0.0f), FN(ec_pow2)(n2));
    p.ps1 = em * s1 + s1;
    p.e = p.ps1 * p.s2;
    p.pos = x > 0.0f;
    return p;
}

/* mult * sigmoid(v): x > 0 lanes mult / (1 + e), the others (mult * e) / (1 + e) as
 * ((mult * ps1) / d) * s2.  sigmoid is mult = 1, swish mult = v = x, gelu_tanh mult = x. */
INL VT FN(ec_mul_sigmoid)(VT mult, VT v) {
    FN(ec_expneg_parts) p = FN(ec_expneg)(v);
    VT d = p.e + 1.0f;
    VT num = FN(ec_sel)(p.pos, mult, mult * p.ps1);
    VT sc = FN(ec_sel)(p.pos, FN(ec_bcast)(1.0f), p.s2);
    return (num / d) * sc;
}

INL VT FN(ec_sigmoid)(VT x) { return FN(ec_mul_sigmoid)(FN(ec_bcast)(1.0f), x); }
INL VT FN(ec_swish)(VT x) { return FN(ec_mul_sigmoid)(x, x); }

/* 0.5 x (1 + tanh(u)) = x sigmoid(2u), u = sqrt(2/pi) (x + 0.044715 x^3): no cancellation
 * for x < 0.  The rounding of 2u (about 1.5 ulp) is amplified by |2u| there, the function's
 * own condition number in its argument. */
INL VT FN(ec_gelu_tanh)(VT x) {
    VT v = x * (x * x * EC_VM_GELU_K3 + EC_VM_GELU_K1);
    return FN(ec_mul_sigmoid)(x, v);
}

/* tanh(z) = -expm1(-2z) / (2 + expm1(-2z)), z = |x| clamped to 9.1 (tanh rounds to 1 from
 * 9.01 on), sign copied back from x (tanh(-0) = -0, NaN stays NaN). */
INL VT FN(ec_tanh)(VT x) {
    VT z = FN(ec_abs)(x);
    z = FN(ec_sel)(z > 9.1f, FN(ec_bcast)(9.1f), z);
    VT em = FN(ec_expm1_neg)(-2.0f * z);
    VT t = -em / (em + 2.0f);
    return (VT)(((VU)t & 0x7fffffffu) | ((VU)x & 0x80000000u));
}

/* expm1(min(x, 0)) with t clamped to -18 (expm1 rounds to -1 from -17.33 on) and
 * expm1(+-0) = +-0 exactly, as libm's. */
INL VT FN(ec_expm1_nonpos)(VT x) {
    VT t = FN(ec_sel)(x < -18.0f, FN(ec_bcast)(-18.0f), x);
    t = FN(ec_sel)(t > 0.0f, FN(ec_bcast)(0.0f), t);
    VT em = FN(ec_expm1_neg)(t);
    return FN(ec_sel)(x == 0.0f, x, em);
}

INL VT FN(ec_elu)(VT x, float alpha) {
    return FN(ec_sel)(x > 0.0f, x, alpha * FN(ec_expm1_nonpos)(x));
}

INL VT FN(ec_selu)(VT x) {
    return FN(ec_sel)(x > 0.0f, x * EC_VM_SELU_SCALE,
                      FN(ec_expm1_nonpos)(x) * EC_VM_SELU_SCALE_ALPHA);
}

/* celu: x > 0 ? x : 0 + alpha expm1(x / alpha) (Keras's max(x, 0) + ...: +0 at x = -0; a NaN
 * x stays NaN through the expm1). */
INL VT FN(ec_celu)(VT x, float alpha) {
    VT em = FN(ec_expm1_nonpos)(x / alpha);
    return FN(ec_sel)(x > 0.0f, x, alpha * em + 0.0f);
}

/* log1p(e) for e = e^-|x| in [0, 1], as e * g: g = 2/(2+e) (1 + w R(w)), s = e/(2+e), w = s^2
 * <= 1/9 (log1p(e) = 2 atanh(s)); R a degree-3 fit (relative error 5e-9).  Returned as
 * (ps1 * g) * s2 so a denormal log1p is rounded once. */
INL VT FN(ec_log1p_expneg)(FN(ec_expneg_parts) p) {
    VT h = 1.0f / (p.e + 2.0f);
    VT s = p.e * h;
    VT w = s * s;
    VT r = FN(ec_bcast)(EC_VM_LOG1P_R3);
    r = r * w + EC_VM_LOG1P_R2;
    r = r * w + EC_VM_LOG1P_R1;
    r = r * w + EC_VM_LOG1P_R0;
    VT g = (h + h) * (w * r + 1.0f);
    return (p.ps1 * g) * p.s2;
}

/* softplus(x) = max(x, 0) + log1p(e^-|x|); max selects 0 for NaN, the log1p keeps it NaN. */
INL VT FN(ec_softplus)(VT x) {
    FN(ec_expneg_parts) p = FN(ec_expneg)(x);
    return FN(ec_sel)(p.pos, x, FN(ec_bcast)(0.0f)) + FN(ec_log1p_expneg)(p);
}

INL VT FN(ec_log_sigmoid)(VT x) { return -FN(ec_softplus)(-x); }

/* mish = x tanh(log1p(e^x)) = x n / (n + 2), n = e^x (e^x + 2), without a log: for x <= 0
 * with e = e^x (numerator scaled as in ec_mul_sigmoid), for x > 0 multiplied through by
 * e^-2x: x (1 + 2e) / (1 + 2e + 2e^2) with e = e^-x. */
INL VT FN(ec_mish)(VT x) {
    FN(ec_expneg_parts) p = FN(ec_expneg)(x);
    VT e = p.e;
    VT a = e + e + 1.0f;
    VT num = FN(ec_sel)(p.pos, x * a, (x * p.ps1) * (e + 2.0f));
    VT den = FN(ec_sel)(p.pos, (e + e) * e + a, e * (e + 2.0f) + 2.0f);
    VT sc = FN(ec_sel)(p.pos, FN(ec_bcast)(1.0f), p.s2);
    return (num / den) * sc;
}

/* e^x: x clamped to [-EC_VM_ZMAX, 89] (NaN stays): 2^n (1 + em) scaled in two halves, so
 * results overflow to inf above 88.72 and go denormal below -87.34 with one rounding;
 * below -EC_VM_ZMAX the second half is 0. */
INL VT FN(ec_exp)(VT x) {
    VI small = x < -EC_VM_ZMAX;
    VT t = FN(ec_sel)(small, FN(ec_bcast)(-EC_VM_ZMAX), x);
    t = FN(ec_sel)(t > 89.0f, FN(ec_bcast)(89.0f), t);
    VI n;
    VT em = FN(ec_expm1_reduced)(t, &n);
    VI n1 = n >> 1, n2 = n - n1;
    VT s1 = FN(ec_pow2)(n1);
    VT s2 = FN(ec_sel)(small, FN(ec_bcast)(0.0f), FN(ec_pow2)(n2));
    return (em * s1 + s1) * s2;
}

/* gelu = x Phi(x).  Phi(-z) = e^{-z^2/2} G(t), t = 1/(1 + a z), G a degree-10 polynomial fit
 * on z in [0, 14.5] (relative error 3e-9 in double; ~2 ulp evaluated in float).  e^{-z^2/2}
 * with z = zh + zl, zh = z with 12 mantissa bits cleared: zh^2 / 2 is exact, the rest is a
 * small correction, so the exponent's argument has no rounding error worth an ulp even at
 * z = 14.  x < 0: x Phi(-z) (scaled as in ec_mul_sigmoid); x >= 0: x (1 - Phi(-z)).
 * Beyond z = 14.5 x Phi(-z) underflows: the scale is 0 (x = -inf: NaN, as today). */
INL VT FN(ec_gelu)(VT x) {
    VT z = FN(ec_abs)(x);
    VI big = z > 14.5f;
    z = FN(ec_sel)(big, FN(ec_bcast)(14.5f), z);
    VT t = 1.0f / (z * EC_VM_GELU_A + 1.0f);
    VT g = FN(ec_bcast)(EC_VM_GELU_G10);
    g = g * t + EC_VM_GELU_G9;
    g = g * t + EC_VM_GELU_G8;
    g = g * t + EC_VM_GELU_G7;
    g = g * t + EC_VM_GELU_G6;
    g = g * t + EC_VM_GELU_G5;
    g = g * t + EC_VM_GELU_G4;
    g = g * t + EC_VM_GELU_G3;
    g = g * t + EC_VM_GELU_G2;
    g = g * t + EC_VM_GELU_G1;
    g = g * t + EC_VM_GELU_G0;
    VT zh = (VT)((VU)z & 0xfffff000u);
    VT zl = z - zh;
    VT th = (zh * zh) * -0.5f;
    VT tl = (zl * (zh + zh + zl)) * -0.5f;
    const VT magic = FN(ec_bcast)(EC_VM_MAGIC);
    VT vn = th * EC_VM_LOG2E + magic;
    VI n = (VI)vn - (VI)magic;
    vn = vn - magic;
    VT r = th - vn * EC_VM_LN2_HI;
    r = (r - vn * EC_VM_LN2_LO) + tl;
    VT q = FN(ec_bcast)(EC_VM_EXP_Q4);
    q = q * r + EC_VM_EXP_Q3;
    q = q * r + EC_VM_EXP_Q2;
    q = q * r + EC_VM_EXP_Q1;
    q = q * r + EC_VM_EXP_Q0;
    VT em = r + (r * r) * q;
    VI n1 = n >> 1, n2 = n - n1;
    VT s1 = FN(ec_pow2)(n1);
    VT s2 = FN(ec_sel)(big, FN(ec_bcast)(0.0f), FN(ec_pow2)(n2));
    VT pg = (em * s1 + s1) * g;                  /* Phi(-z) / 2^n2 */
    VI pos = x >= 0.0f;
    VT phi_neg = pg * s2;
    return FN(ec_sel)(pos, x * (1.0f - phi_neg), (x * pg) * s2);   /* x = inf: inf (1 - 0) */
}

/* --- exact lane-wise ones: the float op is the correctly rounded double result ---------- */

INL VT FN(ec_leaky_relu)(VT x, float alpha) { return FN(ec_sel)(x >= 0.0f, x, x * alpha); }

INL VT FN(ec_hard_tanh)(VT x) {
    VT v = FN(ec_sel)(x < -1.0f, FN(ec_bcast)(-1.0f), x);
    return FN(ec_sel)(v > 1.0f, FN(ec_bcast)(1.0f), v);
}

INL VT FN(ec_hard_shrink)(VT x, float t) {
    return FN(ec_sel)(FN(ec_abs)(x) > t, x, FN(ec_bcast)(0.0f));
}

INL VT FN(ec_soft_shrink)(VT x, float t) {
    VT v = FN(ec_sel)(x < -t, x + t, FN(ec_bcast)(0.0f));
    return FN(ec_sel)(x > t, x - t, v);
}

/* 0.5 (x + 1): x + 1 rounded, then halved exactly, is the double value rounded once. */
INL VT FN(ec_sparse_sigmoid)(VT x) {
    VT v = (x + 1.0f) * 0.5f;
    v = FN(ec_sel)(x <= -1.0f, FN(ec_bcast)(0.0f), v);
    return FN(ec_sel)(x >= 1.0f, FN(ec_bcast)(1.0f), v);
}

/* --- double lanes: the scalar path's exact arithmetic (same ops, same order), so these
 * are bit for bit act_scalar's, kinks included. -------------------------------------- */

INL DT FN(ec_dclip)(DT v, double lo, double hi) {
    DI below = v < lo;
    v = (DT)((below & (DI)((DT){0} + lo)) | (~below & (DI)v));
    DI above = v > hi;
    return (DT)((above & (DI)((DT){0} + hi)) | (~above & (DI)v));
}

/* "/ 6" as "* (1/6)": a double vector division costs 16+ cycles per 8 lanes, which made
 * hard_swish (MobileNetV3's activation) slower than swish's exp; the product is within
 * 2^-52 relative of the quotient, so the float result is the same but for values within
 * that of a float rounding boundary (act_scalar, the scalar path, multiplies the same). */
INL DT FN(ec_dhard_sigmoid)(DT x) { return FN(ec_dclip)(x + 3.0, 0.0, 6.0) * (1.0 / 6.0); }
INL DT FN(ec_dhard_swish)(DT x) { return x * FN(ec_dclip)(x + 3.0, 0.0, 6.0) * (1.0 / 6.0); }
INL DT FN(ec_dhard_sigmoid_k2)(DT x) { return FN(ec_dclip)(0.2 * x + 0.5, 0.0, 1.0); }
INL DT FN(ec_dsoftsign)(DT x) {
    return x / ((DT)((DI)x & 0x7fffffffffffffffLL) + 1.0);
}

/* --- the loops: full vectors straight from x to y (y may be x), the last n % VW elements
 * through a zero-padded vector, so they get the same lane function (never over-reads). -- */

#define EC_VM_LOOP(NAME, EXPR)                                                              \
    static EC_VM_ATTR void FN(NAME)(size_t n, const float *x, float *y,                     \
                                    const f32_vact_params *params) {                        \
        (void)params;                                                                       \
        for (; n >= VW; n -= VW, x += VW, y += VW) {                                        \
            VT v = *(const VT *)x;                                                          \
            *(VT *)y = EXPR;                                                                \
        }                                                                                   \
        if (n) {                                                                            \
            float buf[VW];                                                                  \
            for (size_t i = 0; i < VW; i++) buf[i] = i < n ? x[i] : 0.0f;                   \
            VT v = *(const VT *)buf;                                                        \
            *(VT *)buf = EXPR;                                                              \
            for (size_t i = 0; i < n; i++) y[i] = buf[i];                                   \
        }                                                                                   \
    }

/* The same over VW/2 floats at a time, computed in double lanes. */
#define EC_VM_LOOP_D(NAME, EXPR)                                                            \
    static EC_VM_ATTR void FN(NAME)(size_t n, const float *x, float *y,                     \
                                    const f32_vact_params *params) {                        \
        (void)params;                                                                       \
        for (; n >= VW / 2; n -= VW / 2, x += VW / 2, y += VW / 2) {                        \
            DT v = __builtin_convertvector(*(const HT *)x, DT);                             \
            *(HT *)y = __builtin_convertvector(EXPR, HT);                                   \
        }                                                                                   \
        if (n) {                                                                            \
            float buf[VW / 2];                                                              \
            for (size_t i = 0; i < VW / 2; i++) buf[i] = i < n ? x[i] : 0.0f;               \
            DT v = __builtin_convertvector(*(const HT *)buf, DT);                           \
            *(HT *)buf = __builtin_convertvector(EXPR, HT);                                 \
            for (size_t i = 0; i < n; i++) y[i] = buf[i];                                   \
        }                                                                                   \
    }

EC_VM_LOOP(f32_vsigmoid, FN(ec_sigmoid)(v))
EC_VM_LOOP(f32_vswish, FN(ec_swish)(v))
EC_VM_LOOP(f32_vtanh, FN(ec_tanh)(v))
EC_VM_LOOP(f32_vgelu, FN(ec_gelu)(v))
EC_VM_LOOP(f32_vgelu_tanh, FN(ec_gelu_tanh)(v))
EC_VM_LOOP(f32_velu, FN(ec_elu)(v, params->alpha))
EC_VM_LOOP(f32_vselu, FN(ec_selu)(v))
EC_VM_LOOP(f32_vcelu, FN(ec_celu)(v, params->alpha))
EC_VM_LOOP(f32_vsoftplus, FN(ec_softplus)(v))
EC_VM_LOOP(f32_vlog_sigmoid, FN(ec_log_sigmoid)(v))
EC_VM_LOOP(f32_vmish, FN(ec_mish)(v))
EC_VM_LOOP(f32_vexp, FN(ec_exp)(v))
EC_VM_LOOP(f32_vleaky_relu, FN(ec_leaky_relu)(v, params->alpha))
EC_VM_LOOP(f32_vhard_tanh, FN(ec_hard_tanh)(v))
EC_VM_LOOP(f32_vhard_shrink, FN(ec_hard_shrink)(v, params->threshold))
EC_VM_LOOP(f32_vsoft_shrink, FN(ec_soft_shrink)(v, params->threshold))
EC_VM_LOOP(f32_vsparse_sigmoid, FN(ec_sparse_sigmoid)(v))
EC_VM_LOOP_D(f32_vhard_sigmoid, FN(ec_dhard_sigmoid)(v))
EC_VM_LOOP_D(f32_vhard_sigmoid_k2, FN(ec_dhard_sigmoid_k2)(v))
EC_VM_LOOP_D(f32_vhard_swish, FN(ec_dhard_swish)(v))
EC_VM_LOOP_D(f32_vsoftsign, FN(ec_dsoftsign)(v))

/* This ISA's table, in f32_vact_kernels field order. */
static const f32_vact_kernels FN(f32_vact_kernels) = {
    FN(f32_vsigmoid), FN(f32_vswish), FN(f32_vtanh), FN(f32_vgelu), FN(f32_vgelu_tanh),
    FN(f32_velu), FN(f32_vselu), FN(f32_vcelu), FN(f32_vsoftplus), FN(f32_vlog_sigmoid),
    FN(f32_vmish), FN(f32_vexp), FN(f32_vleaky_relu), FN(f32_vhard_tanh),
    FN(f32_vhard_shrink), FN(f32_vsoft_shrink), FN(f32_vsparse_sigmoid),
    FN(f32_vhard_sigmoid), FN(f32_vhard_sigmoid_k2), FN(f32_vhard_swish), FN(f32_vsoftsign),
};

#undef EC_VM_LOOP
#undef EC_VM_LOOP_D
#undef INL
#undef FN
#undef EC_VM_CAT
#undef EC_VM_CAT2
