/* Softmax cross-entropy over class slices held by different ranks: each rank has
 * the same rows and its own columns; the row max and then the row sums of
 * exponentials are combined over the communicator, as arcface_torch's
 * DistCrossEntropy does (same loss, same gradient, including its clamp of
 * p(target) at 1e-30).
 *
 * Precision: the sum of the non-target exponentials and the target's own
 * exponential are kept apart, in double, so that 1 - p(target) — the target's
 * gradient, and the whole loss once training has converged — is not the
 * difference of two nearly equal floats.
 *
 * Threads: rows are shared out over nthreads (OpenMP), each row's passes
 * (include/arcface/margin_rows.h, AVX-512 where the CPU has it) run whole on
 * one thread, and the per-row results combine in row order afterwards, so
 * every number is the same bits for any thread count. */
#include "arcface/margin.h"
#include "arcface/margin_rows.h"

#include <math.h>

af_status af_softmax_ce_forward(float *logits, const int64_t *labels, int B, int K, int B_total, MPI_Comm comm,
                                double *row_buf, double *loss, int nthreads)
{
    double *rmax = row_buf, *other = row_buf + B, *etgt = row_buf + 2 * B;
    if (nthreads < 1) nthreads = 1;
#pragma omp parallel for num_threads(nthreads) schedule(static)
    for (int b = 0; b < B; b++) rmax[b] = af_softmax_row_max(logits + (size_t)b * K, (size_t)K);
    int rc = MPI_Allreduce(MPI_IN_PLACE, rmax, B, MPI_DOUBLE, MPI_MAX, comm);
    if (rc != MPI_SUCCESS) return af_errorf(AF_ERR_MPI, "MPI_Allreduce of softmax row maxima failed (code %d)", rc);
#pragma omp parallel for num_threads(nthreads) schedule(static)
    for (int b = 0; b < B; b++) {
        float *l = logits + (size_t)b * K;
        float mx = (float)rmax[b];
        int64_t y = labels[b];
        etgt[b] = y >= 0 ? exp((double)l[y] - mx) : 0.0;
        other[b] = af_softmax_row_exp(l, (size_t)K, mx, y >= 0 ? (ptrdiff_t)y : -1);
    }
    /* other and etgt are contiguous: one reduction for both. */
    rc = MPI_Allreduce(MPI_IN_PLACE, other, 2 * B, MPI_DOUBLE, MPI_SUM, comm);
    if (rc != MPI_SUCCESS) return af_errorf(AF_ERR_MPI, "MPI_Allreduce of softmax row sums failed (code %d)", rc);
#pragma omp parallel for num_threads(nthreads) schedule(static)
    for (int b = 0; b < B; b++) {
        float *l = logits + (size_t)b * K;
        double S = other[b] + etgt[b];
        af_row_scale(l, l, (size_t)K, (float)(1.0 / S));
        if (labels[b] >= 0) l[labels[b]] = (float)(etgt[b] / S);
    }
    double total = 0;
    for (int b = 0; b < B; b++) {
        double S = other[b] + etgt[b], pt = etgt[b] / S;
        total += pt > 1e-30 ? log(S) - log(etgt[b]) : -log(1e-30);
        /* Keep 1 - p(target) for the backward pass. */
        rmax[b] = other[b] / S;
    }
    *loss = total / B_total;
    return AF_OK;
}

void af_softmax_ce_backward(const float *probs, const int64_t *labels, const double *row_buf, int B, int K,
                            int B_total, float *dlogits, int nthreads)
{
    const float inv = 1.0f / (float)B_total;
    if (nthreads < 1) nthreads = 1;
#pragma omp parallel for num_threads(nthreads) schedule(static)
    for (int b = 0; b < B; b++) {
        af_row_scale(probs + (size_t)b * K, dlogits + (size_t)b * K, (size_t)K, inv);
        if (labels[b] >= 0) dlogits[(size_t)b * K + labels[b]] = (float)(-row_buf[b] / B_total);
    }
}
