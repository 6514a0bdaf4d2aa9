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
#include "nn_internal.h"

typedef struct {
    int th, tw;       /* tiles per plane */
    size_t rows;      /* tile rows per chunk */
    size_t nt;        /* tiles per chunk: rows * tw */
    size_t u;         /* 16 * cout * cin */
    size_t v, m;      /* chunk buffers: 16 * cin * nt, 16 * cout * nt */
    size_t per_thread;
} wino_geom;

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

/* Row r of a plane, zero-padded by one column on each side and split into
 * even and odd padded columns: e[j] = row[2j - 1], o[j] = row[2j], j in [0, tw]. */
static void deinterleave_row(const float *row, int W, int tw, float *e, float *o)
{
    if (!row) {
        memset(e, 0, sizeof(float) * (tw + 1));
        memset(o, 0, sizeof(float) * (tw + 1));
        return;
    }
    const int jfull = (W - 1) / 2 + 1; /* j < jfull: 2j - 1 < W - 1, both columns inside, except j = 0 */
    e[0] = 0.0f;
    o[0] = row[0];
#pragma omp simd
    for (int j = 1; j < jfull; j++) {
        e[j] = row[2 * j - 1];
        o[j] = row[2 * j];
    }
    for (int j = jfull > 1 ? jfull : 1; j <= tw; j++) {
        e[j] = 2 * j - 1 < W ? row[2 * j - 1] : 0.0f;
        o[j] = 2 * j < W ? row[2 * j] : 0.0f;
    }
}

/* V_k[ci][j] for the tile rows [r0, r0+nr) of x (cin, B, H, W). Consecutive
 * tile rows of a plane share two input rows, so deinterleaved rows are kept
 * in a ring of four and only the two new ones are prepared. */
static void transform_input(const af_conv2d *c, const wino_geom *g, int B, const float *x, size_t r0, size_t nr,
                            float *V, float *scratch)
{
    const int H = c->h, W = c->w, tw = g->tw;
    const size_t nt = nr * tw, vk = (size_t)c->cin * nt, rs = 2 * (size_t)(tw + 2);
    float *t = scratch + 4 * rs; /* the four row-transformed rows, even/odd */
    for (int ci = 0; ci < c->cin; ci++) {
        int have_b = -1, have_ty = -1;
        for (size_t rr = 0; rr < nr; rr++) {
            const size_t R = r0 + rr;
            const int b = (int)(R / g->th), ty = (int)(R % g->th);
            const float *plane = x + ((size_t)ci * B + b) * H * W;
            /* slot of input row iy = 2ty - 1 + r is (iy + 1) mod 4 */
            const int fresh = have_b == b && have_ty == ty - 1 ? 2 : 0;
            for (int r = fresh; r < 4; r++) {
                const int iy = 2 * ty - 1 + r;
                float *e = scratch + (size_t)((iy + 1) & 3) * rs;
                deinterleave_row(iy >= 0 && iy < H ? plane + (size_t)iy * W : NULL, W, tw, e, e + tw + 2);
            }
            have_b = b, have_ty = ty;
            const float *d[4];
            for (int r = 0; r < 4; r++) d[r] = scratch + (size_t)((2 * ty + r) & 3) * rs;
            /* B^T along y, on whole rows (even and odd halves alike) */
            float *t0 = t, *t1 = t + rs, *t2 = t + 2 * rs, *t3 = t + 3 * rs;
#pragma omp simd
            for (size_t j = 0; j < rs; j++) {
                t0[j] = d[0][j] - d[2][j];
                t1[j] = d[1][j] + d[2][j];
                t2[j] = d[2][j] - d[1][j];
                t3[j] = d[1][j] - d[3][j];
            }
            /* then B along x: columns (e[tx], o[tx], e[tx+1], o[tx+1]) of each row */
            float *dst = V + (size_t)ci * nt + rr * tw;
            const float *ts[4] = {t0, t1, t2, t3};
            for (int i = 0; i < 4; i++) {
                const float *e = ts[i], *o = ts[i] + tw + 2;
                float *v0 = dst + (size_t)(4 * i) * vk, *v1 = v0 + vk, *v2 = v1 + vk, *v3 = v2 + vk;
#pragma omp simd
                for (int tx = 0; tx < tw; tx++) {
                    v0[tx] = e[tx] - e[tx + 1];
                    v1[tx] = o[tx] + e[tx + 1];
                    v2[tx] = e[tx + 1] - o[tx];
                    v3[tx] = o[tx] - o[tx + 1];
                }
            }
        }
    }
}

/* y (=/+=) A^T M A for the tile rows [r0, r0+nr); y (cout, B, OH, OW). */
static void transform_output(const af_conv2d *c, const wino_geom *g, int B, const float *M, size_t r0, size_t nr,
                             float *y, int accum, float *scratch)
{
    const int OH = c->oh, OW = c->ow, tw = g->tw;
    const size_t nt = nr * tw, mk = (size_t)c->cout * nt;
    float *o0 = scratch, *o1 = scratch + 2 * (size_t)tw + 2; /* the tile row's two output rows, interleaved */
    for (int co = 0; co < c->cout; co++)
        for (size_t rr = 0; rr < nr; rr++) {
            const size_t R = r0 + rr;
            const int b = (int)(R / g->th), ty = (int)(R % g->th);
            const float *src = M + (size_t)co * nt + rr * tw;
#pragma omp simd
            for (int tx = 0; tx < tw; tx++) {
                float m[4][4];
                for (int k = 0; k < 16; k++) m[k / 4][k % 4] = src[(size_t)k * mk + tx];
                float t[2][4]; /* A^T m */
                for (int j = 0; j < 4; j++) {
                    t[0][j] = m[0][j] + m[1][j] + m[2][j];
                    t[1][j] = m[1][j] - m[2][j] - m[3][j];
                }
                o0[2 * tx] = t[0][0] + t[0][1] + t[0][2];
                o0[2 * tx + 1] = t[0][1] - t[0][2] - t[0][3];
                o1[2 * tx] = t[1][0] + t[1][1] + t[1][2];
                o1[2 * tx + 1] = t[1][1] - t[1][2] - t[1][3];
            }
            float *plane = y + ((size_t)co * B + b) * OH * OW;
            for (int r = 0; r < 2; r++) {
                const int oy = 2 * ty + r;
                if (oy >= OH) break;
                float *dst = plane + (size_t)oy * OW;
                const float *s = r ? o1 : o0;
                if (accum)
                    for (int ox = 0; ox < OW; ox++) dst[ox] += s[ox];
                else
                    memcpy(dst, s, sizeof(float) * OW);
            }
        }
}

/* dM_k[co][j] = (A dy A^T)_k for the tile rows [r0, r0+nr) of dy (cout, B, OH, OW). */
static void transform_dy(const af_conv2d *c, const wino_geom *g, int B, const float *dy, size_t r0, size_t nr,
                         float *M, float *scratch)
{
    const int OH = c->oh, OW = c->ow, tw = g->tw;
    const size_t nt = nr * tw, mk = (size_t)c->cout * nt;
    float *e0 = scratch, *o0 = e0 + tw + 1, *e1 = o0 + tw + 1, *o1 = e1 + tw + 1;
    for (int co = 0; co < c->cout; co++)
        for (size_t rr = 0; rr < nr; rr++) {
            const size_t R = r0 + rr;
            const int b = (int)(R / g->th), ty = (int)(R % g->th);
            const float *plane = dy + ((size_t)co * B + b) * OH * OW;
            float *ev[2] = {e0, e1}, *od[2] = {o0, o1};
            for (int r = 0; r < 2; r++) {
                const int oy = 2 * ty + r;
                for (int tx = 0; tx < tw; tx++) {
                    const int ox = 2 * tx;
                    ev[r][tx] = oy < OH ? plane[(size_t)oy * OW + ox] : 0.0f;
                    od[r][tx] = oy < OH && ox + 1 < OW ? plane[(size_t)oy * OW + ox + 1] : 0.0f;
                }
            }
            float *dst = M + (size_t)co * nt + rr * tw;
#pragma omp simd
            for (int tx = 0; tx < tw; tx++) {
                /* A v for a 2-vector (a, b): (a, a + b, a - b, -b) */
                float a0 = e0[tx], b0 = o0[tx], a1 = e1[tx], b1 = o1[tx];
                float r0v[4] = {a0, a0 + b0, a0 - b0, -b0}; /* row 0 of dy, along x */
                float r1v[4] = {a1, a1 + b1, a1 - b1, -b1};
                for (int j = 0; j < 4; j++) {
                    dst[(size_t)(0 + j) * mk + tx] = r0v[j];
                    dst[(size_t)(4 + j) * mk + tx] = r0v[j] + r1v[j];
                    dst[(size_t)(8 + j) * mk + tx] = r0v[j] - r1v[j];
                    dst[(size_t)(12 + j) * mk + tx] = -r1v[j];
                }
            }
        }
}

/* y (=/+=) conv(x, U) over this thread's tile rows: the 16 GEMMs and the transforms. */
static void wino_rows(const af_conv2d *c, const wino_geom *g, int B, const float *x, const float *U, float *y,
                      int accum, size_t lo, size_t hi, float *tws)
{
    float *V = tws, *M = tws + g->v, *scratch = tws + g->per_thread;
    const size_t ukk = (size_t)c->cout * c->cin;
    for (size_t r0 = lo; r0 < hi; r0 += g->rows) {
        const size_t nr = hi - r0 < g->rows ? hi - r0 : g->rows, nt = nr * g->tw;
        transform_input(c, g, B, x, r0, nr, V, scratch);
        for (int k = 0; k < 16; k++)
            nn_gemm(c->prec, 0, 0, c->cout, (int)nt, c->cin, 1.0f, U + k * ukk, c->cin,
                        V + (size_t)k * c->cin * nt, (int)nt, 0.0f, M + (size_t)k * c->cout * nt, (int)nt);
        transform_output(c, g, B, M, r0, nr, y, accum, scratch);
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
            transform_input(c, &g, B, x, r0, nr, V, scratch);
            transform_dy(c, &g, B, dy, r0, nr, M, scratch);
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
