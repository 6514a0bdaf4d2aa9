/* arcface-ckpt: look inside checkpoints, export and import models.
 *   arcface-ckpt info FILE          step, epoch, data position, layout, and the
 *                                   stored training configuration
 *   arcface-ckpt export [--format h5|onnx] FILE OUT
 *                                   h5 (default): a backbone-only file
 *                                   (/backbone/<key> plus network and
 *                                   embedding_size attributes) that arcface-embed
 *                                   and arcface-eval read; onnx: the backbone as
 *                                   ONNX, as insightface's torch2onnx.py writes it.
 *                                   FILE: a checkpoint or an exported model.
 *   arcface-ckpt import MODEL.pt --network NET OUT.h5
 *                                   a PyTorch state_dict (torch.save, insightface
 *                                   key names) as an exported model
 * Exit status 0; 1 with a message naming the file and what is wrong; 2 for a
 * usage error, including an output that is the input file itself (compared
 * by inode), which is never overwritten. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <hdf5.h>

#include "arcface.pb-c.h"
#include "arcface/ckpt.h"
#include "arcface/backbone.h"
#include "arcface/h5io.h"
#include "arcface/samefile.h"
#include "arcface/torch_pt.h"

static void print_config(const Arcface__TrainConfig *tc)
{
    const ProtobufCMessageDescriptor *d = tc->base.descriptor;
    for (unsigned i = 0; i < d->n_fields; i++) {
        const ProtobufCFieldDescriptor *f = &d->fields[i];
        const char *p = (const char *)tc + f->offset;
        printf("  %s = ", f->name);
        if (f->label == PROTOBUF_C_LABEL_REPEATED) {
            size_t n = *(const size_t *)((const char *)tc + f->quantifier_offset);
            const float *v = *(float *const *)p;
            printf("(");
            for (size_t k = 0; k < n; k++) printf("%s%g", k ? ", " : "", f->type == PROTOBUF_C_TYPE_FLOAT ? v[k] : 0.0f);
            printf(")\n");
            continue;
        }
        switch (f->type) {
        case PROTOBUF_C_TYPE_STRING: printf("\"%s\"\n", *(char *const *)p); break;
        case PROTOBUF_C_TYPE_FLOAT: printf("%g\n", *(const float *)p); break;
        case PROTOBUF_C_TYPE_DOUBLE: printf("%.17g\n", *(const double *)p); break;
        case PROTOBUF_C_TYPE_BOOL: printf("%d\n", *(const protobuf_c_boolean *)p); break;
        case PROTOBUF_C_TYPE_INT32: printf("%d\n", *(const int32_t *)p); break;
        case PROTOBUF_C_TYPE_INT64: printf("%lld\n", (long long)*(const int64_t *)p); break;
        case PROTOBUF_C_TYPE_UINT64: printf("%llu\n", (unsigned long long)*(const uint64_t *)p); break;
        default: printf("(type %d)\n", (int)f->type);
        }
    }
}

static af_status info(const char *path)
{
    af_ckpt_info ci;
    af_status st = af_ckpt_read_info(path, &ci);
    if (st) return st;
    printf("checkpoint: %s\n", path);
    printf("format_version: %lld\nstep: %lld\nepoch: %lld\nsample_position: %lld\n", (long long)ci.format_version,
           (long long)ci.step, (long long)ci.epoch, (long long)ci.sample_position);
    printf("network: %s\nembedding_size: %lld\nnum_classes: %lld\n", ci.network, (long long)ci.embedding_size,
           (long long)ci.num_classes);
    printf("layout: %lld workers, %lld parameter servers (global batch %lld); any layout with that global batch can "
           "resume it\n", (long long)ci.num_workers, (long long)ci.num_servers, (long long)ci.global_batch);
    hid_t f;
    if ((st = af_h5_open_read(path, &f))) return st;
    hsize_t n;
    uint8_t *blob = NULL;
    if ((st = af_h5_read(f, path, "/config", AF_H5_U8, 1, &n, (void **)&blob))) { H5Fclose(f); return st; }
    H5Fclose(f);
    Arcface__TrainConfig *tc = arcface__train_config__unpack(NULL, n, blob);
    free(blob);
    if (!tc) return af_errorf(AF_ERR_FORMAT, "%s: /config is not a TrainConfig message", path);
    printf("configuration:\n");
    print_config(tc);
    arcface__train_config__free_unpacked(tc, NULL);
    return AF_OK;
}

static af_status export(const char *path, const char *out)
{
    af_ckpt_info ci;
    af_status st = af_ckpt_read_info(path, &ci);
    if (st) return st;
    hid_t f, o;
    if ((st = af_h5_open_read(path, &f))) return st;
    char tmp[4096];
    snprintf(tmp, sizeof tmp, "%s.tmp", out);
    if ((st = af_h5_create(tmp, &o))) { H5Fclose(f); return st; }
    if (H5Ocopy(f, "/backbone", o, "/backbone", H5P_DEFAULT, H5P_DEFAULT) < 0)
        st = af_errorf(AF_ERR_IO, "%s: copying /backbone from %s failed", tmp, path);
    if (!st && ((st = af_h5_attr_set_str(o, "network", ci.network)) ||
                (st = af_h5_attr_set_i64(o, "embedding_size", ci.embedding_size)) ||
                (st = af_h5_attr_set_i64(o, "step", ci.step))))
        af_error_wrap(st, "%s", tmp);
    H5Fclose(f);
    if (H5Fclose(o) < 0 && !st) st = af_errorf(AF_ERR_IO, "%s: close failed", tmp);
    if (!st && rename(tmp, out)) st = af_errorf(AF_ERR_IO, "rename %s -> %s failed", tmp, out);
    if (st) remove(tmp);
    else printf("exported the %s backbone of %s (step %lld) to %s\n", ci.network, path, (long long)ci.step, out);
    return st;
}

/* The backbone of a checkpoint or exported model, built for one image at a time. */
static af_status load_backbone(const char *path, af_backbone *m)
{
    hid_t f;
    af_status st = af_h5_open_read(path, &f);
    if (st) return st;
    char net[32];
    int64_t D;
    if ((st = af_h5_attr_get_str(f, path, "network", net, sizeof net)) ||
        (st = af_h5_attr_get_i64(f, path, "embedding_size", &D))) {
        H5Fclose(f);
        return af_error_wrap(st, "%s: not a checkpoint or exported model", path);
    }
    af_backbone_config bc = {.arch = net, .embedding = (int)D, .max_batch = 1, .nthreads = 1};
    if (!(st = af_backbone_init(m, &bc))) st = af_backbone_load(m, f, path, "/backbone");
    H5Fclose(f);
    return st;
}

static af_status export_onnx(const char *path, const char *out)
{
    af_backbone m = {0};
    af_status st = load_backbone(path, &m);
    if (!st) st = af_backbone_export_onnx(&m, out);
    if (!st)
        printf("exported the %s backbone of %s as ONNX (input 'data' Nx%dx%dx%d, output 'embedding' Nx%d) to %s\n",
               m.arch, path, m.cfg.in_c, m.cfg.in_h, m.cfg.in_w, m.cfg.embedding, out);
    if (m.net) af_backbone_free(&m);
    return st;
}

static af_status import_pt(const char *path, const char *network, const char *out)
{
    af_backbone m = {0};
    int D = 0;
    af_status st = af_pt_embedding_size(path, &D);
    if (st) return st;
    af_backbone_config bc = {.arch = network, .embedding = D, .max_batch = 1, .nthreads = 1};
    if ((st = af_backbone_init(&m, &bc))) return st;
    if ((st = af_backbone_load_pt(&m, path))) goto done;
    char tmp[4096];
    snprintf(tmp, sizeof tmp, "%s.tmp", out);
    hid_t o;
    if ((st = af_h5_create(tmp, &o))) goto done;
    if (!(st = af_backbone_save(&m, o, tmp, NULL)) && !(st = af_h5_attr_set_str(o, "network", m.arch)) &&
        !(st = af_h5_attr_set_i64(o, "embedding_size", D)))
        st = af_h5_attr_set_i64(o, "step", 0);
    if (H5Fclose(o) < 0 && !st) st = af_errorf(AF_ERR_IO, "%s: close failed", tmp);
    if (!st && rename(tmp, out)) st = af_errorf(AF_ERR_IO, "rename %s -> %s failed", tmp, out);
    if (st) remove(tmp);
    else printf("imported the %s backbone (embedding %d) of %s to %s\n", m.arch, D, path, out);
done:
    af_backbone_free(&m);
    return st;
}

static int usage(void)
{
    fprintf(stderr, "usage: arcface-ckpt info FILE\n"
                    "       arcface-ckpt export [--format h5|onnx] FILE OUT\n"
                    "       arcface-ckpt import MODEL.pt --network NET OUT.h5\n");
    return 2;
}

static int refuse_same(const char *in, const char *out)
{
    if (!af_same_file(in, out)) return 0;
    fprintf(stderr, "arcface-ckpt: error: output %s is the same file as the input %s; refusing to overwrite it\n",
            out, in);
    return 1;
}

int main(int argc, char **argv)
{
    af_status st;
    af_h5_quiet();
    if (argc == 3 && !strcmp(argv[1], "info")) {
        st = info(argv[2]);
    } else if (argc >= 4 && !strcmp(argv[1], "export")) {
        const char *format = "h5";
        int i = 2;
        if (!strcmp(argv[i], "--format") && argc == 6) {
            format = argv[i + 1];
            i += 2;
        } else if (argc != 4) {
            return usage();
        }
        if (strcmp(format, "h5") && strcmp(format, "onnx")) return usage();
        if (refuse_same(argv[i], argv[i + 1])) return 2;
        st = !strcmp(format, "onnx") ? export_onnx(argv[i], argv[i + 1]) : export(argv[i], argv[i + 1]);
    } else if (argc == 6 && !strcmp(argv[1], "import") && !strcmp(argv[3], "--network")) {
        if (refuse_same(argv[2], argv[5])) return 2;
        st = import_pt(argv[2], argv[4], argv[5]);
    } else {
        return usage();
    }
    if (st) fprintf(stderr, "arcface-ckpt: error: %s\n", af_errmsg());
    return st ? 1 : 0;
}
