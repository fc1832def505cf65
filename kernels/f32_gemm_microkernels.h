/* f32 GEMM micro-kernels: C[mr x nc] = clamp(A[mr x kc] . Bpanel[kc x NR] + bias, lo, hi).
 *
 * Why C and not Cython: Cython cannot spell SIMD vector types, and measured on this
 * project's 2-core x86-64 runner the same 4x8 tile written as plain Cython loops ran at
 * ~12 GFLOP/s (GCC does not keep a float[4][8] accumulator in registers) against ~38 with
 * GCC/Clang vector extensions at SSE width and ~190 with the AVX-512 variant.  Everything
 * around the micro-kernel (packing, blocking, im2col, epilogues) is Cython.
 *
 * Portability: only GCC/Clang vector extensions, no intrinsics.  The same source becomes
 * NEON on aarch64 and SSE on baseline x86-64.  On x86-64 the AVX2+FMA and AVX-512 variants
 * are compiled with per-function target attributes and chosen once per process from
 * __builtin_cpu_supports, so the wheel runs on any x86-64 and -march=native stays opt-in.
 *
 * Layout contract (see gemm.pxi):
 *   a     row-major, row stride lda; rows >= mr are never read (the tile aliases row mr-1)
 *   bp    one packed panel: kc rows of NR contiguous floats (zero padded past N)
 *   bias  NR floats of the packed bias (zero padded) or NULL
 *   c     row-major, row stride ldc; only the first nc (<= NR) columns are written
 * Names: f32_gemm[_acc]_<wide|narrow>_<mr|half|1>__<isa>; a variant's MR and NR are in its
 * config row below.
 *
 * Accumulate variant (training: weight gradients summed over row blocks), same contract
 * without bias and clamp: C[mr x nc] += A . Bpanel (f32_gemm_acc_*).  It is a separate
 * function rather than a flag on the forward one so the inference path keeps its exact
 * code (no extra branch or register pressure there).
 */
#ifndef EDGECORE_F32_GEMM_MICROKERNELS_H
#define EDGECORE_F32_GEMM_MICROKERNELS_H

#include <stddef.h>
#include <string.h>

typedef void (*f32_gemm_ukernel_fn)(size_t mr, size_t nc, size_t kc, const float *a,
                                    size_t lda, const float *bp, const float *bias, float *c,
                                    size_t ldc, float lo, float hi);

typedef void (*f32_gemm_acc_ukernel_fn)(size_t mr, size_t nc, size_t kc, const float *a,
                                        size_t lda, const float *bp, float *c, size_t ldc);

/* A variant is a full MR-row tile plus two shorter tiles of the same NR for the rows left
 * over: the full tile on fewer rows still does all MR rows' multiply-adds (the extra rows
 * alias the last one), which for a batch-1 dense layer or a squeeze-excite 1x1 (M = 1)
 * wasted MR-1 of every MR.  ukernel_1 takes 1 row, ukernel_half up to mr_half rows.  All
 * three run the same k loop per element, so which one a row lands in never changes a bit.
 * The narrow tiles (below) serve a last panel of at most NR/2 columns. */
typedef struct {
    const char *name;
    int mr;
    int nr;
    f32_gemm_ukernel_fn ukernel;
    f32_gemm_acc_ukernel_fn ukernel_acc;
    int mr_half;
    f32_gemm_ukernel_fn ukernel_half;
    f32_gemm_acc_ukernel_fn ukernel_acc_half;
    f32_gemm_ukernel_fn ukernel_1;
    f32_gemm_acc_ukernel_fn ukernel_acc_1;
    f32_gemm_ukernel_fn ukernel_narrow;
    f32_gemm_acc_ukernel_fn ukernel_acc_narrow;
    f32_gemm_ukernel_fn ukernel_narrow_1;
    f32_gemm_acc_ukernel_fn ukernel_acc_narrow_1;
} f32_gemm_config;

/* The two parts every tile shares.  The k loop: one rank-1 update per k, a row of the
 * packed panel (NV vectors: 2 for the wide tiles, 1 for the narrow ones, see below) times
 * each row's broadcast A element.  NV is a constant, so `if (NV > 1)` costs nothing.  The
 * broadcast is spelled `a - 0`, an identity the compiler folds away, leaving one broadcast
 * load per row; `0 + a` is not an identity (0 + -0 = +0), so GCC kept a scalar add and a
 * register broadcast per row and k, which share the AVX-512 FMA port: 16 FMAs took 12
 * cycles instead of 8 (measured 100 against OpenBLAS's 140 GFLOP/s on 512x1024x1024). */
#define EC_F32_GEMM_K_LOOP(VT, VW, MR, NV)                                                  \
    for (size_t k = 0; k < kc; k++) {                                                       \
        b0 = *(const VT *)bp;                                                               \
        if (NV > 1) b1 = *(const VT *)(bp + VW);                                            \
        bp += NV * VW;                                                                      \
        for (size_t i = 0; i < MR; i++) {                                                   \
            VT av = ap[i][k] - (VT){0};                                                     \
            acc0[i] += av * b0;                                                             \
            if (NV > 1) acc1[i] += av * b1;                                                 \
        }                                                                                   \
    }

/* Store row i of the tile: straight to C when full, through a small buffer when nc < NR. */
#define EC_F32_GEMM_STORE_ROW(VT, VW, NV)                                                   \
        float *crow = c + i * ldc;                                                          \
        if (nc == NV * VW) {                                                                \
            *(VT *)crow = acc0[i];                                                          \
            if (NV > 1) *(VT *)(crow + VW) = acc1[i];                                       \
        } else {                                                                            \
            float tile[2 * VW];                                                             \
            *(VT *)tile = acc0[i];                                                          \
            if (NV > 1) *(VT *)(tile + VW) = acc1[i];                                       \
            for (size_t j = 0; j < nc; j++) crow[j] = tile[j];                              \
        }

/* acc = clamp(acc, vlo, vhi), replacing only where acc < lo or acc > hi. */
#define EC_F32_GEMM_CLAMP(VT, VI, acc)                                                      \
    do {                                                                                    \
        VI below_ = acc < vlo;                                                              \
        acc = (VT)(((VI)acc & ~below_) | ((VI)vlo & below_));                               \
        VI above_ = acc > vhi;                                                              \
        acc = (VT)(((VI)acc & ~above_) | ((VI)vhi & above_));                               \
    } while (0)

/* The tile body, shared by every ISA: NV vectors of VW floats per row, MR rows.
 * Loads and stores go through `may_alias, aligned(4)` vector types rather than memcpy:
 * under target("avx2") GCC 12 split each 32-byte memcpy into two 16-byte halves through
 * the stack, which made the AVX2 variant slower than the SSE one (measured 4x).  The clamp
 * is a compare-and-select on integer masks (C has no vector ?:), replacing only where
 * acc < lo or acc > hi: both are false for NaN, so a NaN passes as through TF's Relu /
 * Relu6 (selecting where acc > lo would map it to lo), and is skipped when both bounds are
 * infinite (linear layers, and those whose activation runs after the GEMM: the clamp is
 * the identity there, NaN included); full tiles are stored straight to C, partial ones
 * (nc < NR) through a small buffer. */
#define EC_F32_GEMM_BODY(VT, VI, VW, MR, NV)                                                \
    const float *ap[MR];                                                                    \
    VT acc0[MR], acc1[MR], b0, b1 = (VT){0};                                                \
    for (size_t i = 0; i < MR; i++) ap[i] = a + (i < mr ? i : mr - 1) * lda;                \
    if (bias) {                                                                             \
        b0 = *(const VT *)bias;                                                             \
        if (NV > 1) b1 = *(const VT *)(bias + VW);                                          \
    } else {                                                                                \
        b0 = (VT){0};                                                                       \
    }                                                                                       \
    for (size_t i = 0; i < MR; i++) { acc0[i] = b0; acc1[i] = b1; }                         \
    EC_F32_GEMM_K_LOOP(VT, VW, MR, NV)                                                      \
    const VT vlo = (VT){0} + lo, vhi = (VT){0} + hi;                                        \
    const int clamp = lo > -__builtin_inff() || hi < __builtin_inff();                      \
    for (size_t i = 0; i < mr; i++) {                                                       \
        if (clamp) {                                                                        \
            EC_F32_GEMM_CLAMP(VT, VI, acc0[i]);                                             \
            if (NV > 1) EC_F32_GEMM_CLAMP(VT, VI, acc1[i]);                                 \
        }                                                                                   \
        EC_F32_GEMM_STORE_ROW(VT, VW, NV)                                                   \
    }

/* The accumulate tile: the accumulators start from C (rows >= mr alias row mr-1, as A
 * does, and are never stored; a partial tile is loaded through a zero-padded buffer so
 * nothing past column nc is read), then the same k loop, then a plain store. */
#define EC_F32_GEMM_ACC_BODY(VT, VW, MR, NV)                                                \
    const float *ap[MR];                                                                    \
    VT acc0[MR], acc1[MR], b0, b1 = (VT){0};                                                \
    for (size_t i = 0; i < MR; i++) {                                                       \
        size_t r = i < mr ? i : mr - 1;                                                     \
        const float *crow = c + r * ldc;                                                    \
        ap[i] = a + r * lda;                                                                \
        if (nc == NV * VW) {                                                                \
            acc0[i] = *(const VT *)crow;                                                    \
            acc1[i] = NV > 1 ? *(const VT *)(crow + VW) : b1;                               \
        } else {                                                                            \
            float tile[2 * VW] = {0};                                                       \
            for (size_t j = 0; j < nc; j++) tile[j] = crow[j];                              \
            acc0[i] = *(const VT *)tile;                                                    \
            acc1[i] = *(const VT *)(tile + VW);                                             \
        }                                                                                   \
    }                                                                                       \
    EC_F32_GEMM_K_LOOP(VT, VW, MR, NV)                                                      \
    for (size_t i = 0; i < mr; i++) {                                                       \
        EC_F32_GEMM_STORE_ROW(VT, VW, NV)                                                   \
    }

#define EC_DEFINE_F32_GEMM_ACC(NAME, ATTR, VT, VW, MR, NV)                                  \
    ATTR static void NAME(size_t mr, size_t nc, size_t kc, const float *a, size_t lda,      \
                          const float *bp, float *c, size_t ldc) {                          \
        EC_F32_GEMM_ACC_BODY(VT, VW, MR, NV)                                                \
    }

#define EC_DEFINE_F32_GEMM(NAME, ATTR, VT, VI, VW, MR, NV)                                  \
    ATTR static void NAME(size_t mr, size_t nc, size_t kc, const float *a, size_t lda,      \
                          const float *bp, const float *bias, float *c, size_t ldc,         \
                          float lo, float hi) {                                             \
        EC_F32_GEMM_BODY(VT, VI, VW, MR, NV)                                                \
    }

/* Narrow tiles (NV = 1): one vector per row (NR/2 columns) for a last panel of at most
 * NR/2 columns, which f32_gemm_pack_b stores as kc rows of NR/2 floats (see gemm.pxi).  A
 * 16-channel layer on the AVX-512 tile (NR = 32) otherwise did twice its multiply-adds.
 * Same per-element k loop as the wide tiles, so the same bits. */

/* Every variant's family: the wide MR, half-MR and 1-row tiles and the narrow MR and 1-row
 * ones, forward and accumulate. */
#define EC_DEFINE_F32_GEMM_FAMILY(ISA, ATTR, VT, VI, VW, MR, MRH)                           \
    EC_DEFINE_F32_GEMM(f32_gemm_wide_mr__##ISA, ATTR, VT, VI, VW, MR, 2)                    \
    EC_DEFINE_F32_GEMM_ACC(f32_gemm_acc_wide_mr__##ISA, ATTR, VT, VW, MR, 2)                \
    EC_DEFINE_F32_GEMM(f32_gemm_wide_half__##ISA, ATTR, VT, VI, VW, MRH, 2)                 \
    EC_DEFINE_F32_GEMM_ACC(f32_gemm_acc_wide_half__##ISA, ATTR, VT, VW, MRH, 2)             \
    EC_DEFINE_F32_GEMM(f32_gemm_wide_1__##ISA, ATTR, VT, VI, VW, 1, 2)                      \
    EC_DEFINE_F32_GEMM_ACC(f32_gemm_acc_wide_1__##ISA, ATTR, VT, VW, 1, 2)                  \
    EC_DEFINE_F32_GEMM(f32_gemm_narrow_mr__##ISA, ATTR, VT, VI, VW, MR, 1)                  \
    EC_DEFINE_F32_GEMM_ACC(f32_gemm_acc_narrow_mr__##ISA, ATTR, VT, VW, MR, 1)              \
    EC_DEFINE_F32_GEMM(f32_gemm_narrow_1__##ISA, ATTR, VT, VI, VW, 1, 1)                    \
    EC_DEFINE_F32_GEMM_ACC(f32_gemm_acc_narrow_1__##ISA, ATTR, VT, VW, 1, 1)

#define EC_F32_GEMM_CONFIG(NAME, ISA, MR, NR, MRH)                                          \
    {NAME, MR, NR, f32_gemm_wide_mr__##ISA, f32_gemm_acc_wide_mr__##ISA,                    \
     MRH, f32_gemm_wide_half__##ISA, f32_gemm_acc_wide_half__##ISA,                         \
     f32_gemm_wide_1__##ISA, f32_gemm_acc_wide_1__##ISA,                                    \
     f32_gemm_narrow_mr__##ISA, f32_gemm_acc_narrow_mr__##ISA,                              \
     f32_gemm_narrow_1__##ISA, f32_gemm_acc_narrow_1__##ISA}

/* 16-byte vectors: NEON on aarch64/armv7, SSE on x86-64, scalar code elsewhere. */
typedef float ec_v4f __attribute__((vector_size(16), aligned(4), may_alias));
typedef int ec_v4i __attribute__((vector_size(16), aligned(4), may_alias));

#if defined(__aarch64__)
/* 32 vector registers: 8 rows x 2 vectors = 16 accumulators leave room for B and A. */
EC_DEFINE_F32_GEMM_FAMILY(neon, , ec_v4f, ec_v4i, 4, 8, 4)
#else
/* 16 vector registers on SSE: 4 x 2 accumulators plus B and broadcast A. */
EC_DEFINE_F32_GEMM_FAMILY(vec128, , ec_v4f, ec_v4i, 4, 4, 2)
#endif

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define EC_HAVE_X86_DISPATCH 1
typedef float ec_v8f __attribute__((vector_size(32), aligned(4), may_alias));
typedef int ec_v8i __attribute__((vector_size(32), aligned(4), may_alias));
typedef float ec_v16f __attribute__((vector_size(64), aligned(4), may_alias));
typedef int ec_v16i __attribute__((vector_size(64), aligned(4), may_alias));
/* AVX2: 16 ymm registers, 6 x 2 accumulators (the classic 6x16 tile). */
EC_DEFINE_F32_GEMM_FAMILY(avx2_fma, __attribute__((target("avx2,fma"))), ec_v8f, ec_v8i, 8, 6, 3)
/* AVX-512: 32 zmm registers, 8 x 2 accumulators. */
EC_DEFINE_F32_GEMM_FAMILY(avx512f, __attribute__((target("avx512f"))), ec_v16f, ec_v16i, 16, 8, 4)
#endif

static const f32_gemm_config f32_gemm_configs[] = {
#if defined(EC_HAVE_X86_DISPATCH)
    EC_F32_GEMM_CONFIG("avx512f", avx512f, 8, 32, 4),
    EC_F32_GEMM_CONFIG("avx2", avx2_fma, 6, 16, 3),
#endif
#if defined(__aarch64__)
    EC_F32_GEMM_CONFIG("neon", neon, 8, 8, 4),
#else
    EC_F32_GEMM_CONFIG("vec128", vec128, 4, 8, 2),
#endif
};
static const int f32_gemm_config_count =
    (int)(sizeof(f32_gemm_configs) / sizeof(f32_gemm_configs[0]));

static int f32_gemm_config_supported(int index) {
    if (index < 0 || index >= f32_gemm_config_count) return 0;
#if defined(EC_HAVE_X86_DISPATCH)
    __builtin_cpu_init();
    if (strcmp(f32_gemm_configs[index].name, "avx512f") == 0)
        return __builtin_cpu_supports("avx512f");
    if (strcmp(f32_gemm_configs[index].name, "avx2") == 0)
        return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
#endif
    return 1;
}

#endif /* EDGECORE_F32_GEMM_MICROKERNELS_H */
