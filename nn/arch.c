/* The architectures, as sequences of builder calls: iResNet and
 * MobileFaceNet exactly as insightface's arcface_torch defines them (module
 * names give the state_dict keys), and the small network for 28x28
 * single-channel images.
 *
 * Op order is forward order and fixes the parameter layout. Inside an
 * iResNet downsampling block the shortcut is appended after bn3 (the main
 * branch's bn3 output is kept, and the shortcut's batch norm adds it), so
 * that the layout follows PyTorch's registration order, bn1 .. bn3 then
 * downsample.0 and downsample.1. */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "net.h"

#define KEY(buf, ...) snprintf(buf, sizeof buf, __VA_ARGS__)

/* ---- iResNet ---------------------------------------------------------------- */

static af_status build_iresnet(af_backbone *m, const int layers[4])
{
    const net_init conv_init = {NET_INIT_NORMAL, 0.1f};
    char k1[64], k2[64], k3[64];
    int x = net_input(m, m->cfg.in_c, m->cfg.in_h, m->cfg.in_w);
    x = net_conv(m, "conv1", x, 64, 3, 3, 1, 1, 1, 0, conv_init);
    x = net_bn(m, "bn1", "prelu", x, -1, 0);
    int inplanes = 64;
    for (int s = 0; s < 4; s++) {
        const int planes = 64 << s;
        for (int j = 0; j < layers[s]; j++) {
            const int stride = j == 0 ? 2 : 1;
            KEY(k1, "layer%d.%d.bn1", s + 1, j);
            int a = net_bn(m, k1, NULL, x, -1, 0);
            KEY(k1, "layer%d.%d.conv1", s + 1, j);
            a = net_conv(m, k1, a, planes, 3, 3, 1, 1, 1, 0, conv_init);
            KEY(k1, "layer%d.%d.bn2", s + 1, j);
            KEY(k2, "layer%d.%d.prelu", s + 1, j);
            a = net_bn(m, k1, k2, a, -1, 0);
            KEY(k1, "layer%d.%d.conv2", s + 1, j);
            a = net_conv(m, k1, a, planes, 3, 3, stride, 1, 1, 0, conv_init);
            KEY(k1, "layer%d.%d.bn3", s + 1, j);
            if (stride != 1 || inplanes != planes) {
                a = net_bn(m, k1, NULL, a, -1, 0);
                KEY(k2, "layer%d.%d.downsample.0", s + 1, j);
                KEY(k3, "layer%d.%d.downsample.1", s + 1, j);
                int d = net_conv(m, k2, x, planes, 1, 1, stride, 0, 1, 0, conv_init);
                x = net_bn(m, k3, NULL, d, a, 0);
            } else {
                x = net_bn(m, k1, NULL, a, x, 0);
            }
            inplanes = planes;
        }
    }
    x = net_bn(m, "bn2", NULL, x, -1, 0);
    x = net_flatten(m, x);
    if (m->cfg.dropout > 0.0f) x = net_dropout(m, x, m->cfg.dropout);
    /* nn.Linear's default initialisation: U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for weight and bias */
    int fin = x >= 0 ? m->net->t[x].c : 1;
    const net_init lin = {NET_INIT_UNIFORM, (float)(1.0 / sqrt((double)fin))};
    x = net_linear(m, "fc", x, m->cfg.embedding, 1, lin, lin);
    net_bn(m, "features", NULL, x, -1, 1);
    return m->net->st;
}

/* ---- MobileFaceNet -------------------------------------------------------------- */

/* kaiming_normal_(mode='fan_out', nonlinearity='relu'): std = sqrt(2 / (out * kh * kw)) */
static net_init kaiming_out(int fan_out) { return (net_init){NET_INIT_NORMAL, (float)sqrt(2.0 / fan_out)}; }

/* ConvBlock: Conv2d (no bias) - BatchNorm2d - PReLU, keys prefix.layers.{0,1,2} */
static int mbf_convblock(af_backbone *m, const char *prefix, int x, int cout, int k, int s, int p, int groups)
{
    char kc[96], kb[96], kp[96];
    KEY(kc, "%s.layers.0", prefix);
    KEY(kb, "%s.layers.1", prefix);
    KEY(kp, "%s.layers.2", prefix);
    x = net_conv(m, kc, x, cout, k, k, s, p, groups, 0, kaiming_out(cout * k * k));
    return net_bn(m, kb, kp, x, -1, 0);
}

/* DepthWise: 1x1 ConvBlock to `groups` channels, kxk depthwise ConvBlock,
 * 1x1 LinearBlock (conv + BN) to cout, plus the input when residual. */
static int mbf_depthwise(af_backbone *m, const char *prefix, int x, int cout, int residual, int s, int groups)
{
    char k[96], kc[96], kb[96];
    KEY(k, "%s.layers.0", prefix);
    int a = mbf_convblock(m, k, x, groups, 1, 1, 0, 1);
    KEY(k, "%s.layers.1", prefix);
    a = mbf_convblock(m, k, a, groups, 3, s, 1, groups);
    KEY(kc, "%s.layers.2.layers.0", prefix);
    KEY(kb, "%s.layers.2.layers.1", prefix);
    a = net_conv(m, kc, a, cout, 1, 1, 1, 0, 1, 0, kaiming_out(cout));
    return net_bn(m, kb, NULL, a, residual ? x : -1, 0);
}

static int mbf_residual(af_backbone *m, const char *prefix, int x, int c, int nblock, int groups)
{
    char k[96];
    for (int i = 0; i < nblock; i++) {
        KEY(k, "%s.layers.%d", prefix, i);
        x = mbf_depthwise(m, k, x, c, 1, 1, groups);
    }
    return x;
}

/* get_mbf: blocks (1, 4, 6, 2), scale 2; get_mbf_large: blocks (2, 8, 12, 4),
 * scale 4. The group counts stay those of the scale-2 network whatever the
 * scale, as insightface hard-codes them. */
static af_status build_mbf(af_backbone *m, const int blocks[4], int scale)
{
    int x = net_input(m, m->cfg.in_c, m->cfg.in_h, m->cfg.in_w);
    x = mbf_convblock(m, "layers.0", x, 64 * scale, 3, 2, 1, 1);
    if (blocks[0] == 1) x = mbf_convblock(m, "layers.1", x, 64 * scale, 3, 1, 1, 64);
    else x = mbf_residual(m, "layers.1", x, 64 * scale, blocks[0], 128);
    x = mbf_depthwise(m, "layers.2", x, 64 * scale, 0, 2, 128);
    x = mbf_residual(m, "layers.3", x, 64 * scale, blocks[1], 128);
    x = mbf_depthwise(m, "layers.4", x, 128 * scale, 0, 2, 256);
    x = mbf_residual(m, "layers.5", x, 128 * scale, blocks[2], 256);
    x = mbf_depthwise(m, "layers.6", x, 128 * scale, 0, 2, 512);
    x = mbf_residual(m, "layers.7", x, 128 * scale, blocks[3], 256);
    x = mbf_convblock(m, "conv_sep", x, 512, 1, 1, 0, 1);
    if (m->net->st) return m->net->st;
    /* GDC: a depthwise convolution over the whole remaining plane (7x7 at 112x112) */
    const int gh = m->net->t[x].h, gw = m->net->t[x].w;
    if (gh != gw)
        return af_errorf(AF_ERR_ARG, "mbf: the GDC head needs a square plane, got %dx%d (input %dx%d)", gh, gw,
                         m->cfg.in_h, m->cfg.in_w);
    x = net_conv(m, "features.layers.0.layers.0", x, 512, gh, gw, 1, 0, 512, 0, kaiming_out(512 * gh * gw));
    x = net_bn(m, "features.layers.0.layers.1", NULL, x, -1, 0);
    x = net_flatten(m, x);
    x = net_linear(m, "features.layers.2", x, m->cfg.embedding, 0, kaiming_out(m->cfg.embedding),
                   (net_init){NET_INIT_CONST, 0.0f});
    net_bn(m, "features.layers.3", NULL, x, -1, 0);
    return m->net->st;
}

/* ---- the small network for 28x28x1 ---------------------------------------------- */

/* conv1..conv4 (3x3, the 2nd and 4th with stride 2) each followed by bnN and
 * preluN; then bn5 - flatten - dropout - fc (with bias) - features
 * (BatchNorm1d, weight fixed at 1 as in iResNet). */
static af_status build_fmnist(af_backbone *m)
{
    static const int width[4] = {32, 64, 64, 128}, stride[4] = {1, 2, 1, 2};
    char kc[16], kb[16], kp[16];
    int x = net_input(m, m->cfg.in_c, m->cfg.in_h, m->cfg.in_w);
    for (int i = 0; i < 4; i++) {
        KEY(kc, "conv%d", i + 1);
        KEY(kb, "bn%d", i + 1);
        KEY(kp, "prelu%d", i + 1);
        x = net_conv(m, kc, x, width[i], 3, 3, stride[i], 1, 1, 0, kaiming_out(width[i] * 9));
        x = net_bn(m, kb, kp, x, -1, 0);
    }
    x = net_bn(m, "bn5", NULL, x, -1, 0);
    x = net_flatten(m, x);
    if (m->cfg.dropout > 0.0f) x = net_dropout(m, x, m->cfg.dropout);
    int fin = x >= 0 ? m->net->t[x].c : 1;
    const net_init lin = {NET_INIT_UNIFORM, (float)(1.0 / sqrt((double)fin))};
    x = net_linear(m, "fc", x, m->cfg.embedding, 1, lin, lin);
    net_bn(m, "features", NULL, x, -1, 1);
    return m->net->st;
}

af_status net_build_arch(af_backbone *m)
{
    static const struct {
        const char *name;
        int layers[4];
    } resnets[] = {
        {"r18", {2, 2, 2, 2}},    {"r34", {3, 4, 6, 3}},     {"r50", {3, 4, 14, 3}},
        {"r100", {3, 13, 30, 3}}, {"r200", {6, 26, 60, 6}},
    };
    static const int mbf_blocks[4] = {1, 4, 6, 2}, mbf_large_blocks[4] = {2, 8, 12, 4};
    for (size_t i = 0; i < sizeof resnets / sizeof resnets[0]; i++)
        if (strcmp(m->arch, resnets[i].name) == 0) return build_iresnet(m, resnets[i].layers);
    if (strcmp(m->arch, "mbf") == 0) return build_mbf(m, mbf_blocks, 2);
    if (strcmp(m->arch, "mbf_large") == 0) return build_mbf(m, mbf_large_blocks, 4);
    if (strcmp(m->arch, "fmnist") == 0) return build_fmnist(m);
    return af_errorf(AF_ERR_ARG, "unknown backbone architecture '%s' (expected r18, r34, r50, r100, r200, mbf, mbf_large or fmnist)",
                     m->arch);
}
