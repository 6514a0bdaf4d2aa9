/* One class slice's whole margin-softmax loss (af_fc_loss, include/arcface/
 * margin.h): normalise the features and, block by block, the centres; cosines
 * by GEMM; the margin; the distributed cross-entropy (dist_ce.c); and the
 * backward pass, which recomputes each block's cosines instead of keeping
 * K x D of them.
 *
 * The element-wise passes over the B x K logits run through the dispatched
 * row kernels (include/arcface/margin_rows.h: AVX-512 where the CPU has it)
 * on ws->nthreads OpenMP threads, rows shared out statically. Every row is
 * computed whole by one thread and nothing is summed across rows inside a
 * parallel loop, so the results are the same bits for any thread count; the
 * scalar loops of margin.c stay as the reference the kernels are tested
 * against. This file sits in af_fc, above af_nn, because the kernels do. */
#include "arcface/margin.h"
#include "arcface/margin_rows.h"

#include <cblas.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif

/* Rows of centres per block: the block's cosines (maxB x blk) and its
 * normalised rows and their gradients (blk x D each) stay within about
 * FC_BLOCK_BYTES, so the kernels' scratch does not grow with the classes.
 * It depends on the batch and D only (never on the transport or the
 * threads), so results do not depend on how messages are split. */
#define FC_BLOCK_BYTES ((size_t)2 << 20)

static int block_rows(int maxB, int maxK, int D)
{
    size_t per = sizeof(float) * (size_t)(maxB > D ? maxB : D);
    size_t blk = FC_BLOCK_BYTES / per;
    if (blk < 16) blk = 16;
    if (blk > (size_t)(maxK > 0 ? maxK : 1)) blk = (size_t)(maxK > 0 ? maxK : 1);
    return (int)blk;
}

af_status af_fc_ws_init(af_fc_ws *ws, int maxB, int maxK, int D)
{
    memset(ws, 0, sizeof *ws);
    ws->maxB = maxB; ws->maxK = maxK; ws->D = D;
    ws->blk = block_rows(maxB, maxK, D);
    af_fc_ws_set_threads(ws, 0);
    size_t bk = (size_t)maxB * (maxK > 0 ? maxK : 1), bb = (size_t)maxB * ws->blk;
    if (!(ws->xn = af_malloc(sizeof(float) * maxB * D, "fc features")) ||
        !(ws->xnorm = af_malloc(sizeof(float) * maxB, "fc feature norms")) ||
        !(ws->wnorm = af_malloc(sizeof(float) * ws->blk, "fc centre block norms")) ||
        !(ws->logits = af_malloc(sizeof(float) * bk, "fc logits")) ||
        !(ws->wn = af_malloc(sizeof(float) * (size_t)ws->blk * D, "fc centre block")) ||
        !(ws->dwn = af_malloc(sizeof(float) * (size_t)ws->blk * D, "fc centre block grads")) ||
        !(ws->cos = af_malloc(sizeof(float) * bb, "fc cosine block")) ||
        !(ws->dxn = af_malloc(sizeof(float) * maxB * D, "fc feature grads")) ||
        !(ws->tcos = af_malloc(sizeof(double) * maxB, "fc target cosines")) ||
        !(ws->lab = af_malloc(sizeof(int64_t) * maxB, "fc block labels")) ||
        !(ws->rowbuf = af_malloc(sizeof(double) * 3 * maxB, "fc row buffer"))) {
        af_fc_ws_free(ws);
        return AF_ERR_NOMEM;
    }
    return AF_OK;
}

void af_fc_ws_free(af_fc_ws *ws)
{
    free(ws->xn); free(ws->xnorm); free(ws->wn); free(ws->wnorm); free(ws->cos); free(ws->lab);
    free(ws->logits); free(ws->dxn); free(ws->dwn); free(ws->tcos); free(ws->rowbuf);
    memset(ws, 0, sizeof *ws);
}

void af_fc_ws_set_block(af_fc_ws *ws, int rows)
{
    if (rows >= 1 && rows <= ws->blk) ws->blk = rows;
}

void af_fc_ws_set_threads(af_fc_ws *ws, int nthreads)
{
#ifdef _OPENMP
    ws->nthreads = nthreads >= 1 ? nthreads : omp_get_max_threads();
#else
    (void)nthreads;
    ws->nthreads = 1;
#endif
}

#define L2_EPS 1e-12f /* as margin.c's af_l2norm_forward, which these rows follow */

/* Rows of x (n, D) normalised into xn; each row's sum of squares in af_dot_d's
 * fixed order (a serial double sum was half of this file's time at B = 128),
 * so the bits do not depend on the threads or the instance. */
static void l2norm_rows(int n, int D, const float *x, float *xn, float *norm, int T)
{
#pragma omp parallel for num_threads(T) schedule(static)
    for (int i = 0; i < n; i++) {
        const float *xi = x + (size_t)i * D;
        float nr = (float)sqrt(af_dot_d(xi, xi, (size_t)D));
        norm[i] = nr;
        af_row_scale(xi, xn + (size_t)i * D, (size_t)D, 1.0f / (nr > L2_EPS ? nr : L2_EPS));
    }
}

/* dx (=/+=) the gradient through the normalisation of rows (n, D), as
 * af_l2norm_backward with the dot products in af_dot_d's order. */
static void l2norm_rows_backward(int n, int D, const float *xn, const float *norm, const float *dxn, float *dx,
                                 int accum, int T)
{
#pragma omp parallel for num_threads(T) schedule(static)
    for (int i = 0; i < n; i++) {
        const float *u = xn + (size_t)i * D, *g = dxn + (size_t)i * D;
        float *o = dx + (size_t)i * D;
        if (!accum) memset(o, 0, sizeof(float) * D);
        if (norm[i] <= L2_EPS) {
            /* x / eps is linear in x: the Jacobian is I / eps. */
            for (int k = 0; k < D; k++) o[k] += g[k] / L2_EPS;
            continue;
        }
        const float inv = 1.0f / norm[i], fd = (float)af_dot_d(u, g, (size_t)D);
        for (int k = 0; k < D; k++) o[k] += (g[k] - u[k] * fd) * inv;
    }
}

/* Normalises rows [j0, j0 + n) of w into ws->wn, their cosines with the
 * features into ws->cos (B, n), and each row's labels relative to the block
 * (-1: target not in this block) into ws->lab. The backward pass calls it
 * again for the same block and gets the same bits. */
static void fc_block(af_fc_ws *ws, const float *xn, int B, const float *w, int j0, int n, const int64_t *labels)
{
    const int D = ws->D;
    l2norm_rows(n, D, w + (size_t)j0 * D, ws->wn, ws->wnorm, ws->nthreads);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, B, n, D, 1.0f, xn, D, ws->wn, D, 0.0f, ws->cos, n);
    for (int b = 0; b < B; b++) ws->lab[b] = labels[b] >= j0 && labels[b] < j0 + n ? labels[b] - j0 : -1;
}

/* The margin on the block's cosines (B, n) into columns [j0, j0 + n) of the
 * logits (rows ld apart). The target angle decides the margin, and near
 * theta = 0 or pi float32 cosines lose most of its bits: the target dot
 * products are recomputed in double. */
static void block_margin_forward(const af_margin *m, af_fc_ws *ws, int B, int n, float *logits, size_t ld)
{
    const int D = ws->D;
    const float thr = m->filter_threshold;
#pragma omp parallel for num_threads(ws->nthreads) schedule(static)
    for (int b = 0; b < B; b++) {
        float *o = logits + (size_t)b * ld;
        af_margin_row_forward(ws->cos + (size_t)b * n, o, (size_t)n, m->s, thr);
        const int64_t y = ws->lab[b];
        if (y < 0) continue;
        double dot = af_dot_d(ws->xn + (size_t)b * D, ws->wn + (size_t)y * D, (size_t)D), val, deriv;
        ws->tcos[b] = dot;
        af_margin_target(m, dot, &val, &deriv);
        o[y] = (float)(m->s * val);
    }
}

/* The gradient w.r.t. the block's cosines, in place of the logits'
 * gradient in columns [j0, j0 + n) (rows ld apart). */
static void block_margin_backward(const af_margin *m, af_fc_ws *ws, int B, int n, float *dcos, size_t ld)
{
    const float s = m->s;
#pragma omp parallel for num_threads(ws->nthreads) schedule(static)
    for (int b = 0; b < B; b++) {
        const float *c = ws->cos + (size_t)b * n;
        float *g = dcos + (size_t)b * ld;
        const int64_t y = ws->lab[b];
        /* Read the target's incoming gradient first: the row is overwritten. */
        const float gy = y >= 0 ? g[y] : 0;
        af_margin_row_backward(c, g, g, (size_t)n, s, m->filter_threshold);
        if (y < 0) continue;
        /* The target is never filtered; PyTorch's clamp passes gradient only inside [-1, 1]. */
        const int live = c[y] >= -1 && c[y] <= 1;
        g[y] = live ? s * gy : 0;
        if (live && m->grad == AF_MARGIN_GRAD_ANALYTIC) {
            double val, deriv;
            af_margin_target(m, ws->tcos[b], &val, &deriv);
            g[y] = (float)(s * deriv * gy);
        }
    }
}

af_status af_fc_loss(const af_margin *m, const float *x, int B, int B_total, const float *w, int K,
                     const int64_t *labels, MPI_Comm comm, af_fc_ws *ws, double *loss, float *dx, float *dw)
{
    const int D = ws->D, T = ws->nthreads;
    if (B > ws->maxB || K > ws->maxK)
        return af_errorf(AF_ERR_ARG, "fc workspace holds %d x %d, asked for %d x %d", ws->maxB, ws->maxK, B, K);
    for (int b = 0; b < B; b++)
        if (labels[b] < -1 || labels[b] >= K)
            return af_errorf(AF_ERR_ARG, "label %lld of row %d outside [-1, %d)", (long long)labels[b], b, K);
    l2norm_rows(B, D, x, ws->xn, ws->xnorm, T);
    for (int b = 0; b < B; b++) ws->tcos[b] = 0;
    const size_t ld = (size_t)(K > 0 ? K : 1);
    for (int j0 = 0; j0 < K && B > 0; j0 += ws->blk) {
        int n = K - j0 < ws->blk ? K - j0 : ws->blk;
        fc_block(ws, ws->xn, B, w, j0, n, labels);
        block_margin_forward(m, ws, B, n, ws->logits + j0, ld);
    }
    af_status st = af_softmax_ce_forward(ws->logits, labels, B, K, B_total, comm, ws->rowbuf, loss, T);
    if (st) return st;
    if (!dx && !dw) return AF_OK;
    af_softmax_ce_backward(ws->logits, labels, ws->rowbuf, B, K, B_total, ws->logits, T);
    memset(ws->dxn, 0, sizeof(float) * B * D);
    for (int j0 = 0; j0 < K && B > 0; j0 += ws->blk) {
        int n = K - j0 < ws->blk ? K - j0 : ws->blk;
        fc_block(ws, ws->xn, B, w, j0, n, labels);
        float *dcos = ws->logits + j0; /* (B, n), rows ld apart, in place of the probabilities */
        block_margin_backward(m, ws, B, n, dcos, ld);
        if (dx)
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, B, D, n, 1.0f, dcos, (int)ld, ws->wn, D, 1.0f,
                        ws->dxn, D);
        if (dw) {
            cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, n, D, B, 1.0f, dcos, (int)ld, ws->xn, D, 0.0f,
                        ws->dwn, D);
            /* Written, not added: dw may be w itself, whose block is no longer read. */
            l2norm_rows_backward(n, D, ws->wn, ws->wnorm, ws->dwn, dw + (size_t)j0 * D, 0, T);
        }
    }
    if (dx) l2norm_rows_backward(B, D, ws->xn, ws->xnorm, ws->dxn, dx, 1, T);
    if (dw && B == 0) memset(dw, 0, sizeof(float) * (size_t)K * D);
    return AF_OK;
}
