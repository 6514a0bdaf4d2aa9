/* Softmax cross-entropy over class slices held by different ranks: each rank has
 * the same rows and its own columns; the row max and then the row sums of
 * exponentials are combined over the communicator, as arcface_torch's
 * DistCrossEntropy does (same loss, same gradient, including its clamp of
 * p(target) at 1e-30).
 *
 * Precision: the sum of the non-target exponentials and the target's own
 * exponential are kept apart, in double, so that 1 - p(target) — the target's
 * gradient, and the whole loss once training has converged — is not the
 * difference of two nearly equal floats. */
#include "arcface/margin.h"

#include <math.h>

af_status af_softmax_ce_forward(float *logits, const int64_t *labels, int B, int K, int B_total, MPI_Comm comm,
                                double *row_buf, double *loss)
{
    double *rmax = row_buf, *other = row_buf + B, *etgt = row_buf + 2 * B;
    for (int b = 0; b < B; b++) {
        const float *l = logits + (size_t)b * K;
        float mx = -INFINITY;
        for (int j = 0; j < K; j++) mx = l[j] > mx ? l[j] : mx;
        rmax[b] = mx;
    }
    int rc = MPI_Allreduce(MPI_IN_PLACE, rmax, B, MPI_DOUBLE, MPI_MAX, comm);
    if (rc != MPI_SUCCESS) return af_errorf(AF_ERR_MPI, "MPI_Allreduce of softmax row maxima failed (code %d)", rc);
    for (int b = 0; b < B; b++) {
        float *l = logits + (size_t)b * K;
        float mx = (float)rmax[b];
        int64_t y = labels[b];
        double sum = 0;
        etgt[b] = y >= 0 ? exp((double)l[y] - mx) : 0.0;
        for (int j = 0; j < K; j++) {
            l[j] = expf(l[j] - mx);
            sum += j == y ? 0.0 : l[j];
        }
        other[b] = sum;
    }
    /* other and etgt are contiguous: one reduction for both. */
    rc = MPI_Allreduce(MPI_IN_PLACE, other, 2 * B, MPI_DOUBLE, MPI_SUM, comm);
    if (rc != MPI_SUCCESS) return af_errorf(AF_ERR_MPI, "MPI_Allreduce of softmax row sums failed (code %d)", rc);
    double total = 0;
    for (int b = 0; b < B; b++) {
        float *l = logits + (size_t)b * K;
        double S = other[b] + etgt[b];
        float inv = (float)(1.0 / S);
        for (int j = 0; j < K; j++) l[j] *= inv;
        if (labels[b] >= 0) l[labels[b]] = (float)(etgt[b] / S);
        double pt = etgt[b] / S;
        total += pt > 1e-30 ? log(S) - log(etgt[b]) : -log(1e-30);
        /* Keep 1 - p(target) for the backward pass. */
        rmax[b] = other[b] / S;
    }
    *loss = total / B_total;
    return AF_OK;
}

void af_softmax_ce_backward(const float *probs, const int64_t *labels, const double *row_buf, int B, int K,
                            int B_total, float *dlogits)
{
    const float inv = 1.0f / (float)B_total;
    for (int b = 0; b < B; b++) {
        const float *p = probs + (size_t)b * K;
        float *g = dlogits + (size_t)b * K;
        for (int j = 0; j < K; j++) g[j] = p[j] * inv;
        if (labels[b] >= 0) g[labels[b]] = (float)(-row_buf[b] / B_total);
    }
}
