/* Direct convolution for grouped and depthwise layers (MobileFaceNet), where
 * a GEMM would have an inner dimension of 2 to 9 and spend its time packing.
 *
 * Each input plane is copied into zero-padded scratch, split into sh x sw
 * "phase" planes by (row mod sh, column mod sw), each Hq x Wq. In those
 * coordinates tap (ki, kj) of output (oy, ox) reads phase (ki % sh, kj % sw)
 * at row oy + ki/sh, column ox + kj/sw: the same offset for every output.
 * So the output plane is computed on a grid of row length Wq (the columns
 * ox >= OW are junk and dropped when copied out), and each tap is ONE long
 * unit-stride axpy over the whole plane: out[q] += w * phase[q + offset].
 * The backward pass uses the same trick with dy placed on that grid (junk
 * columns zero): the weight gradient of a tap is one long dot product, the
 * input gradient one long axpy into padded phase planes copied out at the
 * end. Loops are long, branch-free and vectorised whatever the plane size.
 *
 * Work is split by (group, sample) in the forward pass and by group in the
 * backward pass (one writer for a group's dx and dw), so results do not
 * depend on the thread count. */
#include <string.h>

#include "arcface/nn.h"
#include "kern.h"
#include "nn_internal.h"

typedef struct {
    int hq, wq;
    size_t phase; /* floats in one phase plane (one spare row for the junk columns' reads) */
    size_t plane; /* all sh*sw phases */
    size_t grid;  /* the output grid, OH x Wq */
} pad_geom;

static pad_geom geom(const af_conv2d *c)
{
    pad_geom g;
    g.hq = (c->h + 2 * c->ph + c->sh - 1) / c->sh;
    g.wq = (c->w + 2 * c->pw + c->sw - 1) / c->sw;
    g.phase = (size_t)(g.hq + 1) * g.wq;
    g.plane = g.phase * c->sh * c->sw;
    g.grid = (size_t)c->oh * g.wq;
    return g;
}

/* Offset of tap (ki, kj) from an output's grid index. */
static size_t tap_offset(const af_conv2d *c, const pad_geom *g, int ki, int kj)
{
    return ((size_t)(ki % c->sh) * c->sw + kj % c->sw) * g->phase + (size_t)(ki / c->sh) * g->wq + kj / c->sw;
}

/* Taps go to the kernels in blocks of at most this many (a 7x7 GDC kernel is 49). */
#define TAP_BLOCK 64

/* off[t] for taps t0 .. t0+nt-1 of the kernel in row-major (ki, kj) order. */
static void tap_offsets(const af_conv2d *c, const pad_geom *g, int t0, int nt, size_t *off)
{
    for (int t = 0; t < nt; t++) off[t] = tap_offset(c, g, (t0 + t) / c->kw, (t0 + t) % c->kw);
}

/* Per-thread floats: input phases and dx phases for one group's input
 * channels, one output grid, and the weight-gradient accumulators (doubles). */
size_t nn_direct_workspace(const af_conv2d *c)
{
    const pad_geom g = geom(c);
    const size_t cpi = (size_t)(c->cin / c->groups), cpo = (size_t)(c->cout / c->groups);
    return nn_align(2 * cpi * g.plane) + nn_align(g.grid) + nn_align(2 * cpo * cpi * c->kh * c->kw);
}

/* The padded phase planes of an (h, w) plane; row iy of x lands in phase row
 * (iy + ph) % sh, index (iy + ph) / sh, and column ix likewise. */
static void pad_plane(const af_conv2d *c, const pad_geom *g, const float *x, float *ph)
{
    memset(ph, 0, g->plane * sizeof(float));
    const int W = c->w, sw = c->sw;
    for (int iy = 0; iy < c->h; iy++) {
        const int py = iy + c->ph;
        const float *src = x + (size_t)iy * W;
        float *rowbase = ph + (size_t)(py % c->sh) * sw * g->phase + (size_t)(py / c->sh) * g->wq;
        if (sw == 1) {
            memcpy(rowbase + c->pw, src, W * sizeof(float));
            continue;
        }
        for (int rw = 0; rw < sw; rw++) {
            float *row = rowbase + (size_t)rw * g->phase;
            /* columns j with ix = rw + sw*j - pw inside [0, W) */
            int j0 = c->pw > rw ? (c->pw - rw + sw - 1) / sw : 0;
            for (int j = j0, ix = rw + sw * j0 - c->pw; ix < W; j++, ix += sw) row[j] = src[ix];
        }
    }
}

/* dx plane (=/+=) the interior of padded phase planes */
static void unpad_plane(const af_conv2d *c, const pad_geom *g, const float *ph, float *dx, int accum)
{
    const int W = c->w, sw = c->sw;
    for (int iy = 0; iy < c->h; iy++) {
        const int py = iy + c->ph;
        float *dst = dx + (size_t)iy * W;
        const float *rowbase = ph + (size_t)(py % c->sh) * sw * g->phase + (size_t)(py / c->sh) * g->wq;
        if (sw == 1) {
            if (accum)
                for (int ix = 0; ix < W; ix++) dst[ix] += rowbase[ix + c->pw];
            else
                memcpy(dst, rowbase + c->pw, W * sizeof(float));
            continue;
        }
        for (int rw = 0; rw < sw; rw++) {
            const float *row = rowbase + (size_t)rw * g->phase;
            int j0 = c->pw > rw ? (c->pw - rw + sw - 1) / sw : 0;
            for (int j = j0, ix = rw + sw * j0 - c->pw; ix < W; j++, ix += sw) dst[ix] = accum ? dst[ix] + row[j] : row[j];
        }
    }
}

void nn_direct_forward(const af_conv2d *c, int B, const float *x, const float *w, const float *bias, float *y,
                       float *ws, int nthreads)
{
    const pad_geom g = geom(c);
    const int cpi = c->cin / c->groups, cpo = c->cout / c->groups;
    const int OH = c->oh, OW = c->ow, KK = c->kh * c->kw;
    const nn_kern_table *K = nn_kern();
    const size_t per_thread = nn_direct_workspace(c), HW = (size_t)c->h * c->w, OHW = (size_t)OH * OW;
    const size_t n = g.grid;
#pragma omp parallel for num_threads(nthreads) schedule(dynamic, 1)
    for (long task = 0; task < (long)c->groups * B; task++) {
        const int grp = (int)(task / B), b = (int)(task % B);
        float *xph = ws + (size_t)nn_thread_id() * per_thread;
        float *out = xph + nn_align(2 * (size_t)cpi * g.plane);
        for (int cl = 0; cl < cpi; cl++)
            pad_plane(c, &g, x + ((size_t)(grp * cpi + cl) * B + b) * HW, xph + cl * g.plane);
        for (int co = grp * cpo; co < (grp + 1) * cpo; co++) {
            const float b0 = bias ? bias[co] : 0.0f;
            for (size_t q = 0; q < n; q++) out[q] = b0;
            for (int cl = 0; cl < cpi; cl++) {
                const float *wk = w + ((size_t)co * cpi + cl) * KK;
                const float *php = xph + cl * g.plane;
                for (int t0 = 0; t0 < KK; t0 += TAP_BLOCK) {
                    const int nt = KK - t0 < TAP_BLOCK ? KK - t0 : TAP_BLOCK;
                    size_t off[TAP_BLOCK];
                    tap_offsets(c, &g, t0, nt, off);
                    K->taps_fwd(out, n, php, off, wk + t0, nt);
                }
            }
            float *yp = y + ((size_t)co * B + b) * OHW;
            for (int oy = 0; oy < OH; oy++) memcpy(yp + (size_t)oy * OW, out + (size_t)oy * g.wq, OW * sizeof(float));
        }
    }
}

void nn_direct_backward(const af_conv2d *c, int B, const float *x, const float *w, const float *dy, float *dx,
                        int dx_accum, float *dw, float *ws, int nthreads)
{
    const pad_geom g = geom(c);
    const int cpi = c->cin / c->groups, cpo = c->cout / c->groups;
    const int OH = c->oh, OW = c->ow, KK = c->kh * c->kw;
    const nn_kern_table *K = nn_kern();
    const size_t per_thread = nn_direct_workspace(c), HW = (size_t)c->h * c->w, OHW = (size_t)OH * OW;
    const size_t n = g.grid;
#pragma omp parallel for num_threads(nthreads) schedule(dynamic, 1)
    for (int grp = 0; grp < c->groups; grp++) {
        float *xph = ws + (size_t)nn_thread_id() * per_thread;
        float *dph = xph + (size_t)cpi * g.plane;
        float *dyg = xph + nn_align(2 * (size_t)cpi * g.plane);
        double *acc = (double *)(dyg + nn_align(g.grid));
        memset(acc, 0, sizeof(double) * (size_t)cpo * cpi * KK);
        memset(dyg, 0, sizeof(float) * n); /* junk columns stay 0 */
        for (int b = 0; b < B; b++) {
            for (int cl = 0; cl < cpi; cl++)
                pad_plane(c, &g, x + ((size_t)(grp * cpi + cl) * B + b) * HW, xph + cl * g.plane);
            if (dx) memset(dph, 0, sizeof(float) * cpi * g.plane);
            for (int col = 0; col < cpo; col++) {
                const int co = grp * cpo + col;
                const float *dyp = dy + ((size_t)co * B + b) * OHW;
                for (int oy = 0; oy < OH; oy++) memcpy(dyg + (size_t)oy * g.wq, dyp + (size_t)oy * OW, OW * sizeof(float));
                for (int cl = 0; cl < cpi; cl++) {
                    const float *wk = w + ((size_t)co * cpi + cl) * KK;
                    double *a = acc + ((size_t)col * cpi + cl) * KK;
                    for (int t0 = 0; t0 < KK; t0 += TAP_BLOCK) {
                        const int nt = KK - t0 < TAP_BLOCK ? KK - t0 : TAP_BLOCK;
                        size_t off[TAP_BLOCK];
                        float dot[TAP_BLOCK];
                        tap_offsets(c, &g, t0, nt, off);
                        K->taps_dot(dyg, n, xph + cl * g.plane, off, dot, nt);
                        for (int t = 0; t < nt; t++) a[t0 + t] += dot[t];
                        /* one tap at a time: the taps' ranges of dph overlap */
                        if (dx)
                            for (int t = 0; t < nt; t++) K->axpy(dph + cl * g.plane + off[t], dyg, wk[t0 + t], n);
                    }
                }
            }
            if (dx)
                for (int cl = 0; cl < cpi; cl++)
                    unpad_plane(c, &g, dph + cl * g.plane, dx + ((size_t)(grp * cpi + cl) * B + b) * HW, dx_accum);
        }
        for (size_t i = 0; i < (size_t)cpo * cpi * KK; i++) dw[(size_t)grp * cpo * cpi * KK + i] += (float)acc[i];
    }
}
