/* Conv2d forward and backward over (C, B, H, W) activations.
 *
 * Our algorithms below (Winograd and direct in their own files), chosen once
 * per layer by af_conv2d_init; on AVX-512 CPUs the float32 layers of the
 * shapes listed in conv_dnnl.c go to oneDNN instead (algorithm DNNL), with
 * af_conv2d_own_algo's choice as the fallback:
 *  - GEMM1X1: a 1x1 stride-1 convolution is already a GEMM on the activation
 *    rows, out(C_out, B*H*W) = W(C_out, C_in) x in(C_in, B*H*W); no copy.
 *  - IM2COL (groups == 1): output rows (b, oy) are cut into tiles whose
 *    im2col block (C_in*kh*kw, tile) fits the cache budget, so even the
 *    full-resolution 112x112 layers never build a batch-sized column matrix.
 *    Each thread owns a contiguous range of output rows and its own tile.
 *    For stride-1 layers the input gradient is itself a convolution of dy
 *    with the flipped, transposed kernel, computed with the same tiled
 *    routine; that keeps the big inner dimension (C_out*kh*kw) on the GEMM
 *    and avoids col2im's scattered adds. Strided layers use col2im, with the
 *    batch split by samples so that threads never add into the same rows.
 *  - DIRECT (grouped and depthwise): plain loops over planes, one group per
 *    iteration of a parallel loop, so forward, dx and dw are race-free.
 * Weight gradients of the GEMM algorithms are accumulated per thread (thread
 * 0 into dw itself, the others into workspace copies) and then summed in a
 * fixed order, so a run is reproducible for a given thread count. */
#include "arcface/nn.h"

#include <string.h>

#include "nn_internal.h"

af_status af_conv2d_init(af_conv2d *c, int cin, int cout, int h, int w, int kh, int kw, int sh, int sw, int ph,
                         int pw, int groups)
{
    memset(c, 0, sizeof *c);
    if (cin < 1 || cout < 1 || kh < 1 || kw < 1 || sh < 1 || sw < 1 || ph < 0 || pw < 0 || groups < 1)
        return af_errorf(AF_ERR_ARG, "conv2d: invalid geometry cin=%d cout=%d kernel=%dx%d stride=%dx%d pad=%dx%d groups=%d",
                         cin, cout, kh, kw, sh, sw, ph, pw, groups);
    if (cin % groups || cout % groups)
        return af_errorf(AF_ERR_ARG, "conv2d: groups=%d must divide cin=%d and cout=%d", groups, cin, cout);
    if (h + 2 * ph < kh || w + 2 * pw < kw)
        return af_errorf(AF_ERR_ARG, "conv2d: input %dx%d with padding %dx%d is smaller than kernel %dx%d", h, w, ph, pw,
                         kh, kw);
    *c = (af_conv2d){.cin = cin, .cout = cout, .kh = kh, .kw = kw, .sh = sh, .sw = sw, .ph = ph, .pw = pw,
                     .groups = groups, .h = h, .w = w};
    c->oh = (h + 2 * ph - kh) / sh + 1;
    c->ow = (w + 2 * pw - kw) / sw + 1;
    if (groups > 1 && kh * kw > 64)
        return af_errorf(AF_ERR_ARG, "conv2d: grouped convolution with a %dx%d kernel (more than 64 taps) is not supported",
                         kh, kw);
    c->flip_dx = sh == 1 && sw == 1 && ph <= kh - 1 && pw <= kw - 1;
    c->algo = af_conv2d_algo_ok(c, AF_CONV2D_ALGO_DNNL) ? AF_CONV2D_ALGO_DNNL : af_conv2d_own_algo(c);
    return AF_OK;
}

af_conv2d_algo af_conv2d_own_algo(const af_conv2d *c)
{
    /* Winograd pays off once the GEMMs' inner dimension (the channels) is
     * large enough to keep the 16 small GEMMs efficient */
    if (af_conv2d_algo_ok(c, AF_CONV2D_ALGO_WINOGRAD) && c->cin >= 16 && c->cout >= 16)
        return AF_CONV2D_ALGO_WINOGRAD;
    if (af_conv2d_algo_ok(c, AF_CONV2D_ALGO_GEMM1X1)) return AF_CONV2D_ALGO_GEMM1X1;
    if (af_conv2d_algo_ok(c, AF_CONV2D_ALGO_IM2COL)) return AF_CONV2D_ALGO_IM2COL;
    return AF_CONV2D_ALGO_DIRECT;
}

int af_conv2d_algo_ok(const af_conv2d *c, af_conv2d_algo algo)
{
    switch (algo) {
    case AF_CONV2D_ALGO_GEMM1X1:
        return c->groups == 1 && c->kh == 1 && c->kw == 1 && c->sh == 1 && c->sw == 1 && c->ph == 0 && c->pw == 0;
    case AF_CONV2D_ALGO_IM2COL: return c->groups == 1;
    case AF_CONV2D_ALGO_DIRECT: return c->kh * c->kw <= 64;
    case AF_CONV2D_ALGO_WINOGRAD:
        return c->groups == 1 && c->kh == 3 && c->kw == 3 && c->sh == 1 && c->sw == 1 && c->ph == 1 && c->pw == 1;
    case AF_CONV2D_ALGO_DNNL: return nn_dnnl_wanted(c);
    }
    return 0;
}

const char *af_conv2d_algo_name(af_conv2d_algo algo)
{
    switch (algo) {
    case AF_CONV2D_ALGO_GEMM1X1: return "gemm1x1";
    case AF_CONV2D_ALGO_IM2COL: return "im2col";
    case AF_CONV2D_ALGO_DIRECT: return "direct";
    case AF_CONV2D_ALGO_WINOGRAD: return "winograd";
    case AF_CONV2D_ALGO_DNNL: return "onednn";
    }
    return "?";
}

double af_conv2d_macs(const af_conv2d *c)
{
    return (double)c->cout * c->oh * c->ow * (c->cin / c->groups) * c->kh * c->kw;
}

/* The convolution whose forward pass is this layer's input gradient (stride 1 only). */
static af_conv2d conv_transposed(const af_conv2d *c)
{
    af_conv2d t;
    af_conv2d_init(&t, c->cout, c->cin, c->oh, c->ow, c->kh, c->kw, 1, 1, c->kh - 1 - c->ph, c->kw - 1 - c->pw, 1);
    t.algo = af_conv2d_own_algo(&t); /* its im2col internals are used, never oneDNN */
    t.prec = c->prec;
    return t;
}

static size_t conv_k(const af_conv2d *c) { return (size_t)(c->cin / c->groups) * c->kh * c->kw; }
static size_t conv_wsize(const af_conv2d *c) { return (size_t)c->cout * conv_k(c); }

/* Output rows (b, oy) per im2col tile. A tile is normally sized to stay in
 * cache, but never below min_cols columns: for the deep layers (K = 2304 or
 * 4608) a cache-sized tile would be a few dozen columns, and each GEMM call
 * would re-pack the whole weight matrix (forward) or re-read and re-write the
 * whole weight gradient (backward) for very little work. */
static size_t tile_rows_min(const af_conv2d *c, size_t min_cols)
{
    const size_t per_row = conv_k(c) * (size_t)c->ow;
    size_t r = NN_COL_TILE_FLOATS / per_row;
    size_t rmin = (min_cols + c->ow - 1) / c->ow;
    if (r < rmin) r = rmin;
    return r ? r : 1;
}
static size_t tile_rows(const af_conv2d *c) { return tile_rows_min(c, NN_FWD_MIN_COLS); }
static size_t tile_rows_dw(const af_conv2d *c) { return tile_rows_min(c, NN_DW_MIN_COLS); }

static size_t col_floats(const af_conv2d *c, int max_batch)
{
    size_t rows = tile_rows(c), total = (size_t)max_batch * c->oh;
    if (tile_rows_dw(c) > rows) rows = tile_rows_dw(c);
    if (rows > total) rows = total;
    return nn_align(conv_k(c) * rows * (size_t)c->ow);
}

/* Workspace: [flipped kernel][T-1 weight-gradient copies][T im2col tiles]. */
typedef struct {
    size_t flip, dwcopy, col, total;
} conv_ws_layout;

static conv_ws_layout conv_ws(const af_conv2d *c, int max_batch, int nthreads)
{
    conv_ws_layout l = {0};
    if (c->algo == AF_CONV2D_ALGO_DIRECT) {
        l.total = (size_t)nthreads * nn_direct_workspace(c);
        return l;
    }
    if (c->algo == AF_CONV2D_ALGO_WINOGRAD) {
        l.total = nn_winograd_workspace(c, max_batch, nthreads);
        return l;
    }
    size_t col = 0;
    if (c->algo == AF_CONV2D_ALGO_IM2COL) {
        col = col_floats(c, max_batch);
        if (c->flip_dx) {
            af_conv2d t = conv_transposed(c);
            size_t ct = col_floats(&t, max_batch);
            if (ct > col) col = ct;
            l.flip = nn_align(conv_wsize(c));
        }
    }
    l.dwcopy = nn_align(conv_wsize(c));
    l.col = col;
    l.total = l.flip + (size_t)(nthreads - 1) * l.dwcopy + (size_t)nthreads * col;
    return l;
}

size_t af_conv2d_workspace(const af_conv2d *c, int max_batch, int nthreads)
{
    if (nthreads < 1) nthreads = 1;
    /* a oneDNN layer keeps its own buffers, but may fall back to ours */
    af_conv2d own = *c;
    if (c->algo == AF_CONV2D_ALGO_DNNL) own.algo = af_conv2d_own_algo(c);
    return conv_ws(&own, max_batch, nthreads).total;
}

/* col (K, nr*ow) for output rows [r0, r0+nr) of x (cin, B, h, w). */
static void im2col(const af_conv2d *c, int B, const float *x, size_t r0, size_t nr, float *col)
{
    const int H = c->h, W = c->w, OH = c->oh, OW = c->ow;
    const size_t ncol = nr * (size_t)OW;
    for (int ci = 0; ci < c->cin; ci++)
        for (int ki = 0; ki < c->kh; ki++)
            for (int kj = 0; kj < c->kw; kj++) {
                float *dst = col + ((size_t)(ci * c->kh + ki) * c->kw + kj) * ncol;
                const int ix0 = kj - c->pw;
                /* ox range whose input column lies inside the image */
                int lo = ix0 < 0 ? (-ix0 + c->sw - 1) / c->sw : 0;
                int hi = (W - 1 - ix0) >= 0 ? (W - 1 - ix0) / c->sw + 1 : 0;
                if (hi > OW) hi = OW;
                if (lo > hi) lo = hi;
                for (size_t r = r0; r < r0 + nr; r++, dst += OW) {
                    const int b = (int)(r / OH), oy = (int)(r % OH);
                    const int iy = oy * c->sh - c->ph + ki;
                    if (iy < 0 || iy >= H) {
                        memset(dst, 0, sizeof(float) * OW);
                        continue;
                    }
                    const float *src = x + (((size_t)ci * B + b) * H + iy) * W + ix0;
                    for (int ox = 0; ox < lo; ox++) dst[ox] = 0.0f;
                    if (c->sw == 1) memcpy(dst + lo, src + lo, sizeof(float) * (hi - lo));
                    else if (c->sw == 2) /* a constant stride lets the compiler vectorise the gather */
                        for (int ox = lo; ox < hi; ox++) dst[ox] = src[2 * ox];
                    else
                        for (int ox = lo; ox < hi; ox++) dst[ox] = src[ox * c->sw];
                    for (int ox = hi; ox < OW; ox++) dst[ox] = 0.0f;
                }
            }
}

/* dx (cin, B, h, w) += col2im(dcol) for output rows [r0, r0+nr). */
static void col2im_add(const af_conv2d *c, int B, const float *dcol, size_t r0, size_t nr, float *dx)
{
    const int H = c->h, W = c->w, OH = c->oh, OW = c->ow;
    const size_t ncol = nr * (size_t)OW;
    for (int ci = 0; ci < c->cin; ci++)
        for (int ki = 0; ki < c->kh; ki++)
            for (int kj = 0; kj < c->kw; kj++) {
                const float *src = dcol + ((size_t)(ci * c->kh + ki) * c->kw + kj) * ncol;
                const int ix0 = kj - c->pw;
                int lo = ix0 < 0 ? (-ix0 + c->sw - 1) / c->sw : 0;
                int hi = (W - 1 - ix0) >= 0 ? (W - 1 - ix0) / c->sw + 1 : 0;
                if (hi > OW) hi = OW;
                for (size_t r = r0; r < r0 + nr; r++, src += OW) {
                    const int b = (int)(r / OH), oy = (int)(r % OH);
                    const int iy = oy * c->sh - c->ph + ki;
                    if (iy < 0 || iy >= H) continue;
                    float *dst = dx + (((size_t)ci * B + b) * H + iy) * W + ix0;
                    if (c->sw == 1)
                        for (int ox = lo; ox < hi; ox++) dst[ox] += src[ox];
                    else if (c->sw == 2)
                        for (int ox = lo; ox < hi; ox++) dst[2 * ox] += src[ox];
                    else
                        for (int ox = lo; ox < hi; ox++) dst[ox * c->sw] += src[ox];
                }
            }
}

/* y rows [r_lo, r_hi) = beta*y + conv(x, w), groups == 1, im2col tiles in col. */
static void im2col_rows_forward(const af_conv2d *c, int B, const float *x, const float *w, float *y, float beta,
                                size_t r_lo, size_t r_hi, float *col)
{
    const int K = (int)conv_k(c);
    const size_t ldy = (size_t)B * c->oh * c->ow, step = tile_rows(c);
    for (size_t r0 = r_lo; r0 < r_hi; r0 += step) {
        size_t nr = r_hi - r0 < step ? r_hi - r0 : step;
        int nt = (int)(nr * c->ow);
        im2col(c, B, x, r0, nr, col);
        nn_gemm(c->prec, 0, 0, c->cout, nt, K, 1.0f, w, K, col, nt, beta,
                    y + r0 * c->ow, (int)ldy);
    }
}

void af_conv2d_forward(const af_conv2d *c, int B, const float *x, const float *w, const float *bias, float *y,
                       float *ws, int nthreads)
{
    if (nthreads < 1) nthreads = 1;
    af_conv2d own;
    if (c->algo == AF_CONV2D_ALGO_DNNL) {
        if (!bias && nn_dnnl_forward(c, B, x, w, y, nthreads) == 0) return;
        own = *c;
        own.algo = af_conv2d_own_algo(c);
        c = &own;
    }
    int saved = nn_blas_single_begin();
    const size_t OHW = (size_t)c->oh * c->ow, ncols = (size_t)B * OHW;
    const conv_ws_layout L = conv_ws(c, B, nthreads);
    if (c->algo == AF_CONV2D_ALGO_DIRECT || c->algo == AF_CONV2D_ALGO_WINOGRAD) {
        if (c->algo == AF_CONV2D_ALGO_DIRECT) nn_direct_forward(c, B, x, w, bias, y, ws, nthreads);
        else {
            nn_winograd_forward(c, B, x, w, y, ws, nthreads);
            if (bias)
#pragma omp parallel for num_threads(nthreads) schedule(static)
                for (int co = 0; co < c->cout; co++)
                    for (size_t i = 0; i < ncols; i++) y[co * ncols + i] += bias[co];
        }
        nn_blas_single_end(saved);
        return;
    }
#pragma omp parallel num_threads(nthreads)
    {
        const int t = nn_thread_id(), T = nn_thread_count();
        {
            size_t lo, hi;
            float beta = 0.0f;
            if (c->algo == AF_CONV2D_ALGO_GEMM1X1) nn_split(ncols, t, T, &lo, &hi);
            else nn_split((size_t)B * c->oh, t, T, &lo, &hi);
            size_t clo = c->algo == AF_CONV2D_ALGO_GEMM1X1 ? lo : lo * c->ow;
            size_t chi = c->algo == AF_CONV2D_ALGO_GEMM1X1 ? hi : hi * c->ow;
            if (bias) {
                for (int co = 0; co < c->cout; co++)
                    for (size_t i = clo; i < chi; i++) y[co * ncols + i] = bias[co];
                beta = 1.0f;
            }
            if (hi > lo) {
                if (c->algo == AF_CONV2D_ALGO_GEMM1X1)
                    nn_gemm(c->prec, 0, 0, c->cout, (int)(hi - lo), c->cin, 1.0f, w,
                                c->cin, x + lo, (int)ncols, beta, y + lo, (int)ncols);
                else
                    im2col_rows_forward(c, B, x, w, y, beta, lo, hi, ws + L.flip + (T - 1) * L.dwcopy + t * L.col);
            }
        }
    }
    nn_blas_single_end(saved);
}

void af_conv2d_backward(const af_conv2d *c, int B, const float *x, const float *w, const float *dy, float *dx,
                        int dx_accum, float *dw, float *dbias, float *ws, int nthreads)
{
    if (nthreads < 1) nthreads = 1;
    af_conv2d own;
    if (c->algo == AF_CONV2D_ALGO_DNNL) {
        if (!dbias && nn_dnnl_backward(c, B, x, w, dy, dx, dx_accum, dw, nthreads) == 0) return;
        own = *c;
        own.algo = af_conv2d_own_algo(c);
        c = &own;
    }
    int saved = nn_blas_single_begin();
    const size_t OHW = (size_t)c->oh * c->ow, ncols = (size_t)B * OHW;
    const size_t HW = (size_t)c->h * c->w, nin = (size_t)B * HW;
    const conv_ws_layout L = conv_ws(c, B, nthreads);
    const size_t wsize = conv_wsize(c);
    const int K = (int)conv_k(c);
    af_conv2d tr;
    if (c->flip_dx && dx && c->algo == AF_CONV2D_ALGO_IM2COL) tr = conv_transposed(c);
    if (dbias) {
#pragma omp parallel for num_threads(nthreads) schedule(static)
        for (int co = 0; co < c->cout; co++) {
            double s = 0.0;
            const float *p = dy + co * ncols;
#pragma omp simd reduction(+ : s)
            for (size_t i = 0; i < ncols; i++) s += p[i];
            dbias[co] += (float)s;
        }
    }
    if (c->algo == AF_CONV2D_ALGO_DIRECT || c->algo == AF_CONV2D_ALGO_WINOGRAD) {
        if (c->algo == AF_CONV2D_ALGO_DIRECT) nn_direct_backward(c, B, x, w, dy, dx, dx_accum, dw, ws, nthreads);
        else nn_winograd_backward(c, B, x, w, dy, dx, dx_accum, dw, ws, nthreads);
        nn_blas_single_end(saved);
        return;
    }
#pragma omp parallel num_threads(nthreads)
    {
        const int t = nn_thread_id(), T = nn_thread_count();
        {
            float *col = ws + L.flip + (T - 1) * L.dwcopy + t * L.col;
            float *dwt = t == 0 ? dw : ws + L.flip + (t - 1) * L.dwcopy;
            if (t > 0) memset(dwt, 0, sizeof(float) * wsize);
            if (c->flip_dx && dx && c->algo == AF_CONV2D_ALGO_IM2COL) {
                /* wf (cin, cout, kh, kw) = w (cout, cin, kh, kw) transposed, kernel rotated 180 degrees */
                float *wf = ws;
                const int KK = c->kh * c->kw;
#pragma omp for schedule(static)
                for (int co = 0; co < c->cout; co++)
                    for (int ci = 0; ci < c->cin; ci++)
                        for (int k = 0; k < KK; k++)
                            wf[((size_t)ci * c->cout + co) * KK + (KK - 1 - k)] = w[((size_t)co * c->cin + ci) * KK + k];
            }
            size_t lo, hi;
            if (c->algo == AF_CONV2D_ALGO_GEMM1X1) {
                nn_split(ncols, t, T, &lo, &hi);
                if (hi > lo) {
                    nn_gemm(c->prec, 0, 1, c->cout, c->cin, (int)(hi - lo), 1.0f, dy + lo,
                                (int)ncols, x + lo, (int)ncols, 1.0f, dwt, c->cin);
                    if (dx)
                        nn_gemm(c->prec, 1, 0, c->cin, (int)(hi - lo), c->cout, 1.0f, w,
                                    c->cin, dy + lo, (int)ncols, dx_accum ? 1.0f : 0.0f, dx + lo, (int)nin);
                }
            } else {
                /* weight gradient over this thread's output rows */
                nn_split((size_t)B * c->oh, t, T, &lo, &hi);
                size_t step = tile_rows_dw(c);
                for (size_t r0 = lo; r0 < hi; r0 += step) {
                    size_t nr = hi - r0 < step ? hi - r0 : step;
                    int nt = (int)(nr * c->ow);
                    im2col(c, B, x, r0, nr, col);
                    nn_gemm(c->prec, 0, 1, c->cout, K, nt, 1.0f, dy + r0 * c->ow,
                                (int)ncols, col, nt, 1.0f, dwt, K);
                }
                if (dx && c->flip_dx) {
                    size_t dlo, dhi;
                    nn_split((size_t)B * c->h, t, T, &dlo, &dhi);
                    if (dhi > dlo) im2col_rows_forward(&tr, B, dy, ws, dx, dx_accum ? 1.0f : 0.0f, dlo, dhi, col);
                } else if (dx) {
                    /* col2im adds into input rows shared by neighbouring output rows: split by sample */
                    size_t b0, b1;
                    nn_split((size_t)B, t, T, &b0, &b1);
                    step = tile_rows(c);
                    if (!dx_accum)
                        for (int ci = 0; ci < c->cin; ci++)
                            memset(dx + ((size_t)ci * B + b0) * HW, 0, sizeof(float) * (b1 - b0) * HW);
                    for (size_t r0 = b0 * c->oh; r0 < b1 * c->oh; r0 += step) {
                        size_t nr = b1 * c->oh - r0 < step ? b1 * c->oh - r0 : step;
                        int nt = (int)(nr * c->ow);
                        nn_gemm(c->prec, 1, 0, K, nt, c->cout, 1.0f, w, K,
                                    dy + r0 * c->ow, (int)ncols, 0.0f, col, nt);
                        col2im_add(c, B, col, r0, nr, dx);
                    }
                }
            }
#pragma omp barrier
            if (T > 1) {
                size_t ilo, ihi;
                nn_split(wsize, t, T, &ilo, &ihi);
                for (int u = 1; u < T; u++) {
                    const float *src = ws + L.flip + (u - 1) * L.dwcopy;
                    for (size_t i = ilo; i < ihi; i++) dw[i] += src[i];
                }
            }
        }
    }
    nn_blas_single_end(saved);
}
