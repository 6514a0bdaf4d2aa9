"""Small fixtures for the tool tests, written with h5py and pickle rather
than by our own code: a training checkpoint in the layout ckpt/ckpt.c
documents (root attributes, /config as a serialized TrainConfig, /backbone,
/fc/weight, /fc/momentum), and an insightface verification .bin
(pickle.dumps((bins, issame_list)) with PNG-encoded images)."""
import pickle

import h5py
import numpy as np


def write_checkpoint(path, network, state_dict, embedding, n_classes=10, step=7):
    net = network.encode()
    # TrainConfig { network = 1 (string), embedding_size = 2 (int32) }, protobuf wire format
    config = bytes([0x0A, len(net)]) + net + bytes([0x10]) + _varint(embedding)
    with h5py.File(path, "w") as f:
        for k, v in state_dict.items():
            f["backbone/" + k] = v.detach().numpy()
        rng = np.random.default_rng(0)
        f["fc/weight"] = rng.standard_normal((n_classes, embedding)).astype(np.float32)
        f["fc/momentum"] = np.zeros((n_classes, embedding), np.float32)
        f["config"] = np.frombuffer(config, np.uint8)
        for k, v in dict(format_version=1, step=step, epoch=1, sample_position=0, num_classes=n_classes,
                         embedding_size=embedding, num_workers=1, num_servers=1, seed=1, backbone_opt_steps=step,
                         fc_adam_t=0).items():
            f.attrs[k] = np.int64(v)
        f.attrs["network"] = network


def _varint(v):
    out = bytearray()
    while True:
        b = v & 0x7F
        v >>= 7
        out.append(b | (0x80 if v else 0))
        if not v:
            return bytes(out)


def write_verbin(path, pairs=20, seed=0, hw=112):
    import cv2
    rng = np.random.default_rng(seed)
    bins = []
    for _ in range(2 * pairs):
        img = rng.integers(0, 256, (hw, hw, 3), dtype=np.uint8)
        ok, enc = cv2.imencode(".png", img)
        assert ok
        bins.append(enc.tobytes())
    issame = [bool(i % 2) for i in range(pairs)]
    with open(path, "wb") as f:
        pickle.dump((bins, issame), f, protocol=2)
