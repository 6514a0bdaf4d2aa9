/* L2 normalisation of rows, shared by the margin core (features and class
 * centres) and the backbone (embeddings): PyTorch F.normalize semantics,
 * y = x / max(|x|, 1e-12). */
#ifndef ARCFACE_L2NORM_H
#define ARCFACE_L2NORM_H

/* Rows of x (B, d): y = x / max(|x|, 1e-12); norms (B) receives |x|. */
void af_l2norm_forward(int B, int d, const float *x, float *y, float *norms);
/* dx = or += (dy - y (y . dy)) / max(|x|, 1e-12). */
void af_l2norm_backward(int B, int d, const float *y, const float *norms, const float *dy, float *dx, int dx_accum);

#endif
