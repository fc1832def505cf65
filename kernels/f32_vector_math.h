/* f32 vector activations: y[i] = f(x[i]) in float32 with range reduction and polynomials,
 * for the activations whose scalar path (act_scalar in activations.pxi: double + libm,
 * rounded once) costs 10-50 ns an element.
 *
 * Same scheme as f32_gemm_microkernels.h: only GCC/Clang vector extensions, one source
 * (f32_vector_math_body.h, included once per ISA) that becomes NEON on aarch64, SSE on
 * baseline x86-64, and on x86-64 also AVX2+FMA and AVX-512 variants compiled with
 * per-function target attributes and chosen once per process from __builtin_cpu_supports;
 * -march=native stays opt-in.  Names: f32_v<activation>__<isa>, XNNPACK's scheme.
 *
 * Contract of every kernel: (n, x, y, params), y[i] = f(x[i]) for i < n; y may be x (each
 * vector is loaded before it is stored) but must not partially overlap it; nothing is
 * read or written past n (the tail goes through a zero-padded vector).  Lane-wise, so an
 * element's result does not depend on its position or on n: any chunking (threads) gives
 * the same bits.  NaN and +-inf give what the scalar path gives (tests/test_kernels_nan.py).
 *
 * Methods (learned from XNNPACK's f32-vsigmoid / f32-vtanh / f32-velu and Cephes-style exp,
 * written anew; coefficients from tests/reference/vmath_fit.py):
 *   exp-family   e^t = 2^n e^r, Cody-Waite reduction, e^r - 1 = r + r^2 Q(r), Q degree 4;
 *                2^n applied in two halves where a result can be denormal, so it is
 *                rounded once and x * (denormal) products (swish, mish, gelu for x << 0)
 *                keep full precision.
 *   sigmoid      1/(1+e) or e/(1+e) with e = e^-|x| (no 1 - s cancellation); swish and
 *                gelu_tanh (x sigmoid(2u), equal to Keras's 0.5 x (1 + tanh u)) multiply
 *                before the division.
 *   tanh, elu    expm1 of a non-positive argument: 2^n (e^r - 1) + (2^n - 1).
 *   softplus     max(x,0) + log1p(e^-|x|), log1p(e) = 2 atanh(e/(2+e)), a degree-3 series
 *                fit in w = s^2 <= 1/9; log_sigmoid(x) = -softplus(-x).
 *   mish         x tanh(softplus x) = x n/(n+2), n = e^x (e^x + 2): no log, no tanh.
 *   gelu         Phi(-|x|) = e^{-x^2/2} G(1/(1 + 0.3|x|)), G degree 10; x^2/2 split exactly.
 *   exact ones   leaky_relu, hard_tanh, hard/soft_shrink, sparse_sigmoid in float (one
 *                correctly rounded op = the scalar path's double rounded once);
 *                hard_sigmoid (both), hard_swish, softsign in double lanes with the scalar
 *                path's own expression: bit for bit act_scalar, kinks included.
 *
 * Measured error vs the exact function, every finite float32 input, max over the ISAs of
 * this x86-64 runner (bench/measure_activations.py; ulp of the exact result; the tests
 * assert these): see the table in README's kernels section and the docstring of
 * activations.pxi, which keeps them beside the scalar path they replace. */
#ifndef EDGECORE_F32_VECTOR_MATH_H
#define EDGECORE_F32_VECTOR_MATH_H

#include <stddef.h>
#include <string.h>

typedef struct {
    float alpha;      /* elu / celu alpha, leaky_relu slope */
    float threshold;  /* hard_shrink / soft_shrink threshold */
} f32_vact_params;

typedef void (*f32_vact_fn)(size_t n, const float *x, float *y, const f32_vact_params *params);

/* One ISA's kernels; the field order is the table order in f32_vector_math_body.h. */
typedef struct {
    f32_vact_fn sigmoid, swish, tanh, gelu, gelu_tanh, elu, selu, celu, softplus, log_sigmoid,
        mish, exp, leaky_relu, hard_tanh, hard_shrink, soft_shrink, sparse_sigmoid,
        hard_sigmoid, hard_sigmoid_k2, hard_swish, softsign;
} f32_vact_kernels;

typedef struct {
    const char *name;
    const f32_vact_kernels *kernels;
} f32_vact_config;

/* Cody-Waite ln 2: the high part has 16 significant bits, so n * EC_VM_LN2_HI is exact for
 * |n| < 256 (our |n| <= 170). */
#define EC_VM_LOG2E 1.4426950216293335f
#define EC_VM_LN2_HI 0.693145751953125f
#define EC_VM_LN2_LO 1.428606765330187e-06f
/* 1.5 * 2^23: t * log2(e) + MAGIC rounds to an integer n held in the low mantissa bits. */
#define EC_VM_MAGIC 12582912.0f
/* |x| beyond which every e^-|x| based activation is 0 or its limit even after a
 * multiplication by x (x e^x < 2^-150 from x = -108.4); keeps n >= -162. */
#define EC_VM_ZMAX 112.0f
#define EC_VM_SELU_SCALE 1.0507010221481323f          /* float(1.0507009873554805) */
#define EC_VM_SELU_SCALE_ALPHA 1.7580993175506592f    /* float(scale * alpha) */
#define EC_VM_GELU_K1 1.5957691669464111f             /* 2 sqrt(2/pi) */
#define EC_VM_GELU_K3 0.07135481387376785f            /* 2 sqrt(2/pi) 0.044715 */
#define EC_VM_GELU_A 0.30000001192092896f             /* float(0.3) */

/* tests/reference/vmath_fit.py */
#define EC_VM_EXP_Q0 0.4999999701976776f
#define EC_VM_EXP_Q1 0.1666654348373413f
#define EC_VM_EXP_Q2 0.04166720062494278f
#define EC_VM_EXP_Q3 0.00836651399731636f
#define EC_VM_EXP_Q4 0.0013882520142942667f
#define EC_VM_LOG1P_R0 0.3333320617675781f
#define EC_VM_LOG1P_R1 0.20010849833488464f
#define EC_VM_LOG1P_R2 0.13999567925930023f
#define EC_VM_LOG1P_R3 0.1401223987340927f
#define EC_VM_GELU_G0 7.064837745929253e-07f
#define EC_VM_GELU_G1 0.1196703240275383f
#define EC_VM_GELU_G2 0.11973569542169571f
#define EC_VM_GELU_G3 0.10930120199918747f
#define EC_VM_GELU_G4 0.08175300806760788f
#define EC_VM_GELU_G5 0.08815287798643112f
#define EC_VM_GELU_G6 -0.06664718687534332f
#define EC_VM_GELU_G7 0.17824818193912506f
#define EC_VM_GELU_G8 -0.2190840095281601f
#define EC_VM_GELU_G9 0.1088886484503746f
#define EC_VM_GELU_G10 -0.020019447430968285f

/* 16-byte vectors and their halves: NEON on aarch64/armv7, SSE on x86-64, scalar code
 * elsewhere. */
typedef float ec_vm_v4f __attribute__((vector_size(16), aligned(4), may_alias));
typedef int ec_vm_v4i __attribute__((vector_size(16), aligned(4), may_alias));
typedef unsigned ec_vm_v4u __attribute__((vector_size(16), aligned(4), may_alias));
typedef float ec_vm_v2f __attribute__((vector_size(8), aligned(4), may_alias));
typedef double ec_vm_v2d __attribute__((vector_size(16)));
typedef long long ec_vm_v2l __attribute__((vector_size(16)));

#define VT ec_vm_v4f
#define VI ec_vm_v4i
#define VU ec_vm_v4u
#define HT ec_vm_v2f
#define DT ec_vm_v2d
#define DI ec_vm_v2l
#define VW 4
#define EC_VM_ATTR
#if defined(__aarch64__)
#define EC_VM_SUF neon
#else
#define EC_VM_SUF vec128
#endif
#include "f32_vector_math_body.h"
#undef VT
#undef VI
#undef VU
#undef HT
#undef DT
#undef DI
#undef VW
#undef EC_VM_ATTR
#undef EC_VM_SUF

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define EC_VM_HAVE_X86_DISPATCH 1
typedef float ec_vm_v8f __attribute__((vector_size(32), aligned(4), may_alias));
typedef int ec_vm_v8i __attribute__((vector_size(32), aligned(4), may_alias));
typedef unsigned ec_vm_v8u __attribute__((vector_size(32), aligned(4), may_alias));
typedef double ec_vm_v4d __attribute__((vector_size(32)));
typedef long long ec_vm_v4l __attribute__((vector_size(32)));
typedef float ec_vm_v16f __attribute__((vector_size(64), aligned(4), may_alias));
typedef int ec_vm_v16i __attribute__((vector_size(64), aligned(4), may_alias));
typedef unsigned ec_vm_v16u __attribute__((vector_size(64), aligned(4), may_alias));
typedef double ec_vm_v8d __attribute__((vector_size(64)));
typedef long long ec_vm_v8l __attribute__((vector_size(64)));

#define VT ec_vm_v8f
#define VI ec_vm_v8i
#define VU ec_vm_v8u
#define HT ec_vm_v4f
#define DT ec_vm_v4d
#define DI ec_vm_v4l
#define VW 8
#define EC_VM_ATTR __attribute__((target("avx2,fma")))
#define EC_VM_SUF avx2
#include "f32_vector_math_body.h"
#undef VT
#undef VI
#undef VU
#undef HT
#undef DT
#undef DI
#undef VW
#undef EC_VM_ATTR
#undef EC_VM_SUF

#define VT ec_vm_v16f
#define VI ec_vm_v16i
#define VU ec_vm_v16u
#define HT ec_vm_v8f
#define DT ec_vm_v8d
#define DI ec_vm_v8l
#define VW 16
#define EC_VM_ATTR __attribute__((target("avx512f")))
#define EC_VM_SUF avx512f
#include "f32_vector_math_body.h"
#undef VT
#undef VI
#undef VU
#undef HT
#undef DT
#undef DI
#undef VW
#undef EC_VM_ATTR
#undef EC_VM_SUF
#endif

/* Best first, as f32_gemm_configs. */
static const f32_vact_config f32_vact_configs[] = {
#if defined(EC_VM_HAVE_X86_DISPATCH)
    {"avx512f", &f32_vact_kernels__avx512f},
    {"avx2", &f32_vact_kernels__avx2},
#endif
#if defined(__aarch64__)
    {"neon", &f32_vact_kernels__neon},
#else
    {"vec128", &f32_vact_kernels__vec128},
#endif
};
static const int f32_vact_config_count =
    (int)(sizeof(f32_vact_configs) / sizeof(f32_vact_configs[0]));

static int f32_vact_config_supported(int index) {
    if (index < 0 || index >= f32_vact_config_count) return 0;
#if defined(EC_VM_HAVE_X86_DISPATCH)
    __builtin_cpu_init();
    if (strcmp(f32_vact_configs[index].name, "avx512f") == 0)
        return __builtin_cpu_supports("avx512f");
    if (strcmp(f32_vact_configs[index].name, "avx2") == 0)
        return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
#endif
    return 1;
}

/* For C callers (the GEMM / depthwise epilogues): the best variant this CPU runs, or the one
 * named by `name` if it is supported here (NULL: not available).  Two ways to use it:
 *   - whole spans: f32_vact_select(NULL)->kernels->swish(n, x, y, &params) on a block
 *     while it is in cache (what activation_forward does; the Cython side keeps its own
 *     table so EDGECORE_ACTIVATION_ISA / set_activation_isa apply);
 *   - in registers: a kernel body compiled for one ISA (same EC_VM_ATTR target) may call
 *     the lane functions ec_swish__avx2(v), ec_sigmoid__neon(v), ... on its accumulators
 *     before storing them; they are static inline and give the same bits as the span
 *     kernels of that ISA. */
static const f32_vact_config *f32_vact_select(const char *name) {
    for (int i = 0; i < f32_vact_config_count; i++)
        if (f32_vact_config_supported(i) &&
            (name == NULL || strcmp(f32_vact_configs[i].name, name) == 0))
            return &f32_vact_configs[i];
    return NULL;
}

#endif /* EDGECORE_F32_VECTOR_MATH_H */
