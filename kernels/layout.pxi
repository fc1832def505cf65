# Data movement: zero padding / cropping, concatenation (and its backward, a column slice),
# nearest and bilinear upsampling, transposition.  No arithmetic except bilinear
# interpolation.
#
# Everything is NHWC (or flat) and contiguous, so most kernels are memcpy over whole pixel
# rows or channel vectors.  Bilinear upsampling is exactly tf.image.resize(method='bilinear',
# antialias=False), i.e. TF's ResizeBilinear with half_pixel_centers=True, which both Keras 2
# (tf_keras backend.resize_images) and Keras 3 (ops.image.resize) UpSampling2D use: source
# coordinate (o + 0.5) * in/out - 0.5 in float32, rows/cols clamped to the image, and TF's
# lerp order top = tl + (tr - tl) * lx, bottom likewise, out = top + (bottom - top) * ly.
# Backward: upsample_nearest_backward sums each fh x fw block of dy; the bilinear one is the
# transpose of the forward with the same float32 coordinates, each dy pixel spread onto its
# four sources with weights (1-ly)(1-lx), (1-ly)lx, ly(1-lx), ly lx in TF's
# ResizeBilinearGrad order.  Both sum in float: a pixel gets fh*fw (nearest) or about
# 4 * ceil(oh/h) * ceil(ow/w) (bilinear) terms, as TF's float32 kernels do.
# Threads: each kernel but transposition and the bilinear backward (a scatter) splits rows
# of its output, every row written by one thread, so the same bits at any count.
# Non-goals: align_corners, antialiasing, bicubic, reflect padding.

from libc.math cimport floorf, ceilf
from libc.string cimport memcpy, memset


cdef struct _Rows:
    # The arguments of a row-parallel layout kernel (which one: `kind`), so one part
    # function serves them all.
    int kind
    float* y
    const float* x
    Py_ssize_t n, h, w, c, oh, ow, a, b, rows


cdef enum:
    _ROWS_WINDOW = 0        # window_copy_forward: rows (b, i) of y; a, b = top, left
    _ROWS_CONCAT = 1        # concat_forward: rows o; n, h, w = inner_x, inner_y, offset
    _ROWS_CONCAT_BACK = 2   # concat_backward: likewise
    _ROWS_UP_NEAREST = 3    # upsample_nearest_forward: input rows (b, iy); a, b = fh, fw
    _ROWS_UP_NEAREST_BACK = 4   # upsample_nearest_backward: dx rows (b, iy)
    _ROWS_UP_BILINEAR = 5   # upsample_bilinear_forward: output rows (b, oy)


cdef void _rows_range(const _Rows* r, Py_ssize_t r0, Py_ssize_t r1) noexcept nogil:
    if r.kind == _ROWS_WINDOW:
        _window_copy_rows(r.y, r.x, r.h, r.w, r.c, r.oh, r.ow, r.a, r.b, r0, r1)
    elif r.kind == _ROWS_CONCAT:
        _concat_rows(r.y, r.x, r.h, r.w, r.c, r0, r1, False)
    elif r.kind == _ROWS_CONCAT_BACK:
        _concat_rows(r.y, r.x, r.h, r.w, r.c, r0, r1, True)
    elif r.kind == _ROWS_UP_NEAREST:
        _upsample_nearest_rows(r.y, r.x, r.w, r.c, r.a, r.b, r0, r1)
    elif r.kind == _ROWS_UP_NEAREST_BACK:
        _upsample_nearest_back_rows(r.y, r.x, r.w, r.c, r.a, r.b, r0, r1)
    else:
        _upsample_bilinear_rows(r.y, r.x, r.h, r.w, r.c, r.oh, r.ow, r0, r1)


cdef void _rows_part(const _Rows* r, Py_ssize_t part, Py_ssize_t parts) noexcept nogil:
    cdef Py_ssize_t r0, r1
    chunk_bounds(part, parts, r.rows, 1, &r0, &r1)
    if r1 > r0:
        _rows_range(r, r0, r1)


cdef void _rows_run(const _Rows* r, Py_ssize_t floats, int nthreads) noexcept nogil:
    """Run r's kernel over its rows, split across threads when it moves `floats` or more
    (each row is written by one thread: the same bits at any count)."""
    cdef Py_ssize_t part
    cdef int t = par_threads(floats, PAR_MIN_FLOATS, nthreads)
    if t > r.rows:
        t = <int>r.rows
    if t <= 1:
        _rows_range(r, 0, r.rows)
        return
    for part in prange(t, nogil=True, num_threads=t, schedule="static"):
        _rows_part(r, part, t)


cdef inline _Rows _rows_args(int kind, float* y, const float* x, Py_ssize_t rows) noexcept nogil:
    cdef _Rows r
    r.kind = kind
    r.y = y
    r.x = x
    r.rows = rows
    r.n = r.h = r.w = r.c = r.oh = r.ow = r.a = r.b = 0
    return r


cdef void window_copy_forward(float* y_nhwc, const float* x_nhwc, Py_ssize_t n, Py_ssize_t h,
                              Py_ssize_t w, Py_ssize_t c, Py_ssize_t oh, Py_ssize_t ow,
                              Py_ssize_t top, Py_ssize_t left, int nthreads) noexcept nogil:
    """y[b, i, j, :] = x[b, i - top, j - left, :] where that is inside x, else 0; overwrites
    y (n, oh, ow, c).  ZeroPadding2D (top, left >= 0) and Cropping2D (top, left <= 0) in one
    kernel; y must not overlap x.  Threads split the rows of y."""
    cdef _Rows r = _rows_args(_ROWS_WINDOW, y_nhwc, x_nhwc, n * oh)
    r.h, r.w, r.c, r.oh, r.ow, r.a, r.b = h, w, c, oh, ow, top, left
    _rows_run(&r, n * oh * ow * c, nthreads)


cdef void _window_copy_rows(float* y_nhwc, const float* x_nhwc, Py_ssize_t h, Py_ssize_t w,
                            Py_ssize_t c, Py_ssize_t oh, Py_ssize_t ow, Py_ssize_t top,
                            Py_ssize_t left, Py_ssize_t r0, Py_ssize_t r1) noexcept nogil:
    cdef Py_ssize_t b, i, iy, row
    cdef Py_ssize_t j0 = min(max(left, 0), ow)           # first column taken from x
    cdef Py_ssize_t j1 = min(max(w + left, j0), ow)      # one past the last
    cdef float* yr
    for row in range(r0, r1):
        b = row // oh
        i = row - b * oh
        yr = y_nhwc + (b * oh + i) * ow * c
        iy = i - top
        if iy < 0 or iy >= h:
            memset(yr, 0, ow * c * sizeof(float))
            continue
        memset(yr, 0, j0 * c * sizeof(float))
        memcpy(yr + j0 * c, x_nhwc + ((b * h + iy) * w + j0 - left) * c,
               (j1 - j0) * c * sizeof(float))
        memset(yr + j1 * c, 0, (ow - j1) * c * sizeof(float))


cdef void concat_forward(float* y, const float* x, Py_ssize_t outer, Py_ssize_t inner_x,
                         Py_ssize_t inner_y, Py_ssize_t offset, int nthreads) noexcept nogil:
    """Copy x viewed as (outer, inner_x) into columns [offset, offset + inner_x) of y viewed
    as (outer, inner_y); other columns untouched.  Concatenate = one call per input.
    Threads split the outer rows."""
    cdef _Rows r = _rows_args(_ROWS_CONCAT, y, x, outer)
    r.h, r.w, r.c = inner_x, inner_y, offset
    _rows_run(&r, outer * inner_x, nthreads)


cdef void concat_backward(float* dx, const float* dy, Py_ssize_t outer, Py_ssize_t inner_x,
                          Py_ssize_t inner_y, Py_ssize_t offset, int nthreads) noexcept nogil:
    """The gradient of one concat_forward input: dx (outer, inner_x) = columns [offset,
    offset + inner_x) of dy (outer, inner_y).  OVERWRITES dx."""
    cdef _Rows r = _rows_args(_ROWS_CONCAT_BACK, dx, dy, outer)
    r.h, r.w, r.c = inner_x, inner_y, offset
    _rows_run(&r, outer * inner_x, nthreads)


cdef void _concat_rows(float* y, const float* x, Py_ssize_t inner_x, Py_ssize_t inner_y,
                       Py_ssize_t offset, Py_ssize_t r0, Py_ssize_t r1,
                       bint backward) noexcept nogil:
    cdef Py_ssize_t o
    for o in range(r0, r1):
        if backward:    # y = dx (outer, inner_x), x = dy (outer, inner_y)
            memcpy(y + o * inner_x, x + o * inner_y + offset, inner_x * sizeof(float))
        else:
            memcpy(y + o * inner_y + offset, x + o * inner_x, inner_x * sizeof(float))


cdef void upsample_nearest_forward(float* y_nhwc, const float* x_nhwc, Py_ssize_t n,
                                   Py_ssize_t h, Py_ssize_t w, Py_ssize_t c, Py_ssize_t fh,
                                   Py_ssize_t fw, int nthreads) noexcept nogil:
    """UpSampling2D(interpolation='nearest'): each pixel repeated fh x fw times; overwrites y
    (n, h*fh, w*fw, c).  The first copy of each output row is built pixel by pixel, the
    other fh - 1 are copies of it.  Threads split the input rows."""
    cdef _Rows r = _rows_args(_ROWS_UP_NEAREST, y_nhwc, x_nhwc, n * h)
    r.w, r.c, r.a, r.b = w, c, fh, fw
    _rows_run(&r, n * h * fh * w * fw * c, nthreads)


cdef void _upsample_nearest_rows(float* y_nhwc, const float* x_nhwc, Py_ssize_t w,
                                 Py_ssize_t c, Py_ssize_t fh, Py_ssize_t fw, Py_ssize_t r0,
                                 Py_ssize_t r1) noexcept nogil:
    # Input rows r0..r1 of the n * h (b, iy), each giving fh output rows.
    cdef Py_ssize_t ix, f, row = w * fw * c, src_row
    cdef float* yr
    cdef const float* xp
    for src_row in range(r0, r1):
        yr = y_nhwc + src_row * fh * row
        for ix in range(w):
            xp = x_nhwc + (src_row * w + ix) * c
            for f in range(fw):
                memcpy(yr + (ix * fw + f) * c, xp, c * sizeof(float))
        for f in range(1, fh):
            memcpy(yr + f * row, yr, row * sizeof(float))


cdef inline void _bilinear_coord(Py_ssize_t o, float scale, Py_ssize_t size, Py_ssize_t* i0,
                                 Py_ssize_t* i1, float* lerp) noexcept nogil:
    """TF's half-pixel source coordinate of output index o, in float32 as TF computes it."""
    cdef float src = (<float>o + <float>0.5) * scale - <float>0.5
    cdef float fl = floorf(src)
    i0[0] = max(<Py_ssize_t>fl, 0)
    i1[0] = min(<Py_ssize_t>ceilf(src), size - 1)
    lerp[0] = src - fl


cdef void upsample_bilinear_forward(float* y_nhwc, const float* x_nhwc, Py_ssize_t n,
                                    Py_ssize_t h, Py_ssize_t w, Py_ssize_t c, Py_ssize_t oh,
                                    Py_ssize_t ow, int nthreads) noexcept nogil:
    """tf.image.resize(x, (oh, ow), 'bilinear', antialias=False); overwrites y (n, oh, ow,
    c), which must not overlap x.  Threads split the output rows."""
    cdef _Rows r = _rows_args(_ROWS_UP_BILINEAR, y_nhwc, x_nhwc, n * oh)
    r.h, r.w, r.c, r.oh, r.ow = h, w, c, oh, ow
    _rows_run(&r, n * oh * ow * c * 4, nthreads)


cdef void _upsample_bilinear_rows(float* y_nhwc, const float* x_nhwc, Py_ssize_t h,
                                  Py_ssize_t w, Py_ssize_t c, Py_ssize_t oh, Py_ssize_t ow,
                                  Py_ssize_t r0, Py_ssize_t r1) noexcept nogil:
    cdef float sy = <float>h / <float>oh, sx = <float>w / <float>ow
    cdef Py_ssize_t b, oy, ox, j, y0, y1, x0, x1, row
    cdef float ly, lx, top, bot
    cdef const float* tl
    cdef const float* tr
    cdef const float* bl
    cdef const float* br
    cdef float* yp
    for row in range(r0, r1):
        b = row // oh
        oy = row - b * oh
        _bilinear_coord(oy, sy, h, &y0, &y1, &ly)
        for ox in range(ow):
            _bilinear_coord(ox, sx, w, &x0, &x1, &lx)
            tl = x_nhwc + ((b * h + y0) * w + x0) * c
            tr = x_nhwc + ((b * h + y0) * w + x1) * c
            bl = x_nhwc + ((b * h + y1) * w + x0) * c
            br = x_nhwc + ((b * h + y1) * w + x1) * c
            yp = y_nhwc + ((b * oh + oy) * ow + ox) * c
            for j in range(c):
                top = tl[j] + (tr[j] - tl[j]) * lx
                bot = bl[j] + (br[j] - bl[j]) * lx
                yp[j] = top + (bot - top) * ly


cdef void upsample_nearest_backward(float* dx_nhwc, const float* dy_nhwc, Py_ssize_t n,
                                    Py_ssize_t h, Py_ssize_t w, Py_ssize_t c, Py_ssize_t fh,
                                    Py_ssize_t fw, int nthreads) noexcept nogil:
    """dx[b, i, j] = sum of dy over the fh x fw block pixel (i, j) was copied to, in float,
    block row by block row: the gradient of upsample_nearest_forward.  OVERWRITES dx
    (n, h, w, c); dy is (n, h*fh, w*fw, c) and must not overlap dx.  Threads split the
    rows of dx (each sums its own block rows, in the same order)."""
    cdef _Rows r = _rows_args(_ROWS_UP_NEAREST_BACK, dx_nhwc, dy_nhwc, n * h)
    r.w, r.c, r.a, r.b = w, c, fh, fw
    _rows_run(&r, n * h * fh * w * fw * c, nthreads)


cdef void _upsample_nearest_back_rows(float* dx_nhwc, const float* dy_nhwc, Py_ssize_t w,
                                      Py_ssize_t c, Py_ssize_t fh, Py_ssize_t fw,
                                      Py_ssize_t r0, Py_ssize_t r1) noexcept nogil:
    cdef Py_ssize_t ix, f, g, j, row = w * fw * c, src_row
    cdef float* dxp
    cdef const float* src
    for src_row in range(r0, r1):
        for f in range(fh):
            src = dy_nhwc + (src_row * fh + f) * row
            for ix in range(w):
                dxp = dx_nhwc + (src_row * w + ix) * c
                for g in range(fw):
                    if f == 0 and g == 0:
                        memcpy(dxp, src, c * sizeof(float))
                    else:
                        for j in range(c):
                            dxp[j] += src[j]
                    src += c


cdef inline void _add_scaled(float* d, const float* s, Py_ssize_t n, float wy,
                             float wx) noexcept nogil:
    """d[j] += (s[j] * wy) * wx, TF's ResizeBilinearGrad product order.  One destination per
    loop: with all four in one loop (they alias at clamped borders) GCC vectorised nothing
    and the backward of 16x112x112x32 took 14.7 ms against the forward's 5.8 (now 6.3)."""
    cdef Py_ssize_t j
    for j in range(n):
        d[j] += (s[j] * wy) * wx


cdef void upsample_bilinear_backward(float* dx_nhwc, const float* dy_nhwc, Py_ssize_t n,
                                     Py_ssize_t h, Py_ssize_t w, Py_ssize_t c, Py_ssize_t oh,
                                     Py_ssize_t ow) noexcept nogil:
    """The transpose of upsample_bilinear_forward: dx (n, h, w, c) from dy (n, oh, ow, c),
    same float32 source coordinates and lerps; accumulated in float, each dy pixel adding
    into tl, tr, bl, br in that order.  OVERWRITES dx, which must not overlap dy.  Where a
    coordinate is clamped (i0 == i1) both weights land on one pixel, as they do in TF."""
    cdef float sy = <float>h / <float>oh, sx = <float>w / <float>ow
    cdef Py_ssize_t b, oy, ox, y0, y1, x0, x1
    cdef float ly, lx
    cdef float* tl
    cdef float* tr
    cdef float* bl
    cdef float* br
    cdef const float* dyp
    memset(dx_nhwc, 0, n * h * w * c * sizeof(float))
    for b in range(n):
        for oy in range(oh):
            _bilinear_coord(oy, sy, h, &y0, &y1, &ly)
            for ox in range(ow):
                _bilinear_coord(ox, sx, w, &x0, &x1, &lx)
                tl = dx_nhwc + ((b * h + y0) * w + x0) * c
                tr = dx_nhwc + ((b * h + y0) * w + x1) * c
                bl = dx_nhwc + ((b * h + y1) * w + x0) * c
                br = dx_nhwc + ((b * h + y1) * w + x1) * c
                dyp = dy_nhwc + ((b * oh + oy) * ow + ox) * c
                _add_scaled(tl, dyp, c, 1 - ly, 1 - lx)
                _add_scaled(tr, dyp, c, 1 - ly, lx)
                _add_scaled(bl, dyp, c, ly, 1 - lx)
                _add_scaled(br, dyp, c, ly, lx)


cdef void transpose_forward(float* y, const float* x, int rank, const Py_ssize_t* x_shape,
                            const int* perm) noexcept nogil:
    """y = x.transpose(perm) (rank <= 6, y contiguous); overwrites y, which must not overlap
    x.  Axes are collapsed as in binary_forward, so Permute keeping channels last copies
    whole channel vectors with memcpy; otherwise the innermost axis is a strided gather."""
    cdef Py_ssize_t xs[_MAX_RANK]
    cdef Py_ssize_t ys_shape[_MAX_RANK]
    cdef Py_ssize_t ys_src[_MAX_RANK]       # x stride of each y axis
    cdef Py_ssize_t dims[_MAX_RANK]
    cdef Py_ssize_t sx[_MAX_RANK]
    cdef Py_ssize_t unused[_MAX_RANK]
    cdef Py_ssize_t idx[_MAX_RANK]
    cdef Py_ssize_t step = 1, rows = 1, row, xo = 0, inner, s_in, i
    cdef int r, k
    for k in range(rank - 1, -1, -1):
        xs[k] = step
        step *= x_shape[k]
    for k in range(rank):
        ys_shape[k] = x_shape[perm[k]]
        ys_src[k] = xs[perm[k]]
    r = _collapse_axes(rank, ys_shape, ys_src, ys_src, dims, sx, unused)
    inner = dims[r - 1]
    s_in = sx[r - 1]
    for k in range(r - 1):
        rows *= dims[k]
        idx[k] = 0
    for row in range(rows):
        if s_in == 1:
            memcpy(y + row * inner, x + xo, inner * sizeof(float))
        else:
            for i in range(inner):
                y[row * inner + i] = x[xo + i * s_in]
        k = r - 2       # odometer over the outer axes
        while k >= 0:
            idx[k] += 1
            xo += sx[k]
            if idx[k] < dims[k]:
                break
            xo -= sx[k] * dims[k]
            idx[k] = 0
            k -= 1


# --- checked Python entry points ---------------------------------------------------------

cdef void _check_nhwc_pair(const float[:, :, :, ::1] x, float[:, :, :, ::1] y,
                           str name, str xn="x", str yn="y") except *:
    _require(min(x.shape[0], x.shape[1], x.shape[2], x.shape[3]) > 0
             and min(y.shape[0], y.shape[1], y.shape[2], y.shape[3]) > 0,
             f"{name}: empty {xn} {tuple(x.shape)[:4]} or {yn} {tuple(y.shape)[:4]}")
    _require(y.shape[0] == x.shape[0] and y.shape[3] == x.shape[3],
             f"{name}: {yn} {tuple(y.shape)[:4]} must keep the batch and channels of "
             f"{xn} {tuple(x.shape)[:4]}")
    _require(not _overlap(&y[0, 0, 0, 0], y.nbytes, &x[0, 0, 0, 0], x.nbytes),
             f"{name}: {yn} overlaps {xn}")


def window_copy(const float[:, :, :, ::1] x, float[:, :, :, ::1] y, Py_ssize_t top,
                Py_ssize_t left, int nthreads=1):
    """y[b, i, j] = x[b, i - top, j - left] inside x, else 0; overwrites y.  The output
    size is y's: ZeroPadding2D is (top, left) >= 0, Cropping2D is (-crop_top, -crop_left)."""
    _check_nhwc_pair(x, y, "window_copy")
    with nogil:
        window_copy_forward(&y[0, 0, 0, 0], &x[0, 0, 0, 0], x.shape[0], x.shape[1],
                            x.shape[2], x.shape[3], y.shape[1], y.shape[2], top, left,
                            nthreads)


def concat(const float[::1] x, float[::1] y, Py_ssize_t outer, Py_ssize_t offset,
           int nthreads=1):
    """Write x, viewed as (outer, len(x) // outer), into columns [offset, ...) of y viewed
    as (outer, len(y) // outer); other columns of y are untouched."""
    cdef Py_ssize_t inner_x, inner_y
    _require(outer > 0 and x.shape[0] > 0 and x.shape[0] % outer == 0
             and y.shape[0] % outer == 0,
             f"concat: {x.shape[0]} and {y.shape[0]} elements do not split into {outer} rows")
    inner_x = x.shape[0] // outer
    inner_y = y.shape[0] // outer
    _require(0 <= offset and offset + inner_x <= inner_y,
             f"concat: columns [{offset}, {offset + inner_x}) do not fit rows of {inner_y}")
    _require(not _overlap(&y[0], y.nbytes, &x[0], x.nbytes), "concat: y overlaps x")
    with nogil:
        concat_forward(&y[0], &x[0], outer, inner_x, inner_y, offset, nthreads)


def concat_grad(const float[::1] dy, float[::1] dx, Py_ssize_t outer, Py_ssize_t offset,
                int nthreads=1):
    """dx, viewed as (outer, len(dx) // outer), = its columns [offset, ...) of dy viewed as
    (outer, len(dy) // outer): the gradient of one Concatenate input; overwrites dx."""
    cdef Py_ssize_t inner_x, inner_y
    _require(outer > 0 and dx.shape[0] > 0 and dx.shape[0] % outer == 0
             and dy.shape[0] % outer == 0,
             f"concat_grad: {dx.shape[0]} and {dy.shape[0]} elements do not split into {outer} rows")
    inner_x = dx.shape[0] // outer
    inner_y = dy.shape[0] // outer
    _require(0 <= offset and offset + inner_x <= inner_y,
             f"concat_grad: columns [{offset}, {offset + inner_x}) do not fit rows of {inner_y}")
    _require(not _overlap(&dx[0], dx.nbytes, &dy[0], dy.nbytes), "concat_grad: dx overlaps dy")
    with nogil:
        concat_backward(&dx[0], &dy[0], outer, inner_x, inner_y, offset, nthreads)


def upsample_nearest(const float[:, :, :, ::1] x, float[:, :, :, ::1] y, Py_ssize_t fh,
                     Py_ssize_t fw, int nthreads=1):
    """UpSampling2D(size=(fh, fw), interpolation='nearest'); overwrites y."""
    _check_nhwc_pair(x, y, "upsample_nearest")
    _require(fh > 0 and fw > 0, f"upsample_nearest: factors ({fh}, {fw}) must be >= 1")
    _require(y.shape[1] == x.shape[1] * fh and y.shape[2] == x.shape[2] * fw,
             f"upsample_nearest: y is {tuple(y.shape)[:4]}, expected "
             f"{(x.shape[0], x.shape[1] * fh, x.shape[2] * fw, x.shape[3])}")
    with nogil:
        upsample_nearest_forward(&y[0, 0, 0, 0], &x[0, 0, 0, 0], x.shape[0], x.shape[1],
                                 x.shape[2], x.shape[3], fh, fw, nthreads)


def upsample_bilinear(const float[:, :, :, ::1] x, float[:, :, :, ::1] y, int nthreads=1):
    """tf.image.resize(x, y.shape[1:3], 'bilinear') (UpSampling2D bilinear); overwrites y."""
    _check_nhwc_pair(x, y, "upsample_bilinear")
    with nogil:
        upsample_bilinear_forward(&y[0, 0, 0, 0], &x[0, 0, 0, 0], x.shape[0], x.shape[1],
                                  x.shape[2], x.shape[3], y.shape[1], y.shape[2], nthreads)


def upsample_nearest_grad(const float[:, :, :, ::1] dy, float[:, :, :, ::1] dx, Py_ssize_t fh,
                          Py_ssize_t fw, int nthreads=1):
    """Gradient of upsample_nearest(x, y, fh, fw): dx (n, h, w, c) from dy (n, h*fh, w*fw,
    c); overwrites dx."""
    _check_nhwc_pair(dy, dx, "upsample_nearest_grad", "dy", "dx")
    _require(fh > 0 and fw > 0, f"upsample_nearest_grad: factors ({fh}, {fw}) must be >= 1")
    _require(dy.shape[1] == dx.shape[1] * fh and dy.shape[2] == dx.shape[2] * fw,
             f"upsample_nearest_grad: dy is {tuple(dy.shape)[:4]}, expected "
             f"{(dx.shape[0], dx.shape[1] * fh, dx.shape[2] * fw, dx.shape[3])}")
    with nogil:
        upsample_nearest_backward(&dx[0, 0, 0, 0], &dy[0, 0, 0, 0], dx.shape[0], dx.shape[1],
                                  dx.shape[2], dx.shape[3], fh, fw, nthreads)


def upsample_bilinear_grad(const float[:, :, :, ::1] dy, float[:, :, :, ::1] dx):
    """Gradient of upsample_bilinear(x, y) (sizes from dx and dy): dx (n, h, w, c) from dy
    (n, oh, ow, c); overwrites dx."""
    _check_nhwc_pair(dy, dx, "upsample_bilinear_grad", "dy", "dx")
    with nogil:
        upsample_bilinear_backward(&dx[0, 0, 0, 0], &dy[0, 0, 0, 0], dx.shape[0], dx.shape[1],
                                   dx.shape[2], dx.shape[3], dy.shape[1], dy.shape[2])


def transpose(const float[::1] x, float[::1] y, x_shape, perm):
    """y = x.reshape(x_shape).transpose(perm), flat and contiguous; overwrites y."""
    cdef Py_ssize_t c_shape[_MAX_RANK]
    cdef int c_perm[_MAX_RANK]
    cdef Py_ssize_t total = 1
    cdef int rank = len(x_shape), k
    _require(1 <= rank <= _MAX_RANK, f"transpose: rank {rank} not in 1..{_MAX_RANK}")
    _require(sorted(perm) == list(range(rank)),
             f"transpose: {tuple(perm)} is not a permutation of {rank} axes")
    for k in range(rank):
        _require(x_shape[k] >= 1, f"transpose: empty shape {tuple(x_shape)}")
        c_shape[k] = x_shape[k]
        c_perm[k] = perm[k]
        total *= x_shape[k]
    _require(x.shape[0] == total and y.shape[0] == total,
             f"transpose: x has {x.shape[0]} and y {y.shape[0]} elements, shape {tuple(x_shape)} needs {total}")
    _require(not _overlap(&y[0], y.nbytes, &x[0], x.nbytes), "transpose: y overlaps x")
    with nogil:
        transpose_forward(&y[0], &x[0], rank, c_shape, c_perm)
