/* f32 depthwise convolution micro-kernels, depth multiplier 1: one output row of
 * y = clamp(depthwise_conv(x, w) + bias, lo, hi) for a range of channels.
 *
 * Layout: x NHWC (one image at x_img, pixel stride C), w HWC (Keras's HWCM with M = 1, read
 * in place: no packing, so a live training kernel is used as it is), bias C floats or NULL,
 * y_row one output row, pixel stride C.
 *
 * Why C: as for the GEMM (f32_gemm_microkernels.h), Cython cannot spell SIMD vector types.
 * Same portability rules: only GCC/Clang vector extensions, no intrinsics; NEON on aarch64,
 * SSE on baseline x86-64, and on x86-64 AVX2+FMA and AVX-512 variants compiled with
 * per-function target attributes, chosen once per process from __builtin_cpu_supports
 * (dwconv2d.pxi), so -march=native stays opt-in.
 *
 * Design (after studying XNNPACK's f32-dwconv unipass kernels and ncnn's convdw3x3s1/s2;
 * our own code):
 *   - Channel tiles of the vector width VW (16 AVX-512, 8 AVX2, 4 SSE/NEON).  A tile loads
 *     its KH*KW weight vectors and the bias once and sweeps a block of output columns, so
 *     the weights stay in registers (XNNPACK's unipass kernels reload them per pixel from a
 *     packed buffer; ncnn keeps them in registers over a channel-packed image, as here).
 *   - Column blocks: a row is cut into blocks of output columns whose KH input rows span
 *     about EC_DW_BLOCK_BYTES, and every channel tile runs over one block before the next
 *     block starts, so the tiles after the first read the block's input from L1.  (Whole
 *     rows per tile measured 0.6x XNNPACK on 112x112x96 stride 2, whose three input rows of
 *     43 KB do not fit L1; XNNPACK's pixel-by-pixel order reads each pixel once.)
 *   - Interior pixels NP at a time (EC_DW_NP_*, per variant): NP outputs share their input
 *     loads ((NP-1)*SW + KW per tap row for NP*KW multiply-adds) and give NP independent
 *     accumulation chains.  ncnn's 3x3 kernels take 4 columns (x 2 rows) the same way.
 *   - The accumulator starts from the bias; the taps are added in (ky, kx) order; the clamp
 *     (relu, relu6, or +-inf for none) is fused before the store.
 *   - Specialised tiles for 3x3 and 5x5 at horizontal stride 1 and 2, no dilation; every
 *     other kernel (any size, stride, dilation) takes the general tile, whose tap ranges are
 *     computed once per row (vertical) or per border pixel (horizontal).
 *   - Padding without per-tap branches in the interior: output columns [ox0, ox1) read every
 *     horizontal tap without a test; only border columns test each tap and read the zero
 *     vector (XNNPACK's zero buffer) for padding.  An input row above or below the image
 *     reads the zero vector with a pixel stride of 0, so a padded output row runs the same
 *     loops ("pad" tiles); output rows whose KH input rows are all inside take "full" tiles,
 *     where every row has the pixel stride C (fewer registers for addresses).
 *   - Tails by construction, never a masked or out-of-range access: channels [cb, ce) are
 *     covered by whole VW tiles and, for a remainder, one more VW tile ending at ce that
 *     overlaps the previous one (its channels are recomputed with the same arithmetic and
 *     stored again); a range narrower than VW falls to VW/2, ..., 4-wide tiles the same way,
 *     and fewer than 4 channels to a one-lane (scalar) tile.  All widths of one variant are
 *     compiled with the same target attribute and the same tap order, so a channel's value
 *     depends neither on the tile width nor on the block nor on NP (FMA on AVX2/AVX-512 at
 *     every width; separate multiply and add on SSE at every width).
 * Padding taps add 0 * w, as TensorFlow's padded input does (the general tile skips them).
 * Non-goals: depth multiplier > 1 (dwconv2d.pxi's scalar path), other activations (run on
 * the finished row by the caller), threads (the caller splits rows).
 *
 * Names follow XNNPACK's scheme: f32_dwconv_<KH>x<KW>s<SW>_<full|pad>_<VW>c__<isa>.
 */
#ifndef EDGECORE_F32_DWCONV_MICROKERNELS_H
#define EDGECORE_F32_DWCONV_MICROKERNELS_H

#include <stddef.h>
#include <string.h>

typedef struct {
    const float *weights;   /* (KH, KW, C) */
    const float *bias;      /* C floats or NULL */
    size_t h, iw, c;        /* input image height, width, channels */
    size_t kh, kw, sw, dh, dw;
    ptrdiff_t pad_left;
    size_t ow, ox0, ox1;    /* output width; [ox0, ox1): every horizontal tap inside */
    float lo, hi;           /* clamp bounds (-inf, +inf: none) */
} f32_dwconv_args;

/* Output row whose tap row 0 reads input row iy0 (may be < 0 or >= h: padding), channels
 * [cb, ce) of every pixel of y_row; overwrites only those. */
typedef void (*f32_dwconv_row_fn)(const f32_dwconv_args *a, const float *x_img, ptrdiff_t iy0,
                                  float *y_row, size_t cb, size_t ce);

typedef struct {
    const char *name;
    int channel_tile;
    f32_dwconv_row_fn k3x3s1, k3x3s2, k5x5s1, k5x5s2, general;
} f32_dwconv_config;

/* Read for padding taps: as wide as the widest vector, read with pixel stride 0. */
static const float f32_dwconv_zero[16] __attribute__((aligned(64))) = {0};

/* Column blocks, only for horizontal stride >= 2 on an input image larger than
 * EC_DW_BLOCK_IMAGE_BYTES (about an L2): the KH input rows of a block span about
 * EC_DW_BLOCK_BYTES (two thirds of a 48 KiB L1), equal blocks, as few as fit.  Such rows
 * share one input row in three with the next output row and stream the rest from L3 or
 * memory, where one pass per tile over 43 KB rows measured 0.6-0.7x XNNPACK's pixel-by-pixel
 * order on 112x112x96 stride 2; blocked it ran at 0.8-0.9x.  Elsewhere rows stay whole: a
 * block costs every tile its set-up again (callgrind: +20 to +40% instructions at 32 KiB),
 * which measured slower on images that L2 holds and on stride 1 (consecutive output rows
 * share KH-1 input rows). */
#ifndef EC_DW_BLOCK_BYTES
#define EC_DW_BLOCK_BYTES 32768
#endif
#ifndef EC_DW_BLOCK_IMAGE_BYTES
#define EC_DW_BLOCK_IMAGE_BYTES (1 << 20)
#endif

static size_t f32_dwconv_block_columns(const f32_dwconv_args *a) {
    size_t row_bytes = a->kh * a->sw * a->c * sizeof(float) * a->ow;
    size_t blocks = (row_bytes + EC_DW_BLOCK_BYTES - 1) / EC_DW_BLOCK_BYTES;
    if (a->sw < 2 || blocks <= 1 || a->h * a->iw * a->c * sizeof(float) <= EC_DW_BLOCK_IMAGE_BYTES)
        return a->ow;
    return (a->ow + blocks - 1) / blocks;
}

/* Clamp keeping NaN (as TF's Relu / Relu6): replace only where acc < lo or acc > hi, both
 * false for NaN (selecting where acc > lo would map NaN to lo).  C has no vector ?:, so the
 * select goes through the integer mask the comparison gives, as in the GEMM header.  (A
 * lane-by-lane ?: loop became one maxps + minps where GCC vectorised it, but GCC 12 left it
 * scalar in the border and general tiles, and it measured no faster.) */
#define EC_DW_CLAMP_VEC(VT, acc, lo, hi)                                                    \
    do {                                                                                    \
        const VT vlo_ = (VT){0} + lo, vhi_ = (VT){0} + hi;                                  \
        __typeof__(acc < vlo_) below_ = acc < vlo_;                                         \
        acc = (VT)(((__typeof__(below_))acc & ~below_) | ((__typeof__(below_))vlo_ & below_)); \
        __typeof__(acc > vhi_) above_ = acc > vhi_;                                         \
        acc = (VT)(((__typeof__(above_))acc & ~above_) | ((__typeof__(above_))vhi_ & above_)); \
    } while (0)
#define EC_DW_CLAMP_SCALAR(VT, acc, lo, hi)                                                 \
    do {                                                                                    \
        acc = acc < lo ? lo : acc;                                                          \
        acc = acc > hi ? hi : acc;                                                          \
    } while (0)

/* Interior columns [i0, i1) of a block: none of their taps needs a test.  Needs r, rs, k,
 * vb, lo, hi, C from the tile.  Each output adds bias, then the taps in (ky, kx) order, in
 * the NP-pixel loop as in the one-pixel loop after it. */
#define EC_DW_INTERIOR(VT, CLAMP, KH, KW, SW, NP)                                           \
    if (i0 < i1) {                                                                          \
        const float *p[KH];                                                                 \
        const ptrdiff_t ix0 = (ptrdiff_t)(i0 * SW) - a->pad_left;                           \
        _Pragma("GCC unroll 8")                                                             \
        for (int ky = 0; ky < KH; ky++) p[ky] = r[ky] + (size_t)ix0 * rs[ky];               \
        float *yp = y_row + i0 * C + c0;                                                    \
        size_t n = i1 - i0;                                                                 \
        for (; n >= NP; n -= NP) {                                                          \
            VT acc[NP];                                                                     \
            _Pragma("GCC unroll 8")                                                         \
            for (int j = 0; j < NP; j++) acc[j] = vb;                                       \
            _Pragma("GCC unroll 8")                                                         \
            for (int ky = 0; ky < KH; ky++) {                                               \
                VT v[(NP - 1) * SW + KW];                                                   \
                _Pragma("GCC unroll 16")                                                    \
                for (int i = 0; i < (NP - 1) * SW + KW; i++)                                \
                    v[i] = *(const VT *)(p[ky] + i * rs[ky]);                               \
                _Pragma("GCC unroll 8")                                                     \
                for (int kx = 0; kx < KW; kx++) {                                           \
                    _Pragma("GCC unroll 8")                                                 \
                    for (int j = 0; j < NP; j++) acc[j] += v[j * SW + kx] * k[ky * KW + kx]; \
                }                                                                           \
                p[ky] += NP * SW * rs[ky];                                                  \
            }                                                                               \
            _Pragma("GCC unroll 8")                                                         \
            for (int j = 0; j < NP; j++) {                                                  \
                CLAMP(VT, acc[j], lo, hi);                                                  \
                *(VT *)(yp + j * C) = acc[j];                                               \
            }                                                                               \
            yp += NP * C;                                                                   \
        }                                                                                   \
        for (; n != 0; n--) {                                                               \
            VT acc = vb;                                                                    \
            _Pragma("GCC unroll 8")                                                         \
            for (int ky = 0; ky < KH; ky++) {                                               \
                _Pragma("GCC unroll 8")                                                     \
                for (int kx = 0; kx < KW; kx++)                                             \
                    acc += *(const VT *)(p[ky] + kx * rs[ky]) * k[ky * KW + kx];            \
                p[ky] += SW * rs[ky];                                                       \
            }                                                                               \
            CLAMP(VT, acc, lo, hi);                                                         \
            *(VT *)yp = acc;                                                                \
            yp += C;                                                                        \
        }                                                                                   \
    }

/* The specialised tile: KH x KW taps, horizontal stride SW, no dilation, output columns
 * [oa, ob), channels [c0, c0 + VW).  FULL: every tap row is inside the image (pixel stride
 * C everywhere); otherwise rows outside read the zero vector with stride 0.  Loads and
 * stores go through may_alias, aligned(4) vector types (unaligned), as in the GEMM header. */
#define EC_DW_TILE_FIXED(NAME, ATTR, VT, CLAMP, KH, KW, SW, NP, FULL)                       \
    ATTR static void NAME(const f32_dwconv_args *a, const float *x_img, ptrdiff_t iy0,      \
                          float *y_row, size_t c0, size_t oa, size_t ob) {                  \
        const size_t C = a->c;                                                              \
        const ptrdiff_t iw = (ptrdiff_t)a->iw;                                              \
        const float *r[KH];                                                                 \
        size_t rs[KH];                                                                      \
        VT k[KH * KW];                                                                      \
        _Pragma("GCC unroll 8")                                                             \
        for (int ky = 0; ky < KH; ky++) {                                                   \
            ptrdiff_t iy = iy0 + ky;                                                        \
            int in = FULL || (iy >= 0 && iy < (ptrdiff_t)a->h);                             \
            r[ky] = in ? x_img + (size_t)iy * a->iw * C + c0 : f32_dwconv_zero;             \
            rs[ky] = FULL ? C : (in ? C : 0);                                               \
        }                                                                                   \
        const float *wc = a->weights + c0;                                                  \
        _Pragma("GCC unroll 32")                                                            \
        for (int t = 0; t < KH * KW; t++) k[t] = *(const VT *)(wc + t * C);                 \
        const VT vb = a->bias ? *(const VT *)(a->bias + c0) : (VT){0};                      \
        const float lo = a->lo, hi = a->hi;                                                 \
        /* [i0, i1): the block's interior columns; [oa, i0) and [i1, ob) its border. */     \
        size_t i0 = a->ox0 > oa ? a->ox0 : oa, i1 = a->ox1 < ob ? a->ox1 : ob;              \
        if (i0 > ob) i0 = ob;                                                               \
        if (i1 < i0) i1 = i0;                                                               \
        for (size_t ox = oa; ox < ob; ox++) {                                               \
            if (ox == i0) ox = i1;                                                          \
            if (ox >= ob) break;                                                            \
            /* A tap left or right of the image reads the zero vector. */                   \
            ptrdiff_t ix = (ptrdiff_t)(ox * SW) - a->pad_left;                              \
            VT acc = vb;                                                                    \
            _Pragma("GCC unroll 8")                                                         \
            for (int ky = 0; ky < KH; ky++) {                                               \
                _Pragma("GCC unroll 8")                                                     \
                for (int kx = 0; kx < KW; kx++) {                                           \
                    ptrdiff_t xx = ix + kx;                                                 \
                    const float *q = xx >= 0 && xx < iw ? r[ky] + (size_t)xx * rs[ky]       \
                                                        : f32_dwconv_zero;                  \
                    acc += *(const VT *)q * k[ky * KW + kx];                                \
                }                                                                           \
            }                                                                               \
            CLAMP(VT, acc, lo, hi);                                                         \
            *(VT *)(y_row + ox * C + c0) = acc;                                             \
        }                                                                                   \
        EC_DW_INTERIOR(VT, CLAMP, KH, KW, SW, NP)                                           \
    }

/* The general tile: any kernel, stride, dilation.  Tap rows [ky0, ky1) inside the image
 * are found once per row, tap columns once per border pixel; padding taps are skipped. */
#define EC_DW_TILE_GENERAL(NAME, ATTR, VT, CLAMP)                                           \
    ATTR static void NAME(const f32_dwconv_args *a, const float *x_img, ptrdiff_t iy0,      \
                          float *y_row, size_t c0, size_t oa, size_t ob) {                  \
        const size_t C = a->c, kw = a->kw, dh = a->dh, dw = a->dw;                          \
        const ptrdiff_t h = (ptrdiff_t)a->h, iw = (ptrdiff_t)a->iw;                         \
        size_t ky0 = 0, ky1 = 0, kx0, kx1;                                                  \
        /* Numerators kept non-negative: C division truncates toward zero. */               \
        if (iy0 < h) {                                                                      \
            ky0 = iy0 >= 0 ? 0 : (size_t)(-iy0 + (ptrdiff_t)dh - 1) / dh;                   \
            ky1 = (size_t)(h - 1 - iy0) / dh + 1;                                           \
            if (ky1 > a->kh) ky1 = a->kh;                                                   \
        }                                                                                   \
        const VT vb = a->bias ? *(const VT *)(a->bias + c0) : (VT){0};                      \
        const float lo = a->lo, hi = a->hi;                                                 \
        for (size_t ox = oa; ox < ob; ox++) {                                               \
            ptrdiff_t ix = (ptrdiff_t)(ox * a->sw) - a->pad_left;                           \
            kx0 = 0;                                                                        \
            kx1 = kw;                                                                       \
            if (ox < a->ox0 || ox >= a->ox1) {                                              \
                kx0 = ix >= 0 ? 0 : (size_t)(-ix + (ptrdiff_t)dw - 1) / dw;                 \
                kx1 = ix < iw ? (size_t)(iw - 1 - ix) / dw + 1 : 0;                         \
                if (kx1 > kw) kx1 = kw;                                                     \
            }                                                                               \
            VT acc = vb;                                                                    \
            for (size_t ky = ky0; ky < ky1; ky++) {                                         \
                /* In-range taps only: ix + kx * dw >= 0 for kx >= kx0. */                  \
                const float *xr = x_img + (size_t)(iy0 + (ptrdiff_t)(ky * dh)) * a->iw * C + c0; \
                const float *wr = a->weights + ky * kw * C + c0;                            \
                for (size_t kx = kx0; kx < kx1; kx++)                                       \
                    acc += *(const VT *)(xr + (size_t)(ix + (ptrdiff_t)(kx * dw)) * C)      \
                           * *(const VT *)(wr + kx * C);                                    \
            }                                                                               \
            CLAMP(VT, acc, lo, hi);                                                         \
            *(VT *)(y_row + ox * C + c0) = acc;                                             \
        }                                                                                   \
    }

/* Channels [cb, ce) of columns [oa, ob) with tiles T of width W, when the range holds at
 * least W channels: whole tiles, then a remainder as one more tile ending at ce
 * (overlapping the previous one).  Expanded widest first, so a narrower width only runs
 * for a range narrower than every wider one. */
#define EC_DW_COVER(T, W)                                                                   \
    if (ce - cb >= W) {                                                                     \
        size_t c0 = cb;                                                                     \
        for (; c0 + W <= ce; c0 += W) T(a, x_img, iy0, y_row, c0, oa, ob);                  \
        if (c0 < ce) T(a, x_img, iy0, y_row, ce - W, oa, ob);                               \
        continue;                                                                           \
    }

/* The row function: column blocks, and in each block the channel cover. */
#define EC_DW_ROW(NAME, WIDTHS, COVER, ...)                                                 \
    static void NAME(const f32_dwconv_args *a, const float *x_img, ptrdiff_t iy0,           \
                     float *y_row, size_t cb, size_t ce) {                                  \
        const size_t block = f32_dwconv_block_columns(a);                                   \
        for (size_t oa = 0; oa < a->ow; oa += block) {                                      \
            const size_t ob = oa + block < a->ow ? oa + block : a->ow;                      \
            do {                                                                            \
                WIDTHS(COVER, __VA_ARGS__)                                                  \
            } while (0);                                                                    \
        }                                                                                   \
    }

/* Per ISA: the tiles of one shape at every width, the full and pad row functions, and the
 * row function choosing between them.  WIDTHS(M, ...) expands M(width, vector type, clamp,
 * ...) for each width of the variant, widest first, ending with the one-lane tile. */
#define EC_DW_DEF_TILES_FIXED(W, VT, CLAMP, ISA, ATTR, KH, KW, SW, NP)                      \
    EC_DW_TILE_FIXED(f32_dwconv_##KH##x##KW##s##SW##_full_##W##c__##ISA, ATTR, VT, CLAMP,   \
                     KH, KW, SW, NP, 1)                                                     \
    EC_DW_TILE_FIXED(f32_dwconv_##KH##x##KW##s##SW##_pad_##W##c__##ISA, ATTR, VT, CLAMP,    \
                     KH, KW, SW, NP, 0)
#define EC_DW_DEF_TILES_GENERAL(W, VT, CLAMP, ISA, ATTR)                                    \
    EC_DW_TILE_GENERAL(f32_dwconv_general_##W##c__##ISA, ATTR, VT, CLAMP)

#define EC_DW_COVER_FULL(W, VT, CLAMP, ISA, KH, KW, SW)                                     \
    EC_DW_COVER(f32_dwconv_##KH##x##KW##s##SW##_full_##W##c__##ISA, W)
#define EC_DW_COVER_PAD(W, VT, CLAMP, ISA, KH, KW, SW)                                      \
    EC_DW_COVER(f32_dwconv_##KH##x##KW##s##SW##_pad_##W##c__##ISA, W)
#define EC_DW_COVER_GENERAL(W, VT, CLAMP, ISA)                                              \
    EC_DW_COVER(f32_dwconv_general_##W##c__##ISA, W)

#define EC_DW_DEFINE_FIXED(WIDTHS, ISA, ATTR, KH, KW, SW, NP)                               \
    WIDTHS(EC_DW_DEF_TILES_FIXED, ISA, ATTR, KH, KW, SW, NP)                                \
    EC_DW_ROW(f32_dwconv_##KH##x##KW##s##SW##_full__##ISA, WIDTHS, EC_DW_COVER_FULL, ISA,   \
              KH, KW, SW)                                                                   \
    EC_DW_ROW(f32_dwconv_##KH##x##KW##s##SW##_pad__##ISA, WIDTHS, EC_DW_COVER_PAD, ISA,     \
              KH, KW, SW)                                                                   \
    static void f32_dwconv_##KH##x##KW##s##SW##__##ISA(                                     \
        const f32_dwconv_args *a, const float *x_img, ptrdiff_t iy0, float *y_row,          \
        size_t cb, size_t ce) {                                                             \
        if (iy0 >= 0 && iy0 + KH <= (ptrdiff_t)a->h)                                        \
            f32_dwconv_##KH##x##KW##s##SW##_full__##ISA(a, x_img, iy0, y_row, cb, ce);      \
        else                                                                                \
            f32_dwconv_##KH##x##KW##s##SW##_pad__##ISA(a, x_img, iy0, y_row, cb, ce);       \
    }

#define EC_DW_DEFINE_GENERAL(WIDTHS, ISA, ATTR)                                             \
    WIDTHS(EC_DW_DEF_TILES_GENERAL, ISA, ATTR)                                              \
    EC_DW_ROW(f32_dwconv_general__##ISA, WIDTHS, EC_DW_COVER_GENERAL, ISA)

/* NP3S1 ... NP5S2: interior pixels per step of the 3x3 / 5x5, stride 1 / 2 tiles. */
#define EC_DW_DEFINE_VARIANT(WIDTHS, ISA, ATTR, NP3S1, NP3S2, NP5S1, NP5S2)                 \
    EC_DW_DEFINE_FIXED(WIDTHS, ISA, ATTR, 3, 3, 1, NP3S1)                                   \
    EC_DW_DEFINE_FIXED(WIDTHS, ISA, ATTR, 3, 3, 2, NP3S2)                                   \
    EC_DW_DEFINE_FIXED(WIDTHS, ISA, ATTR, 5, 5, 1, NP5S1)                                   \
    EC_DW_DEFINE_FIXED(WIDTHS, ISA, ATTR, 5, 5, 2, NP5S2)                                   \
    EC_DW_DEFINE_GENERAL(WIDTHS, ISA, ATTR)

#define EC_DW_CONFIG(ISA, VW)                                                               \
    {#ISA, VW, f32_dwconv_3x3s1__##ISA, f32_dwconv_3x3s2__##ISA, f32_dwconv_5x5s1__##ISA,   \
     f32_dwconv_5x5s2__##ISA, f32_dwconv_general__##ISA}

/* Pixels per interior step, by register file: 32 vector registers (AVX-512, aarch64 NEON)
 * hold a 3x3 kernel, 4 accumulators and 6 inputs; 16 (SSE, AVX2) do not. */
#ifndef EC_DW_NP_32REG
#define EC_DW_NP_32REG 4, 2, 2, 2
#endif
#ifndef EC_DW_NP_16REG
#define EC_DW_NP_16REG 2, 2, 2, 2
#endif
#define EC_DW_DEFINE_VARIANT_(...) EC_DW_DEFINE_VARIANT(__VA_ARGS__)

/* 16-byte vectors: NEON on aarch64/armv7, SSE on x86-64, scalar code elsewhere. */
typedef float ec_dw_v4f __attribute__((vector_size(16), aligned(4), may_alias));

#define EC_DW_WIDTHS_4(M, ...)                                                              \
    M(4, ec_dw_v4f, EC_DW_CLAMP_VEC, __VA_ARGS__)                                           \
    M(1, float, EC_DW_CLAMP_SCALAR, __VA_ARGS__)

#if defined(__aarch64__)
EC_DW_DEFINE_VARIANT_(EC_DW_WIDTHS_4, neon, , EC_DW_NP_32REG)
#else
EC_DW_DEFINE_VARIANT_(EC_DW_WIDTHS_4, vec128, , EC_DW_NP_16REG)
#endif

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define EC_DW_HAVE_X86_DISPATCH 1
typedef float ec_dw_v8f __attribute__((vector_size(32), aligned(4), may_alias));
typedef float ec_dw_v16f __attribute__((vector_size(64), aligned(4), may_alias));

#define EC_DW_WIDTHS_8(M, ...)                                                              \
    M(8, ec_dw_v8f, EC_DW_CLAMP_VEC, __VA_ARGS__)                                           \
    EC_DW_WIDTHS_4(M, __VA_ARGS__)
#define EC_DW_WIDTHS_16(M, ...)                                                             \
    M(16, ec_dw_v16f, EC_DW_CLAMP_VEC, __VA_ARGS__)                                         \
    EC_DW_WIDTHS_8(M, __VA_ARGS__)

/* "fma" beside avx512f: without it GCC 12 keeps the 8- and 4-wide tiles as separate
 * multiply and add (the VEX FMA needs the fma flag, the EVEX one AVX512VL), which would
 * round the tail channels differently from the 16-wide ones. */
EC_DW_DEFINE_VARIANT_(EC_DW_WIDTHS_8, avx2, __attribute__((target("avx2,fma"))),
                      EC_DW_NP_16REG)
EC_DW_DEFINE_VARIANT_(EC_DW_WIDTHS_16, avx512f, __attribute__((target("avx512f,fma"))),
                      EC_DW_NP_32REG)
#endif

static const f32_dwconv_config f32_dwconv_configs[] = {
#if defined(EC_DW_HAVE_X86_DISPATCH)
    EC_DW_CONFIG(avx512f, 16),
    EC_DW_CONFIG(avx2, 8),
#endif
#if defined(__aarch64__)
    EC_DW_CONFIG(neon, 4),
#else
    EC_DW_CONFIG(vec128, 4),
#endif
};
static const int f32_dwconv_config_count =
    (int)(sizeof(f32_dwconv_configs) / sizeof(f32_dwconv_configs[0]));

static int f32_dwconv_config_supported(int index) {
    if (index < 0 || index >= f32_dwconv_config_count) return 0;
#if defined(EC_DW_HAVE_X86_DISPATCH)
    __builtin_cpu_init();
    if (strcmp(f32_dwconv_configs[index].name, "avx512f") == 0)
        return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("fma");
    if (strcmp(f32_dwconv_configs[index].name, "avx2") == 0)
        return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
#endif
    return 1;
}

/* The row function for a kernel shape: specialised for 3x3 / 5x5, horizontal stride 1 or
 * 2, no dilation (the vertical stride only moves iy0, chosen by the caller); general
 * otherwise. */
static f32_dwconv_row_fn f32_dwconv_row_kernel(const f32_dwconv_config *cfg, size_t kh,
                                               size_t kw, size_t sw, size_t dh, size_t dw) {
    if (dh == 1 && dw == 1 && kh == kw && (sw == 1 || sw == 2)) {
        if (kh == 3) return sw == 1 ? cfg->k3x3s1 : cfg->k3x3s2;
        if (kh == 5) return sw == 1 ? cfg->k5x5s1 : cfg->k5x5s2;
    }
    return cfg->general;
}

#endif /* EDGECORE_F32_DWCONV_MICROKERNELS_H */
