/* SGD, AdamW and gradient-norm clipping over flat arrays, following
 * torch.optim's formulas operation for operation (see include/arcface/optim.h). */
#include "arcface/optim.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

af_status af_sgd_init(af_sgd *o, size_t n)
{
    memset(o, 0, sizeof *o);
    o->momentum = af_calloc(n, sizeof(float), "SGD momentum buffer");
    if (!o->momentum) return AF_ERR_NOMEM;
    o->n = n;
    return AF_OK;
}

void af_sgd_free(af_sgd *o)
{
    free(o->momentum);
    memset(o, 0, sizeof *o);
}

void af_sgd_step(af_sgd *o, float *w, const float *g, float lr, float momentum, float weight_decay)
{
    const size_t n = o->n;
    float *v = o->momentum;
    if (momentum == 0.0f) {
        for (size_t i = 0; i < n; i++) w[i] -= lr * (g[i] + weight_decay * w[i]);
    } else if (o->steps == 0) {
        /* torch: buf = clone(d_p) on the first step, no momentum term */
        for (size_t i = 0; i < n; i++) {
            v[i] = g[i] + weight_decay * w[i];
            w[i] -= lr * v[i];
        }
    } else {
        for (size_t i = 0; i < n; i++) {
            v[i] = momentum * v[i] + (g[i] + weight_decay * w[i]);
            w[i] -= lr * v[i];
        }
    }
    o->steps++;
}

af_status af_adamw_init(af_adamw *o, size_t n)
{
    memset(o, 0, sizeof *o);
    o->m = af_calloc(n, sizeof(float), "AdamW first moment");
    o->v = af_calloc(n, sizeof(float), "AdamW second moment");
    if (!o->m || !o->v) {
        af_adamw_free(o);
        return AF_ERR_NOMEM;
    }
    o->n = n;
    return AF_OK;
}

void af_adamw_free(af_adamw *o)
{
    free(o->m);
    free(o->v);
    memset(o, 0, sizeof *o);
}

void af_adamw_step(af_adamw *o, float *w, const float *g, float lr, float beta1, float beta2, float eps,
                   float weight_decay)
{
    o->steps++;
    /* torch computes the bias corrections in double (Python floats), then the
     * tensor ops in float32 */
    const double bc1 = 1.0 - pow(beta1, (double)o->steps);
    const double bc2 = 1.0 - pow(beta2, (double)o->steps);
    const float step_size = (float)(lr / bc1);
    const float bc2_sqrt = (float)sqrt(bc2);
    const float decay = 1.0f - lr * weight_decay;
    for (size_t i = 0; i < o->n; i++) {
        w[i] *= decay;
        o->m[i] = beta1 * o->m[i] + (1.0f - beta1) * g[i];
        o->v[i] = beta2 * o->v[i] + (1.0f - beta2) * g[i] * g[i];
        const float denom = sqrtf(o->v[i]) / bc2_sqrt + eps;
        w[i] -= step_size * (o->m[i] / denom);
    }
}

double af_clip_grad_norm(float *g, size_t n, double max_norm)
{
    double s = 0.0;
    for (size_t i = 0; i < n; i++) s += (double)g[i] * g[i];
    const double norm = sqrt(s);
    const double coef = max_norm / (norm + 1e-6);
    if (coef < 1.0) {
        const float c = (float)coef;
        for (size_t i = 0; i < n; i++) g[i] *= c;
    }
    return norm;
}
