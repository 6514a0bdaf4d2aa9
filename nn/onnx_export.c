/* A backbone as an ONNX model, as insightface's torch2onnx.py produces one:
 * input "data" (N, C, H, W) float32 with a symbolic batch dimension, output
 * (N, embedding), opset 11, eval-mode semantics (batch norm over the
 * running statistics, dropout gone), weights as initializers named by their
 * state_dict keys.
 *
 * The graph is read off the layer table: each op becomes the ONNX node(s)
 * that compute it (a batch norm with fused PReLU and residual add becomes
 * BatchNormalization, PRelu, Add, in the order norm.c applies them). The
 * messages are built with protobuf-c over Debian's onnx.proto; every string
 * and array they point at comes from one arena freed at the end. */
#include <fcntl.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "arcface/backbone.h"
#include "net.h"
#include "onnx.pb-c.h"

typedef struct {
    void **p;
    size_t n, cap;
    int oom;
} arena;

static void *alloc(arena *a, size_t bytes)
{
    if (a->oom) return NULL;
    if (a->n == a->cap) {
        size_t nc = a->cap ? 2 * a->cap : 256;
        void **q = realloc(a->p, nc * sizeof *q);
        if (!q) { a->oom = 1; return NULL; }
        a->p = q;
        a->cap = nc;
    }
    void *v = calloc(1, bytes ? bytes : 1);
    if (!v) { a->oom = 1; return NULL; }
    return a->p[a->n++] = v;
}

static char *dup_str(arena *a, const char *s)
{
    char *r = alloc(a, strlen(s) + 1);
    if (r) strcpy(r, s);
    return r;
}

/* fmt with one string and one int, e.g. "%s%d" for tensor names */
static char *str(arena *a, const char *fmt, const char *s, int i)
{
    char b[160];
    snprintf(b, sizeof b, fmt, s, i);
    char *r = alloc(a, strlen(b) + 1);
    if (r) strcpy(r, b);
    return r;
}

typedef struct {
    arena a;
    Onnx__GraphProto *g;
    size_t cap_node, cap_init;
    const af_backbone *m;
} builder;

static int push_ptr(builder *b, void ***arr, size_t *n, size_t *cap, void *v)
{
    if (!v) return 0;
    if (*n == *cap) {
        size_t nc = *cap ? 2 * *cap : 64;
        void **q = alloc(&b->a, nc * sizeof *q);
        if (!q) return 0;
        if (*n) memcpy(q, *arr, *n * sizeof *q);
        *arr = q;
        *cap = nc;
    }
    (*arr)[(*n)++] = v;
    return 1;
}

static Onnx__AttributeProto *attr_i(builder *b, const char *name, int64_t v)
{
    Onnx__AttributeProto *at = alloc(&b->a, sizeof *at);
    if (!at) return NULL;
    onnx__attribute_proto__init(at);
    at->name = (char *)name;
    at->has_type = 1;
    at->type = ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__INT;
    at->has_i = 1;
    at->i = v;
    return at;
}

static Onnx__AttributeProto *attr_f(builder *b, const char *name, float v)
{
    Onnx__AttributeProto *at = alloc(&b->a, sizeof *at);
    if (!at) return NULL;
    onnx__attribute_proto__init(at);
    at->name = (char *)name;
    at->has_type = 1;
    at->type = ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__FLOAT;
    at->has_f = 1;
    at->f = v;
    return at;
}

static Onnx__AttributeProto *attr_ints(builder *b, const char *name, int n, const int64_t *v)
{
    Onnx__AttributeProto *at = alloc(&b->a, sizeof *at);
    int64_t *c = alloc(&b->a, (size_t)n * sizeof *c);
    if (!at || !c) return NULL;
    onnx__attribute_proto__init(at);
    memcpy(c, v, (size_t)n * sizeof *c);
    at->name = (char *)name;
    at->has_type = 1;
    at->type = ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__INTS;
    at->n_ints = (size_t)n;
    at->ints = c;
    return at;
}

/* A node with nin inputs and one output (NULL when an input is missing: out of memory). */
static Onnx__NodeProto *node(builder *b, const char *op, char *out, char *const *in, int nin)
{
    for (int i = 0; i < nin; i++)
        if (!in[i]) return NULL;
    Onnx__NodeProto *n = alloc(&b->a, sizeof *n);
    char **ins = alloc(&b->a, (size_t)nin * sizeof *ins), **outs = alloc(&b->a, sizeof *outs);
    if (!n || !ins || !outs) return NULL;
    onnx__node_proto__init(n);
    n->op_type = (char *)op;
    n->name = str(&b->a, "%s_%d", op, (int)b->g->n_node);
    memcpy(ins, in, (size_t)nin * sizeof *ins);
    n->input = ins;
    n->n_input = (size_t)nin;
    outs[0] = out;
    n->output = outs;
    n->n_output = 1;
    return push_ptr(b, (void ***)&b->g->node, &b->g->n_node, &b->cap_node, n) ? n : NULL;
}

/* Grows the attribute array one at a time: a node has at most five. */
static int add_attr(builder *b, Onnx__NodeProto *n, Onnx__AttributeProto *at)
{
    if (!n || !at) return 0;
    Onnx__AttributeProto **q = alloc(&b->a, (n->n_attribute + 1) * sizeof *q);
    if (!q) return 0;
    if (n->n_attribute) memcpy(q, n->attribute, n->n_attribute * sizeof *q);
    q[n->n_attribute++] = at;
    n->attribute = q;
    return 1;
}

/* An initializer from state_dict entry `id`, with the given dims (NULL: the entry's own). */
static char *init_tensor(builder *b, int id, int ndim, const int64_t *dims)
{
    const af_backbone_tensor *e = &b->m->tensors[id];
    Onnx__TensorProto *t = alloc(&b->a, sizeof *t);
    int64_t *d = alloc(&b->a, 4 * sizeof *d);
    if (!t || !d) return NULL;
    onnx__tensor_proto__init(t);
    if (!dims) {
        ndim = e->ndim;
        dims = e->shape;
    }
    memcpy(d, dims, (size_t)ndim * sizeof *d);
    t->n_dims = (size_t)ndim;
    t->dims = d;
    t->has_data_type = 1;
    t->data_type = ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT;
    t->name = dup_str(&b->a, e->key);
    t->has_raw_data = 1;
    t->raw_data.len = e->numel * sizeof(float);
    /* protobuf-c only reads the data when packing */
    t->raw_data.data = (uint8_t *)((e->kind == AF_TENSOR_KIND_BUFFER ? b->m->buffers : b->m->params) + e->offset);
    if (!push_ptr(b, (void ***)&b->g->initializer, &b->g->n_initializer, &b->cap_init, t)) return NULL;
    return t->name;
}

static Onnx__ValueInfoProto *value_info(builder *b, const char *name, int ndim, const int64_t *dims)
{
    Onnx__ValueInfoProto *v = alloc(&b->a, sizeof *v);
    Onnx__TypeProto *tp = alloc(&b->a, sizeof *tp);
    Onnx__TypeProto__Tensor *tt = alloc(&b->a, sizeof *tt);
    Onnx__TensorShapeProto *sh = alloc(&b->a, sizeof *sh);
    Onnx__TensorShapeProto__Dimension **dv = alloc(&b->a, (size_t)ndim * sizeof *dv);
    if (!v || !tp || !tt || !sh || !dv) return NULL;
    onnx__value_info_proto__init(v);
    onnx__type_proto__init(tp);
    onnx__type_proto__tensor__init(tt);
    onnx__tensor_shape_proto__init(sh);
    for (int i = 0; i < ndim; i++) {
        if (!(dv[i] = alloc(&b->a, sizeof *dv[i]))) return NULL;
        onnx__tensor_shape_proto__dimension__init(dv[i]);
        if (i == 0) { /* the batch, free: torch2onnx.py names it 'None' */
            dv[i]->value_case = ONNX__TENSOR_SHAPE_PROTO__DIMENSION__VALUE_DIM_PARAM;
            dv[i]->dim_param = "None";
        } else {
            dv[i]->value_case = ONNX__TENSOR_SHAPE_PROTO__DIMENSION__VALUE_DIM_VALUE;
            dv[i]->dim_value = dims[i];
        }
    }
    sh->n_dim = (size_t)ndim;
    sh->dim = dv;
    tt->has_elem_type = 1;
    tt->elem_type = ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT;
    tt->shape = sh;
    tp->value_case = ONNX__TYPE_PROTO__VALUE_TENSOR_TYPE;
    tp->tensor_type = tt;
    v->name = (char *)name;
    v->type = tp;
    return v;
}

static af_status build_graph(builder *b, const char *out_name)
{
    const struct af_net *net = b->m->net;
    char **name = alloc(&b->a, (size_t)net->n_t * sizeof *name);
    uint8_t *flat = alloc(&b->a, (size_t)net->n_t);
    if (!name || !flat) return AF_ERR_NOMEM;
    name[net->in_tensor] = "data";
    for (int i = 0; i < net->n_ops; i++) {
        const net_op *op = &net->ops[i];
        char *out = op->out == net->out_tensor ? (char *)out_name : str(&b->a, "%s%d", "t", op->out);
        Onnx__NodeProto *n = NULL;
        flat[op->out] = flat[op->in];
        switch (op->kind) {
        case NET_OP_CONV: {
            const af_conv2d *c = &op->conv;
            char *in[3] = {name[op->in], init_tensor(b, op->t_w, 0, NULL),
                           op->t_b >= 0 ? init_tensor(b, op->t_b, 0, NULL) : NULL};
            const int64_t k[2] = {c->kh, c->kw}, s[2] = {c->sh, c->sw}, p[4] = {c->ph, c->pw, c->ph, c->pw},
                          dl[2] = {1, 1};
            n = node(b, "Conv", out, in, op->t_b >= 0 ? 3 : 2);
            if (!add_attr(b, n, attr_ints(b, "kernel_shape", 2, k)) || !add_attr(b, n, attr_ints(b, "strides", 2, s)) ||
                !add_attr(b, n, attr_ints(b, "pads", 4, p)) || !add_attr(b, n, attr_ints(b, "dilations", 2, dl)) ||
                !add_attr(b, n, attr_i(b, "group", c->groups)))
                n = NULL;
            break;
        }
        case NET_OP_BN: {
            const int last = !op->bn.prelu && op->res < 0;
            char *bn_out = last ? out : str(&b->a, "%s%d_bn", "t", op->out);
            char *in[5] = {name[op->in], init_tensor(b, op->t_w, 0, NULL), init_tensor(b, op->t_b, 0, NULL),
                           init_tensor(b, op->t_rm, 0, NULL), init_tensor(b, op->t_rv, 0, NULL)};
            n = node(b, "BatchNormalization", bn_out, in, 5);
            if (!add_attr(b, n, attr_f(b, "epsilon", op->bn.eps)) || !add_attr(b, n, attr_f(b, "momentum", 0.9f)))
                n = NULL;
            if (n && op->bn.prelu) {
                /* slopes broadcast over (N, C, H, W) as (C, 1, 1), as torch exports them */
                const int64_t d[3] = {op->bn.c, 1, 1};
                char *pin[2] = {bn_out, flat[op->in] ? init_tensor(b, op->t_alpha, 0, NULL)
                                                     : init_tensor(b, op->t_alpha, 3, d)};
                char *p_out = op->res < 0 ? out : str(&b->a, "%s%d_prelu", "t", op->out);
                n = node(b, "PRelu", p_out, pin, 2);
                bn_out = p_out;
            }
            if (n && op->res >= 0) {
                char *ain[2] = {bn_out, name[op->res]};
                n = node(b, "Add", out, ain, 2);
            }
            break;
        }
        case NET_OP_FLATTEN: {
            char *in[1] = {name[op->in]};
            n = node(b, "Flatten", out, in, 1);
            if (!add_attr(b, n, attr_i(b, "axis", 1))) n = NULL;
            flat[op->out] = 1;
            break;
        }
        case NET_OP_DROPOUT: /* the identity in eval mode, as torch.onnx.export leaves it out */
            name[op->out] = name[op->in];
            if (op->out == net->out_tensor) return af_errorf(AF_ERR_ARG, "onnx: a model may not end with dropout");
            continue;
        case NET_OP_LINEAR: {
            char *in[3] = {name[op->in], init_tensor(b, op->t_w, 0, NULL),
                           op->t_b >= 0 ? init_tensor(b, op->t_b, 0, NULL) : NULL};
            n = node(b, "Gemm", out, in, op->t_b >= 0 ? 3 : 2);
            if (!add_attr(b, n, attr_i(b, "transB", 1))) n = NULL;
            flat[op->out] = 1;
            break;
        }
        }
        if (!n || !out) return b->a.oom ? af_errorf(AF_ERR_NOMEM, "onnx: out of memory building the graph")
                                        : af_errorf(AF_ERR_ARG, "onnx: cannot express layer %d", i);
        name[op->out] = out;
    }
    return AF_OK;
}

static af_status write_all(const char *path, const uint8_t *buf, size_t len)
{
    char tmp[4096];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0) return af_errorf(AF_ERR_IO, "%s: cannot create", tmp);
    size_t done = 0;
    while (done < len) {
        ssize_t w = write(fd, buf + done, len - done);
        if (w <= 0) break;
        done += (size_t)w;
    }
    int bad = done != len || fsync(fd) != 0;
    bad |= close(fd) != 0;
    if (bad || rename(tmp, path)) {
        unlink(tmp);
        return af_errorf(AF_ERR_IO, "%s: write failed (disk full?)", path);
    }
    char dir[4096];
    snprintf(dir, sizeof dir, "%s", path);
    int dfd = open(dirname(dir), O_RDONLY | O_DIRECTORY);
    if (dfd >= 0) {
        fsync(dfd);
        close(dfd);
    }
    return AF_OK;
}

af_status af_backbone_export_onnx(const af_backbone *m, const char *path)
{
    builder b = {.m = m};
    Onnx__ModelProto model = ONNX__MODEL_PROTO__INIT;
    Onnx__GraphProto graph = ONNX__GRAPH_PROTO__INIT;
    Onnx__OperatorSetIdProto opset = ONNX__OPERATOR_SET_ID_PROTO__INIT, *opsets[1] = {&opset};
    uint8_t *buf = NULL;
    b.g = &graph;
    graph.name = "arcface-cpu";
    af_status st = build_graph(&b, "embedding");
    if (!st) {
        const int64_t in_dims[4] = {0, m->cfg.in_c, m->cfg.in_h, m->cfg.in_w}, out_dims[2] = {0, m->cfg.embedding};
        Onnx__ValueInfoProto **in = alloc(&b.a, sizeof *in), **out = alloc(&b.a, sizeof *out);
        if (in && out && (in[0] = value_info(&b, "data", 4, in_dims)) &&
            (out[0] = value_info(&b, "embedding", 2, out_dims))) {
            graph.input = in;
            graph.n_input = 1;
            graph.output = out;
            graph.n_output = 1;
        } else {
            st = af_errorf(AF_ERR_NOMEM, "onnx: out of memory");
        }
    }
    if (!st) {
        /* IR 6 and opset 11: what torch2onnx.py writes, and what older runtimes accept */
        opset.has_version = 1;
        opset.version = 11;
        opset.domain = "";
        model.has_ir_version = 1;
        model.ir_version = 6;
        model.n_opset_import = 1;
        model.opset_import = opsets;
        model.producer_name = "arcface-cpu";
        model.producer_version = "1";
        model.graph = &graph;
        size_t len = onnx__model_proto__get_packed_size(&model);
        if (len >= (size_t)1 << 31) st = af_errorf(AF_ERR_ARG, "%s: the model needs %zu bytes, over protobuf's 2 GiB",
                                                   path, len);
        else if (!(buf = af_malloc(len, "the packed ONNX model"))) st = AF_ERR_NOMEM;
        else {
            onnx__model_proto__pack(&model, buf);
            st = write_all(path, buf, len);
        }
    }
    free(buf);
    for (size_t i = 0; i < b.a.n; i++) free(b.a.p[i]);
    free(b.a.p);
    return st;
}
