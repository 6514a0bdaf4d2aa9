/* The element-wise row passes of the margin softmax (core/fc_loss.c,
 * core/dist_ce.c), as vectorised kernels with a run-time choice between the
 * build's baseline and AVX-512 (nn/kern.h). The margin passes cover the
 * non-target entries of a row; the caller writes the target entry itself
 * afterwards, as the scalar code (core/margin.c) does.
 *
 * margin forward:  o[j] = 0 if thr > 0 and c[j] > thr (inter-class filtering),
 *                  else s * clamp(c[j], -1, 1)
 * margin backward: o[j] = s * g[j] if -1 <= c[j] <= 1 and not (thr > 0 and c[j] > thr),
 *                  else 0 (PyTorch's clamp passes no gradient outside [-1, 1]);
 *                  o may be g (in place).
 * NaN cosines give NaN logits and zero gradients, as the scalar loops do.
 *
 * softmax rows: the max of a row (NaN ignored, -inf when empty); l[j] =
 * exp(l[j] - mx) in place, returning the sum over j != skip in double (skip
 * -1: every j); y = a * x. The sums are combined in a fixed order of 16
 * partial sums, so they depend on the row alone: not on the instance, nor on
 * the threads the caller runs rows on (af_dot_d alike). exp is within 2 ulp of expf and 0
 * below -87 (see nn/kern_body.inc). */
#ifndef ARCFACE_MARGIN_ROWS_H
#define ARCFACE_MARGIN_ROWS_H

#include <stddef.h>

void af_margin_row_forward(const float *c, float *o, size_t K, float s, float thr);
void af_margin_row_backward(const float *c, const float *g, float *o, size_t K, float s, float thr);
float af_softmax_row_max(const float *l, size_t K);
double af_softmax_row_exp(float *l, size_t K, float mx, ptrdiff_t skip);
void af_row_scale(const float *x, float *y, size_t K, float a);
/* sum of a[j] * b[j] in double, in the same 16 fixed partial sums (the L2
 * normalisation's sums of squares and dot products) */
double af_dot_d(const float *a, const float *b, size_t n);
/* "avx512" or "baseline": the instance these run on this CPU. */
const char *af_margin_rows_instance(void);

#endif
