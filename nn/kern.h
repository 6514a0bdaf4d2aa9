/* The element-wise and transform kernels of the backbone (batch norm, PReLU,
 * the Winograd transforms, the direct grouped/depthwise convolution's taps),
 * compiled twice from kern_body.inc: once for the build's baseline
 * (ARCFACE_MARCH, x86-64-v3 by default) and once with AVX-512 function target
 * attributes. nn_kern() picks the table once per process from af_cpu(), so one
 * binary runs the zmm versions where the CPU (and OS) have AVX-512 and the
 * baseline ones elsewhere; AF_ISA=avx2 forces the baseline table. The callers
 * keep the OpenMP loops and call these per channel / per chunk, so the
 * dispatch costs one indirect call per row of work. */
#ifndef ARCFACE_NN_KERN_H
#define ARCFACE_NN_KERN_H

#include <stddef.h>

#include "arcface/nn.h"

/* Winograd F(2x2, 3x3) chunk geometry (conv_winograd.c). */
typedef struct {
    int th, tw;       /* tiles per plane */
    size_t rows;      /* tile rows per chunk */
    size_t nt;        /* tiles per chunk: rows * tw */
    size_t u;         /* 16 * cout * cin */
    size_t v, m;      /* chunk buffers: 16 * cin * nt, 16 * cout * nt */
    size_t per_thread;
} nn_wino_geom;

typedef struct {
    const char *name; /* "avx512" or "baseline" */
    /* batch norm: per-channel sums, the fused affine (+PReLU) (+residual),
     * the backward's two (three with PReLU) sums and its dx pass */
    void (*bn_sums)(const float *x, size_t n, double *s1, double *s2);
    void (*bn_apply)(const float *x, const float *r, float *y, size_t n, float scale, float shift, float a,
                     int prelu);
    void (*bn_bwd_sums)(const float *x, const float *dy, size_t n, float mean, float invstd, float scale,
                        float shift, float a, int prelu, double *sd, double *sdx, double *sda);
    void (*bn_bwd_dx)(const float *x, const float *dy, float *dx, size_t n, float mean, float invstd, float k,
                      float shift, float m1, float m2, float a, int prelu, int accum);
    /* y (=/+=) x (the residual branch's gradient) */
    void (*copy_add)(const float *x, float *y, size_t n, int accum);
    void (*prelu_fwd)(const float *x, float *y, size_t n, float a);
    /* returns sum over x <= 0 of dy * x (the alpha gradient); dx may be NULL */
    double (*prelu_bwd)(const float *x, const float *dy, float *dx, size_t n, float a, int accum);
    /* direct convolution: out[q] += sum_t w[t] * base[off[t] + q];
     * dot[t] = sum_q dy[q] * base[off[t] + q]; y[q] += a * x[q] */
    void (*taps_fwd)(float *out, size_t n, const float *base, const size_t *off, const float *w, int ntaps);
    void (*taps_dot)(const float *dy, size_t n, const float *base, const size_t *off, float *dot, int ntaps);
    void (*axpy)(float *y, const float *x, float a, size_t n);
    /* Winograd transforms of a chunk of tile rows [r0, r0 + nr) */
    void (*wino_input)(const af_conv2d *c, const nn_wino_geom *g, int B, const float *x, size_t r0, size_t nr,
                       float *V, float *scratch);
    void (*wino_output)(const af_conv2d *c, const nn_wino_geom *g, int B, const float *M, size_t r0, size_t nr,
                        float *y, int accum, float *scratch);
    void (*wino_dy)(const af_conv2d *c, const nn_wino_geom *g, int B, const float *dy, size_t r0, size_t nr,
                    float *M, float *scratch);
    /* the margin softmax's row passes: include/arcface/margin_rows.h */
    void (*margin_row_fwd)(const float *c, float *o, size_t K, float s, float thr);
    void (*margin_row_bwd)(const float *c, const float *g, float *o, size_t K, float s, float thr);
    /* the softmax's rows (core/dist_ce.c): max (NaN ignored), exp(l - mx) in
     * place with the sum over j != skip in double, y = a * x; the sums and the
     * exponentials are bit-identical in both instances */
    float (*row_max)(const float *l, size_t K);
    double (*row_exp_sum)(float *l, size_t K, float mx, ptrdiff_t skip);
    void (*row_scale)(const float *x, float *y, size_t K, float a);
    double (*dot_d)(const float *a, const float *b, size_t n);
} nn_kern_table;

/* The table for this CPU (detected once; thread-safe). */
const nn_kern_table *nn_kern(void);
/* The two instances; nn_kern_avx512 is NULL where the compiler cannot
 * target AVX-512 (non-x86 builds). */
extern const nn_kern_table nn_kern_baseline;
extern const nn_kern_table *const nn_kern_avx512;

#endif
