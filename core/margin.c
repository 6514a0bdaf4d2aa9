/* Margin-based softmax: L2 normalisation and the combined (m1, m2, m3) margin
 * with its two gradient modes (see include/arcface/margin.h for the
 * semantics), as plain scalar loops: the reference the vectorised row
 * kernels are tested against. One class slice's whole loss is in fc_loss.c,
 * the distributed cross-entropy in dist_ce.c. */
#include "arcface/margin.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define L2_EPS 1e-12f

af_status af_margin_check(const af_margin *m)
{
    if (!(m->s > 0) || !isfinite(m->s)) return af_errorf(AF_ERR_ARG, "scale s must be > 0, got %g", m->s);
    if (!(m->m1 >= 1) || !isfinite(m->m1)) return af_errorf(AF_ERR_ARG, "margin m1 must be >= 1, got %g", m->m1);
    if (!(m->m2 >= 0 && m->m2 < M_PI)) return af_errorf(AF_ERR_ARG, "margin m2 must be in [0, pi), got %g", m->m2);
    if (!(m->m3 >= 0) || !isfinite(m->m3)) return af_errorf(AF_ERR_ARG, "margin m3 must be >= 0, got %g", m->m3);
    if (!(m->filter_threshold < 1)) return af_errorf(AF_ERR_ARG, "interclass_filtering_threshold must be < 1, got %g", m->filter_threshold);
    if (m->grad != AF_MARGIN_GRAD_ANALYTIC && m->grad != AF_MARGIN_GRAD_ARCFACE_TORCH)
        return af_errorf(AF_ERR_ARG, "unknown margin gradient mode %d", (int)m->grad);
    if (m->grad == AF_MARGIN_GRAD_ARCFACE_TORCH && m->m1 != 1 && m->m3 == 0)
        return af_errorf(AF_ERR_ARG, "margin (%g, %g, %g) in arcface_torch mode: insightface's CombinedMarginLoss "
                         "supports m1 = 1 with m3 = 0 (ArcFace) or m3 > 0 (CosFace) and raises for m1 != 1 with m3 = 0; "
                         "use the analytic mode for the paper's combined margin", m->m1, m->m2, m->m3);
    return AF_OK;
}

int af_margin_note(const af_margin *m, char *buf, size_t cap)
{
    if (m->grad != AF_MARGIN_GRAD_ARCFACE_TORCH || !(m->m3 > 0) || (m->m1 == 1 && m->m2 == 0)) return 0;
    snprintf(buf, cap, "margin_list (%g, %g, %g): m3 > 0, so as insightface's CombinedMarginLoss the target logit is "
             "cos - m3 (CosFace) and m1 = %g, m2 = %g are ignored (margin_grad = analytic applies all three)",
             m->m1, m->m2, m->m3, m->m1, m->m2);
    return 1;
}

af_status af_margin_grad_parse(const char *s, af_margin_grad *out)
{
    if (!strcmp(s, "analytic")) *out = AF_MARGIN_GRAD_ANALYTIC;
    else if (!strcmp(s, "arcface_torch")) *out = AF_MARGIN_GRAD_ARCFACE_TORCH;
    else return af_errorf(AF_ERR_ARG, "margin gradient mode '%s': expected 'analytic' or 'arcface_torch'", s);
    return AF_OK;
}

void af_l2norm_forward(int n, int d, const float *x, float *xn, float *norm)
{
    for (int i = 0; i < n; i++) {
        const float *xi = x + (size_t)i * d;
        double ss = 0;
        for (int k = 0; k < d; k++) ss += (double)xi[k] * xi[k];
        float nr = (float)sqrt(ss);
        norm[i] = nr;
        float inv = 1.0f / (nr > L2_EPS ? nr : L2_EPS);
        float *o = xn + (size_t)i * d;
        for (int k = 0; k < d; k++) o[k] = xi[k] * inv;
    }
}

void af_l2norm_backward(int n, int d, const float *xn, const float *norm, const float *dxn, float *dx, int dx_accum)
{
    for (int i = 0; i < n; i++) {
        const float *u = xn + (size_t)i * d, *g = dxn + (size_t)i * d;
        float *o = dx + (size_t)i * d;
        if (!dx_accum) for (int k = 0; k < d; k++) o[k] = 0;
        if (norm[i] <= L2_EPS) {
            /* x / eps is linear in x: the Jacobian is I / eps. */
            for (int k = 0; k < d; k++) o[k] += g[k] / L2_EPS;
            continue;
        }
        double dot = 0;
        for (int k = 0; k < d; k++) dot += (double)u[k] * g[k];
        float inv = 1.0f / norm[i], fd = (float)dot;
        for (int k = 0; k < d; k++) o[k] += (g[k] - u[k] * fd) * inv;
    }
}

/* Is the target margin applied at this cosine (easy_margin gate)? */
static inline int margin_on(const af_margin *m, double c) { return !m->easy_margin || c > 0; }

void af_margin_target(const af_margin *m, double c, double *val, double *deriv)
{
    if (c > 1) c = 1;
    if (c < -1) c = -1;
    if (!margin_on(m, c)) { *val = c; *deriv = 1; return; }
    if (m->grad == AF_MARGIN_GRAD_ARCFACE_TORCH && m->m3 > 0) {
        /* insightface's CombinedMarginLoss: m3 > 0 takes the CosFace branch alone. */
        *val = c - m->m3;
        *deriv = 1;
        return;
    }
    double theta = acos(c);
    double a = m->m1 * theta + m->m2;
    if (m->grad == AF_MARGIN_GRAD_ANALYTIC && a > M_PI) {
        /* Original ArcFace fallback: keeps the logit monotone past theta + m = pi. */
        *val = c - m->m3 - sin(M_PI - m->m2) * m->m2;
        *deriv = 1;
        return;
    }
    *val = cos(a) - m->m3;
    if (m->m1 == 1 && m->m2 == 0) { *deriv = 1; return; }
    /* d cos(m1*theta + m2)/dc = m1 sin(m1*theta + m2) / sin(theta). At theta -> 0
     * with m2 = 0 the ratio tends to m1^2; with m2 > 0 it diverges (as the true
     * gradient does), so sin(theta) is floored to keep it finite. */
    double st = sqrt(1 - c * c);
    if (st < 1e-7) *deriv = m->m2 == 0 ? (double)m->m1 * m->m1 : m->m1 * sin(a) / 1e-7;
    else *deriv = m->m1 * sin(a) / st;
}

static inline int filtered(const af_margin *m, float c, int is_target)
{
    return m->filter_threshold > 0 && !is_target && c > m->filter_threshold;
}

/* The margin on a (B, K) block of cosines; logits rows are ld apart so that a
 * block of columns of the whole logits matrix can be written in place. */
static void margin_forward_ld(const af_margin *m, const float *cos, const int64_t *labels, const double *tcos,
                              int B, int K, float *logits, size_t ld)
{
    const float s = m->s;
    for (int b = 0; b < B; b++) {
        const float *c = cos + (size_t)b * K;
        float *o = logits + (size_t)b * ld;
        int64_t y = labels[b];
        for (int j = 0; j < K; j++) {
            float cj = c[j] > 1 ? 1 : c[j] < -1 ? -1 : c[j];
            o[j] = filtered(m, cj, j == y) ? 0 : s * cj;
        }
        if (y >= 0) {
            double v, d;
            af_margin_target(m, tcos ? tcos[b] : c[y], &v, &d);
            o[y] = (float)(s * v);
        }
    }
}

/* dcos may alias dlogits; both have rows ld apart, cos is dense (B, K). */
static void margin_backward_ld(const af_margin *m, const float *cos, const int64_t *labels, const double *tcos,
                               int B, int K, const float *dlogits, float *dcos, size_t ld)
{
    const float s = m->s;
    for (int b = 0; b < B; b++) {
        const float *c = cos + (size_t)b * K, *g = dlogits + (size_t)b * ld;
        float *o = dcos + (size_t)b * ld;
        int64_t y = labels[b];
        /* Read the target's incoming gradient first: dcos may alias dlogits. */
        float gy = y >= 0 ? g[y] : 0;
        for (int j = 0; j < K; j++) {
            /* PyTorch's clamp passes gradient only inside [-1, 1]. */
            int live = c[j] >= -1 && c[j] <= 1 && !filtered(m, c[j], j == y);
            o[j] = live ? s * g[j] : 0;
        }
        if (y >= 0 && m->grad == AF_MARGIN_GRAD_ANALYTIC && c[y] >= -1 && c[y] <= 1) {
            double v, d;
            af_margin_target(m, tcos ? tcos[b] : c[y], &v, &d);
            o[y] = (float)(s * d * gy);
        }
    }
}

void af_margin_forward(const af_margin *m, const float *cos, const int64_t *labels, const double *tcos,
                       int B, int K, float *logits)
{
    margin_forward_ld(m, cos, labels, tcos, B, K, logits, (size_t)K);
}

void af_margin_backward(const af_margin *m, const float *cos, const int64_t *labels, const double *tcos,
                        int B, int K, const float *dlogits, float *dcos)
{
    margin_backward_ld(m, cos, labels, tcos, B, K, dlogits, dcos, (size_t)K);
}
