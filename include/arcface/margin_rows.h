/* The element-wise row passes of the margin softmax (core/margin.c), as
 * vectorised kernels with a run-time choice between the build's baseline and
 * AVX-512 (nn/kern.h). They cover the non-target entries of a row; the caller
 * writes the target entry itself afterwards, as the scalar code does.
 *
 * forward:  o[j] = 0 if thr > 0 and c[j] > thr (inter-class filtering),
 *           else s * clamp(c[j], -1, 1)
 * backward: o[j] = s * g[j] if -1 <= c[j] <= 1 and not (thr > 0 and c[j] > thr),
 *           else 0 (PyTorch's clamp passes no gradient outside [-1, 1]);
 *           o may be g (in place).
 * NaN cosines give NaN logits and zero gradients, as the scalar loops do. */
#ifndef ARCFACE_MARGIN_ROWS_H
#define ARCFACE_MARGIN_ROWS_H

#include <stddef.h>

void af_margin_row_forward(const float *c, float *o, size_t K, float s, float thr);
void af_margin_row_backward(const float *c, const float *g, float *o, size_t K, float s, float thr);

#endif
