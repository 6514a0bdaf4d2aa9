/* Winograd F(2x2, 3x3) for the 3x3, stride-1, padding-1 convolutions that
 * carry about 80% of an iResNet's multiply-adds.
 *
 * The output is cut into 2x2 tiles, each computed from a 4x4 input patch:
 *   y = A^T [ (G g G^T) (.) (B^T d B) ] A,
 * so the work per tile and channel pair is 16 multiplies instead of 36, done
 * as 16 GEMMs M_k(C_out, tiles) = U_k(C_out, C_in) x V_k(C_in, tiles), one per
 * position k of the 4x4 transformed tile. With the same tiles:
 *  - the input gradient is the forward pass applied to dy with the kernel
 *    rotated by 180 degrees and C_in/C_out swapped (as the im2col path does);
 *  - the weight gradient is dg = G^T [ sum over tiles (A dY A^T) (.) (B^T d B) ] G,
 *    16 GEMMs dU_k(C_out, C_in) += dM_k(C_out, tiles) x V_k(C_in, tiles)^T.
 * Tiles are processed in chunks of whole tile rows (b, ty), each thread owning
 * a contiguous range of tile rows, so no chunk buffer grows with the batch.
 * The transforms deinterleave even and odd columns so that every loop runs
 * with unit stride over a row of tiles. Odd plane sizes (7x7) are handled by
 * zero patches and by writing back only the outputs inside the plane. */
#include <string.h>

#include "arcface/nn.h"
#include "kern.h"
#include "nn_internal.h"

typedef nn_wino_geom wino_geom;

static wino_geom wgeom(const af_conv2d *c, int max_batch)
{
    wino_geom g;
    g.th = (c->oh + 1) / 2;
    g.tw = (c->ow + 1) / 2;
    /* enough tiles per GEMM for efficient panels, within a cache-sized chunk */
    size_t want = NN_WINO_CHUNK_FLOATS / (16 * (size_t)(c->cin + c->cout));
    if (want < NN_WINO_MIN_TILES) want = NN_WINO_MIN_TILES;
    g.rows = (want + g.tw - 1) / g.tw;
    if (g.rows > (size_t)max_batch * g.th) g.rows = (size_t)max_batch * g.th;
    g.nt = g.rows * g.tw;
    g.u = nn_align(16 * (size_t)c->cout * c->cin);
    g.v = nn_align(16 * (size_t)c->cin * g.nt);
    g.m = nn_align(16 * (size_t)c->cout * g.nt);
    g.per_thread = g.v + g.m + g.u; /* + a dU accumulator for the weight gradient */
    return g;
}

/* Per-thread row scratch for the transforms: deinterleaved input rows. */
static size_t row_scratch(const af_conv2d *c) { return nn_align(16 * ((size_t)c->w + 8)); }

size_t nn_winograd_workspace(const af_conv2d *c, int max_batch, int nthreads)
{
    wino_geom g = wgeom(c, max_batch);
    /* one shared transformed kernel, then per thread V, M, dU and row scratch */
    return g.u + (size_t)nthreads * (g.per_thread + row_scratch(c));
}

/* U_k[co][ci] = (G g G^T)_k for g = w[co][ci] (flip: g = rot180(w[ci][co]), the
 * transposed convolution, with co/ci in the roles of the transposed layer). */
static void transform_kernel(const float *w, int cout, int cin, int flip, float *U)
{
    const size_t plane = (size_t)cout * cin;
#pragma omp for schedule(static)
    for (int co = 0; co < cout; co++)
        for (int ci = 0; ci < cin; ci++) {
            float g[9];
            if (!flip) {
                memcpy(g, w + ((size_t)co * cin + ci) * 9, sizeof g);
            } else {
                /* the layer's weight is (cin_layer = cout here ... ) laid out as w[ci][co][3][3] */
                const float *s = w + ((size_t)ci * cout + co) * 9;
                for (int k = 0; k < 9; k++) g[k] = s[8 - k];
            }
            float t[4][3]; /* G g */
            for (int j = 0; j < 3; j++) {
                t[0][j] = g[j];
                t[1][j] = 0.5f * (g[j] + g[3 + j] + g[6 + j]);
                t[2][j] = 0.5f * (g[j] - g[3 + j] + g[6 + j]);
                t[3][j] = g[6 + j];
            }
            for (int i = 0; i < 4; i++) { /* (G g) G^T */
                float u0 = t[i][0], u1 = 0.5f * (t[i][0] + t[i][1] + t[i][2]);
                float u2 = 0.5f * (t[i][0] - t[i][1] + t[i][2]), u3 = t[i][2];
                float *d = U + (size_t)(4 * i) * plane + (size_t)co * cin + ci;
                d[0] = u0;
                d[plane] = u1;
                d[2 * plane] = u2;
                d[3 * plane] = u3;
            }
        }
}

/* The transforms (input, output, dy) are in kern_body.inc, dispatched by nn_kern(). */

/* y (=/+=) conv(x, U) over this thread's tile rows: the 16 GEMMs and the transforms. */
static void wino_rows(const af_conv2d *c, const wino_geom *g, int B, const float *x, const float *U, float *y,
                      int accum, size_t lo, size_t hi, float *tws)
{
    float *V = tws, *M = tws + g->v, *scratch = tws + g->per_thread;
    const nn_kern_table *K = nn_kern();
    const size_t ukk = (size_t)c->cout * c->cin;
    for (size_t r0 = lo; r0 < hi; r0 += g->rows) {
        const size_t nr = hi - r0 < g->rows ? hi - r0 : g->rows, nt = nr * g->tw;
        K->wino_input(c, g, B, x, r0, nr, V, scratch);
        for (int k = 0; k < 16; k++)
            nn_gemm(c->prec, 0, 0, c->cout, (int)nt, c->cin, 1.0f, U + k * ukk, c->cin,
                        V + (size_t)k * c->cin * nt, (int)nt, 0.0f, M + (size_t)k * c->cout * nt, (int)nt);
        K->wino_output(c, g, B, M, r0, nr, y, accum, scratch);
    }
}

void nn_winograd_forward(const af_conv2d *c, int B, const float *x, const float *w, float *y, float *ws, int nthreads)
{
    const wino_geom g = wgeom(c, B);
    float *U = ws;
#pragma omp parallel num_threads(nthreads)
    {
        transform_kernel(w, c->cout, c->cin, 0, U); /* ends with a barrier */
        size_t lo, hi;
        nn_split((size_t)B * g.th, nn_thread_id(), nn_thread_count(), &lo, &hi);
        float *tws = ws + g.u + (size_t)nn_thread_id() * (g.per_thread + row_scratch(c));
        wino_rows(c, &g, B, x, U, y, 0, lo, hi, tws);
    }
}

void nn_winograd_backward(const af_conv2d *c, int B, const float *x, const float *w, const float *dy, float *dx,
                          int dx_accum, float *dw, float *ws, int nthreads)
{
    const wino_geom g = wgeom(c, B);
    const size_t ukk = (size_t)c->cout * c->cin, stride = g.per_thread + row_scratch(c);
    float *U = ws;
    /* the transposed layer: cin <-> cout, same plane (stride 1, padding 1) */
    af_conv2d tr = *c;
    tr.cin = c->cout;
    tr.cout = c->cin;
    const wino_geom gt = wgeom(&tr, B);
    const nn_kern_table *K = nn_kern();
#pragma omp parallel num_threads(nthreads)
    {
        const int t = nn_thread_id(), T = nn_thread_count();
        float *tws = ws + g.u + (size_t)t * stride;
        float *V = tws, *M = tws + g.v, *dU = tws + g.v + g.m, *scratch = tws + g.per_thread;
        size_t lo, hi;
        nn_split((size_t)B * g.th, t, T, &lo, &hi);
        /* weight gradient in the transformed domain */
        memset(dU, 0, sizeof(float) * 16 * ukk);
        for (size_t r0 = lo; r0 < hi; r0 += g.rows) {
            const size_t nr = hi - r0 < g.rows ? hi - r0 : g.rows, nt = nr * g.tw;
            K->wino_input(c, &g, B, x, r0, nr, V, scratch);
            K->wino_dy(c, &g, B, dy, r0, nr, M, scratch);
            for (int k = 0; k < 16; k++)
                nn_gemm(c->prec, 0, 1, c->cout, c->cin, (int)nt, 1.0f,
                            M + (size_t)k * c->cout * nt, (int)nt, V + (size_t)k * c->cin * nt, (int)nt, 1.0f,
                            dU + k * ukk, c->cin);
        }
#pragma omp barrier
        /* dw += G^T (sum over threads of dU) G, split over (co, ci) */
#pragma omp for schedule(static)
        for (long p = 0; p < (long)ukk; p++) {
            float s[16];
            for (int k = 0; k < 16; k++) {
                float a = 0.0f;
                for (int u = 0; u < T; u++) a += ws[g.u + (size_t)u * stride + g.v + g.m + k * ukk + p];
                s[k] = a;
            }
            float t3[3][4]; /* G^T s */
            for (int j = 0; j < 4; j++) {
                t3[0][j] = s[j] + 0.5f * (s[4 + j] + s[8 + j]);
                t3[1][j] = 0.5f * (s[4 + j] - s[8 + j]);
                t3[2][j] = 0.5f * (s[4 + j] + s[8 + j]) + s[12 + j];
            }
            float *d = dw + (size_t)p * 9;
            for (int i = 0; i < 3; i++) { /* (G^T s) G */
                d[3 * i + 0] += t3[i][0] + 0.5f * (t3[i][1] + t3[i][2]);
                d[3 * i + 1] += 0.5f * (t3[i][1] - t3[i][2]);
                d[3 * i + 2] += 0.5f * (t3[i][1] + t3[i][2]) + t3[i][3];
            }
        }
        /* the input gradient: the forward pass of the transposed layer over dy
         * (the implicit barrier above keeps U free until every dU is summed) */
        if (dx) {
            transform_kernel(w, tr.cout, tr.cin, 1, U);
            nn_split((size_t)B * gt.th, t, T, &lo, &hi);
            wino_rows(&tr, &gt, B, dy, U, dx, dx_accum, lo, hi, tws);
        }
    }
}
