/* The public entry points of the margin softmax's row kernels
 * (include/arcface/margin_rows.h): the work is in kern_body.inc, this file
 * only dispatches to the instance nn_kern() chose for this CPU. */
#include "arcface/margin_rows.h"

#include "kern.h"

void af_margin_row_forward(const float *c, float *o, size_t K, float s, float thr)
{
    nn_kern()->margin_row_fwd(c, o, K, s, thr);
}

void af_margin_row_backward(const float *c, const float *g, float *o, size_t K, float s, float thr)
{
    nn_kern()->margin_row_bwd(c, g, o, K, s, thr);
}

float af_softmax_row_max(const float *l, size_t K) { return nn_kern()->row_max(l, K); }

double af_softmax_row_exp(float *l, size_t K, float mx, ptrdiff_t skip)
{
    return nn_kern()->row_exp_sum(l, K, mx, skip);
}

void af_row_scale(const float *x, float *y, size_t K, float a) { nn_kern()->row_scale(x, y, K, a); }

double af_dot_d(const float *a, const float *b, size_t n) { return nn_kern()->dot_d(a, b, n); }

const char *af_margin_rows_instance(void) { return nn_kern()->name; }
