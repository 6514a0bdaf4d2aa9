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
