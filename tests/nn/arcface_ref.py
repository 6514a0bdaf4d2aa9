"""PyTorch reference modules for the backbone tests.

A restatement, in our own words, of the networks in insightface's
recognition/arcface_torch/backbones (iresnet.py, mobilefacenet.py): the same
module tree, hence the same state_dict keys and shapes, so that a state_dict
written by the C code loads with strict=True. Plus the small 28x28 network
of this project (nn/arch.c, build_fmnist).
"""
import torch
from torch import nn


# ---- iResNet -----------------------------------------------------------------

def _c3(cin, cout, stride=1):
    return nn.Conv2d(cin, cout, kernel_size=3, stride=stride, padding=1, bias=False)


class IBasicBlock(nn.Module):
    """BN - conv3x3 - BN - PReLU - conv3x3(stride) - BN, plus the shortcut; no activation after the sum."""

    def __init__(self, cin, planes, stride=1, downsample=None):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(cin, eps=1e-5)
        self.conv1 = _c3(cin, planes)
        self.bn2 = nn.BatchNorm2d(planes, eps=1e-5)
        self.prelu = nn.PReLU(planes)
        self.conv2 = _c3(planes, planes, stride)
        self.bn3 = nn.BatchNorm2d(planes, eps=1e-5)
        self.downsample = downsample

    def forward(self, x):
        y = self.bn3(self.conv2(self.prelu(self.bn2(self.conv1(self.bn1(x))))))
        return y + (self.downsample(x) if self.downsample is not None else x)


class IResNet(nn.Module):
    def __init__(self, layers, dropout=0.0, num_features=512, in_c=3, fc_hw=7):
        super().__init__()
        self.conv1 = nn.Conv2d(in_c, 64, kernel_size=3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(64, eps=1e-5)
        self.prelu = nn.PReLU(64)
        cin = 64
        for i, n in enumerate(layers):
            planes = 64 << i
            ds = nn.Sequential(nn.Conv2d(cin, planes, kernel_size=1, stride=2, bias=False),
                               nn.BatchNorm2d(planes, eps=1e-5))
            blocks = [IBasicBlock(cin, planes, 2, ds)] + [IBasicBlock(planes, planes) for _ in range(n - 1)]
            setattr(self, "layer%d" % (i + 1), nn.Sequential(*blocks))
            cin = planes
        self.bn2 = nn.BatchNorm2d(512, eps=1e-5)
        self.dropout = nn.Dropout(p=dropout, inplace=True)
        self.fc = nn.Linear(512 * fc_hw * fc_hw, num_features)
        self.features = nn.BatchNorm1d(num_features, eps=1e-5)
        nn.init.constant_(self.features.weight, 1.0)
        self.features.weight.requires_grad = False

    def forward(self, x):
        x = self.prelu(self.bn1(self.conv1(x)))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        x = torch.flatten(self.bn2(x), 1)
        return self.features(self.fc(self.dropout(x)))


IRESNET_LAYERS = {"r18": [2, 2, 2, 2], "r34": [3, 4, 6, 3], "r50": [3, 4, 14, 3], "r100": [3, 13, 30, 3],
                  "r200": [6, 26, 60, 6]}


# ---- MobileFaceNet -------------------------------------------------------------

class Flatten(nn.Module):
    def forward(self, x):
        return x.view(x.size(0), -1)


class ConvBlock(nn.Module):
    def __init__(self, cin, cout, kernel=(1, 1), stride=(1, 1), padding=(0, 0), groups=1):
        super().__init__()
        self.layers = nn.Sequential(
            nn.Conv2d(cin, cout, kernel, groups=groups, stride=stride, padding=padding, bias=False),
            nn.BatchNorm2d(cout), nn.PReLU(cout))

    def forward(self, x):
        return self.layers(x)


class LinearBlock(nn.Module):
    def __init__(self, cin, cout, kernel=(1, 1), stride=(1, 1), padding=(0, 0), groups=1):
        super().__init__()
        self.layers = nn.Sequential(
            nn.Conv2d(cin, cout, kernel, stride, padding, groups=groups, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        return self.layers(x)


class DepthWise(nn.Module):
    def __init__(self, cin, cout, residual=False, kernel=(3, 3), stride=(2, 2), padding=(1, 1), groups=1):
        super().__init__()
        self.residual = residual
        self.layers = nn.Sequential(
            ConvBlock(cin, groups),
            ConvBlock(groups, groups, kernel, stride, padding, groups=groups),
            LinearBlock(groups, cout))

    def forward(self, x):
        y = self.layers(x)
        return x + y if self.residual else y


class Residual(nn.Module):
    def __init__(self, c, num_block, groups, kernel=(3, 3), stride=(1, 1), padding=(1, 1)):
        super().__init__()
        self.layers = nn.Sequential(*[DepthWise(c, c, True, kernel, stride, padding, groups)
                                      for _ in range(num_block)])

    def forward(self, x):
        return self.layers(x)


class GDC(nn.Module):
    def __init__(self, embedding_size, plane=7):
        super().__init__()
        self.layers = nn.Sequential(
            LinearBlock(512, 512, groups=512, kernel=(plane, plane)), Flatten(),
            nn.Linear(512, embedding_size, bias=False), nn.BatchNorm1d(embedding_size))

    def forward(self, x):
        return self.layers(x)


class MobileFaceNet(nn.Module):
    def __init__(self, num_features=512, blocks=(1, 4, 6, 2), scale=2, in_c=3, plane=7):
        super().__init__()
        s = scale
        self.layers = nn.ModuleList()
        self.layers.append(ConvBlock(in_c, 64 * s, (3, 3), (2, 2), (1, 1)))
        if blocks[0] == 1:
            self.layers.append(ConvBlock(64 * s, 64 * s, (3, 3), (1, 1), (1, 1), groups=64))
        else:
            self.layers.append(Residual(64 * s, blocks[0], 128))
        self.layers.extend([
            DepthWise(64 * s, 64 * s, False, (3, 3), (2, 2), (1, 1), groups=128),
            Residual(64 * s, blocks[1], 128),
            DepthWise(64 * s, 128 * s, False, (3, 3), (2, 2), (1, 1), groups=256),
            Residual(128 * s, blocks[2], 256),
            DepthWise(128 * s, 128 * s, False, (3, 3), (2, 2), (1, 1), groups=512),
            Residual(128 * s, blocks[3], 256),
        ])
        self.conv_sep = ConvBlock(128 * s, 512)
        self.features = GDC(num_features, plane)

    def forward(self, x):
        for layer in self.layers:
            x = layer(x)
        return self.features(self.conv_sep(x))


# ---- the small 28x28 network ------------------------------------------------------

class FmnistNet(nn.Module):
    def __init__(self, num_features=512, in_c=1, dropout=0.0, fc_hw=7):
        super().__init__()
        cin = in_c
        for i, (w, s) in enumerate(zip((32, 64, 64, 128), (1, 2, 1, 2))):
            setattr(self, "conv%d" % (i + 1), nn.Conv2d(cin, w, 3, s, 1, bias=False))
            setattr(self, "bn%d" % (i + 1), nn.BatchNorm2d(w))
            setattr(self, "prelu%d" % (i + 1), nn.PReLU(w))
            cin = w
        self.bn5 = nn.BatchNorm2d(128)
        self.dropout = nn.Dropout(p=dropout)
        self.fc = nn.Linear(128 * fc_hw * fc_hw, num_features)
        self.features = nn.BatchNorm1d(num_features)
        nn.init.constant_(self.features.weight, 1.0)
        self.features.weight.requires_grad = False

    def forward(self, x):
        for i in range(1, 5):
            x = getattr(self, "prelu%d" % i)(getattr(self, "bn%d" % i)(getattr(self, "conv%d" % i)(x)))
        x = torch.flatten(self.bn5(x), 1)
        return self.features(self.fc(self.dropout(x)))


def build(arch, num_features=512, in_c=None, in_hw=None):
    """The reference module for one of our architecture names."""
    if arch in IRESNET_LAYERS:
        hw = in_hw or 112
        return IResNet(IRESNET_LAYERS[arch], num_features=num_features, in_c=in_c or 3, fc_hw=hw // 16)
    if arch in ("mbf", "mbf_large"):
        # get_mbf / get_mbf_large of insightface
        blocks, scale = ((1, 4, 6, 2), 2) if arch == "mbf" else ((2, 8, 12, 4), 4)
        hw = in_hw or 112
        return MobileFaceNet(num_features=num_features, blocks=blocks, scale=scale, in_c=in_c or 3,
                             plane=hw // 16)
    if arch == "fmnist":
        hw = in_hw or 28
        return FmnistNet(num_features=num_features, in_c=in_c or 1, fc_hw=hw // 4)
    raise ValueError("unknown arch " + arch)


def load_state(module, group):
    """Loads an h5py group of state_dict datasets into module, strictly."""
    import numpy as np
    sd = {k: torch.from_numpy(np.array(v)) for k, v in group.items()}
    module.load_state_dict(sd, strict=True)
    return module
