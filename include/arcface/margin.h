/* The margin-based softmax on the unit hypersphere: the numeric heart of
 * ArcFace / CosFace / SphereFace and their combination.
 *
 * For a feature x and class centres w_j (both L2-normalised) with
 * cos(theta_j) = <x, w_j>, the logits are
 *     target class y:  s * (cos(m1 * theta_y + m2) - m3)
 *     other classes:   s * cos(theta_j)
 * ArcFace is (m1, m2, m3) = (1, 0.5, 0), CosFace (1, 0, 0.4), SphereFace m1 > 1;
 * the analytic mode allows any combination; the arcface_torch mode applies
 * insightface's rules (below).
 *
 * Class centres are sharded: every function here works on one shard's slice of
 * classes, with labels already mapped to the slice (-1 = target not in this
 * slice, no margin applied). The softmax cross-entropy combines the slices over
 * an MPI communicator (row max, then row sum of exponentials), as arcface_torch's
 * DistCrossEntropy does; the loss is the mean over the global batch.
 *
 * Gradient modes:
 *   AF_MARGIN_GRAD_ARCFACE_TORCH reproduces insightface's arcface_torch
 *                                CombinedMarginLoss (losses.py, commit 7fadd420),
 *                                the training default: m3 > 0 gives the target
 *                                cos - m3 alone (m1, m2 ignored: (1, 0.3, 0.2)
 *                                equals (1, 0, 0.2)); m1 = 1 with m3 = 0 gives
 *                                cos(theta + m2) applied without gradient
 *                                (straight-through: d logit / d cos = s for every
 *                                class, target included) and no theta + m > pi
 *                                fallback; m1 != 1 with m3 = 0 is refused (it
 *                                raises there);
 *   AF_MARGIN_GRAD_ANALYTIC      the true gradient of the full combined formula
 *                                above (through arccos/cos), the paper's.
 * theta + m > pi (analytic mode): when m1 * theta + m2 > pi the target logit falls
 * back to s * (cos(theta) - m3 - sin(pi - m2) * m2), as the original ArcFace code
 * does (cos(theta) <= cos(pi - m) there); with m1 != 1 only the threshold moves.
 * easy_margin: the margin (all of m1, m2, m3) is applied only when cos(theta) > 0.
 * Inter-class filtering (threshold t > 0, arcface_torch semantics): any non-target
 * cosine above t is set to 0 and gets no gradient; for rows whose target is not in
 * this slice every cosine above t is filtered.
 * As in arcface_torch, cosines are clamped to [-1, 1] and a clamped entry passes no
 * gradient; the probability of the target is clamped below at 1e-30 in the loss. */
#ifndef ARCFACE_MARGIN_H
#define ARCFACE_MARGIN_H

#include <mpi.h>
#include <stddef.h>
#include <stdint.h>

#include "arcface/l2norm.h"
#include "arcface/status.h"

typedef enum {
    AF_MARGIN_GRAD_ANALYTIC = 0,
    AF_MARGIN_GRAD_ARCFACE_TORCH = 1,
} af_margin_grad;

typedef struct {
    float s, m1, m2, m3;
    af_margin_grad grad;
    int easy_margin;
    float filter_threshold; /* <= 0 disables filtering */
} af_margin;

/* Validates ranges (s > 0, m1 >= 1, 0 <= m2 < pi, m3 >= 0, t < 1) and, in
 * arcface_torch mode, insightface's rule (m1 = 1 or m3 > 0); the message names the field. */
af_status af_margin_check(const af_margin *m);
/* In arcface_torch mode with m3 > 0 and m1, m2 not (1, 0): writes the line the
 * log should carry about the ignored terms into buf and returns 1; else 0. */
int af_margin_note(const af_margin *m, char *buf, size_t cap);
/* Parses "analytic" | "arcface_torch". */
af_status af_margin_grad_parse(const char *s, af_margin_grad *out);

/* The target logit's function of the target cosine c (before the scale s),
 * its value and d/dc, in double: clamp, easy_margin gate, the combined
 * margin and, per gradient mode, the fallback past theta + m = pi. */
void af_margin_target(const af_margin *m, double c, double *val, double *deriv);

/* ---- margin on a (B, K) block of cosines (scalar reference loops) ---- */
/* logits = margin(cos). tcos (B), optional: the target cosines computed in double
 * precision by the caller (used instead of cos[b, label] for the target angle). */
void af_margin_forward(const af_margin *m, const float *cos /* (B,K) */, const int64_t *labels /* (B) */,
                       const double *tcos, int B, int K, float *logits /* (B,K) */);
/* dcos = dlogits * d logit / d cos (written, not accumulated). */
void af_margin_backward(const af_margin *m, const float *cos, const int64_t *labels, const double *tcos,
                        int B, int K, const float *dlogits, float *dcos /* (B,K) */);

/* ---- distributed softmax cross-entropy over class slices ----
 * Collective over comm: every rank holds the same B rows and its own K columns
 * (K may differ per rank, even be 0). On return logits hold the probabilities,
 * *loss = mean over the B rows of -log p(target) (equal on all ranks).
 * B_total is the divisor of the mean (the global batch). Equal on all ranks: B, B_total.
 * Rows run on nthreads OpenMP threads; the results do not depend on nthreads. */
af_status af_softmax_ce_forward(float *logits /* (B,K) in: logits; out: probabilities */, const int64_t *labels,
                                int B, int K, int B_total, MPI_Comm comm, double *row_buf /* (3*B) */,
                                double *loss, int nthreads);
/* dlogits = (p - onehot) / B_total (written). In-place allowed (dlogits == probs).
 * row_buf is the one the forward filled (it keeps 1 - p(target) per row). */
void af_softmax_ce_backward(const float *probs, const int64_t *labels, const double *row_buf, int B, int K,
                            int B_total, float *dlogits, int nthreads);

/* ---- one slice's whole loss: normalise, cosines, margin, distributed CE, backward ----
 * (core/fc_loss.c, library af_fc: its row passes are nn's dispatched kernels)
 * Workspace sized at init for the largest B, K, D; no allocation per call.
 * What grows with K is the logits (B x K floats, one buffer: logits, then
 * probabilities, then their gradients in place); the normalised centres,
 * cosines and centre gradients exist one block of blk rows at a time
 * (recomputed in the backward pass), so the caller's raw centres are the only
 * K x D array. */
typedef struct {
    int maxB, maxK, D, blk;
    int nthreads;          /* OpenMP threads of the element-wise passes */
    float *xn, *xnorm;     /* (maxB,D), (maxB) */
    float *wnorm;          /* (blk) the block's centre norms */
    float *logits;         /* (maxB,maxK): logits, then probs, then dcos */
    float *wn, *dwn;       /* (blk,D) one block of normalised centres and their gradients */
    float *cos;            /* (maxB,blk) the block's cosines */
    float *dxn;            /* (maxB,D) */
    double *tcos;          /* (maxB) */
    int64_t *lab;          /* (maxB) labels relative to the block */
    double *rowbuf;        /* (3*maxB) */
} af_fc_ws;

af_status af_fc_ws_init(af_fc_ws *ws, int maxB, int maxK, int D);
void af_fc_ws_free(af_fc_ws *ws);
/* Lowers the rows per block (tests: many blocks on small data); never raises it. */
void af_fc_ws_set_block(af_fc_ws *ws, int rows);
/* Threads of the element-wise passes over the logits (0: OpenMP's default,
 * what af_fc_ws_init sets); the results are the same bits for any count. */
void af_fc_ws_set_threads(af_fc_ws *ws, int nthreads);

/* Loss of the global batch x (B,D raw) against this slice's raw centres w (K,D),
 * labels mapped to the slice. Adds d(mean loss)/dx — this slice's partial sum,
 * to be summed over slices by the caller — into dx and writes d/dw into dw
 * (either may be NULL to skip). dw may be w itself: the centres are then
 * replaced by their gradients, so a worker needs no second K x D array.
 * Collective over comm. */
af_status af_fc_loss(const af_margin *m, const float *x, int B, int B_total, const float *w, int K,
                     const int64_t *labels, MPI_Comm comm, af_fc_ws *ws, double *loss, float *dx, float *dw);

#endif
