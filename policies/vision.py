"""Camera encoders: a small conv net trained from scratch (default) and a ResNet-18 whose weights
can be loaded from a local safetensors file (for GPU hosts that have ImageNet weights). Both map
uint8 images to a feature map; the VLA turns that into tokens. Also DrQ random-shift augmentation.

Shapes: images uint8 [B, H, W, 3] -> features float [B, C, H/s, W/s] (s = 16 conv, 32 resnet18).
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

# ImageNet statistics; the scratch conv net also uses them so both backbones see the same input.
_MEAN = (0.485, 0.456, 0.406)
_STD = (0.229, 0.224, 0.225)


def images_to_float(images: torch.Tensor) -> torch.Tensor:
    """uint8 [B, H, W, 3] (or float in [0, 255]) -> normalised float32 [B, 3, H, W]."""
    x = images.permute(0, 3, 1, 2).float().div_(255.0)
    mean = torch.tensor(_MEAN, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(_STD, device=x.device).view(1, 3, 1, 1)
    return (x - mean) / std


def random_shift(images: torch.Tensor, pad: int) -> torch.Tensor:
    """DrQ augmentation: replicate-pad by ``pad`` px and crop back at a random offset per sample.

    images: float [B, C, H, W] -> same shape. Implemented with one grid_sample call (integer shifts).
    """
    if pad <= 0:
        return images
    b, _, h, w = images.shape
    padded = F.pad(images, (pad, pad, pad, pad), mode="replicate")
    eps_h, eps_w = 1.0 / (h + 2 * pad), 1.0 / (w + 2 * pad)
    ar_h = torch.linspace(-1.0 + eps_h, 1.0 - eps_h, h + 2 * pad, device=images.device)[:h]
    ar_w = torch.linspace(-1.0 + eps_w, 1.0 - eps_w, w + 2 * pad, device=images.device)[:w]
    base = torch.stack(torch.meshgrid(ar_w, ar_h, indexing="xy"), dim=-1)  # [h, w, 2] as (x, y)
    shift = torch.randint(0, 2 * pad + 1, (b, 1, 1, 2), device=images.device).float()
    shift = shift * torch.tensor([2.0 / (w + 2 * pad), 2.0 / (h + 2 * pad)], device=images.device)
    return F.grid_sample(padded, base.unsqueeze(0) + shift, padding_mode="zeros", align_corners=False)


class ConvEncoder(nn.Module):
    """Strided conv net: per stage conv(stride 2) -> GroupNorm -> GELU (+ optional 3x3 refinement)."""

    def __init__(self, channels: tuple[int, ...] = (32, 64, 96, 128), extra_convs: int = 0) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        c_in = 3
        for i, c in enumerate(channels):
            k = 5 if i == 0 else 3
            layers += [nn.Conv2d(c_in, c, k, stride=2, padding=k // 2), nn.GroupNorm(min(8, c), c), nn.GELU()]
            for _ in range(extra_convs):
                layers += [nn.Conv2d(c, c, 3, padding=1), nn.GroupNorm(min(8, c), c), nn.GELU()]
            c_in = c
        self.net = nn.Sequential(*layers)
        self.out_channels = c_in
        self.stride = 2 ** len(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class FrozenBatchNorm2d(nn.Module):
    """BatchNorm with fixed statistics and affine (names match torch's BatchNorm2d state dict)."""

    def __init__(self, n: int) -> None:
        super().__init__()
        self.register_buffer("weight", torch.ones(n))
        self.register_buffer("bias", torch.zeros(n))
        self.register_buffer("running_mean", torch.zeros(n))
        self.register_buffer("running_var", torch.ones(n))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale = self.weight * (self.running_var + 1e-5).rsqrt()
        shift = self.bias - self.running_mean * scale
        return x * scale.view(1, -1, 1, 1) + shift.view(1, -1, 1, 1)


class _BasicBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = FrozenBatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = FrozenBatchNorm2d(c_out)
        self.downsample = None
        if stride != 1 or c_in != c_out:
            self.downsample = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False), FrozenBatchNorm2d(c_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(out)) + identity)


class ResNet18Encoder(nn.Module):
    """ResNet-18 trunk (no pooling/fc). Parameter names follow the common ResNet-18 layout
    (conv1, bn1, layer1.0.conv1, ...) so ImageNet weights converted to safetensors load directly."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = FrozenBatchNorm2d(64)
        chans = (64, 128, 256, 512)
        c_in = 64
        for i, c in enumerate(chans):
            stride = 1 if i == 0 else 2
            setattr(self, f"layer{i + 1}", nn.Sequential(_BasicBlock(c_in, c, stride), _BasicBlock(c, c, 1)))
            c_in = c
        self.out_channels = 512
        self.stride = 32

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.max_pool2d(F.relu(self.bn1(self.conv1(x))), 3, 2, 1)
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))


BACKBONES = {"conv": ConvEncoder, "resnet18": ResNet18Encoder}


def make_backbone(name: str, channels: tuple[int, ...], extra_convs: int) -> nn.Module:
    if name not in BACKBONES:
        raise ValueError(f"unknown vision backbone {name!r}; choose one of: {', '.join(BACKBONES)}")
    return ConvEncoder(channels, extra_convs) if name == "conv" else ResNet18Encoder()


def load_backbone_weights(backbone: nn.Module, path: str | Path) -> list[str]:
    """Load backbone weights from a local ``.safetensors`` file (never a hub download, never pickle).

    Keys outside the backbone (e.g. a classifier ``fc.*``) are ignored and returned; every backbone
    tensor must be present with the right shape and finite values.
    """
    from safetensors.torch import load_file

    path = Path(path)
    if path.suffix != ".safetensors" or not path.is_file():
        raise FileNotFoundError(
            f"pretrained backbone {path} not found or not a .safetensors file; convert the weights to "
            "safetensors (names like conv1.weight, layer1.0.conv1.weight) and pass that local path"
        )
    tensors = load_file(str(path))
    own = backbone.state_dict()
    missing = sorted(set(own) - set(tensors))
    if missing:
        raise ValueError(f"{path}: missing backbone tensors {missing[:5]}{' ...' if len(missing) > 5 else ''}")
    for name, ref in own.items():
        t = tensors[name]
        if tuple(t.shape) != tuple(ref.shape):
            raise ValueError(f"{path}: {name} has shape {tuple(t.shape)}, the backbone needs {tuple(ref.shape)}")
        if not torch.isfinite(t).all():
            raise ValueError(f"{path}: {name} contains NaN/Inf")
    backbone.load_state_dict({k: tensors[k] for k in own}, strict=True)
    return sorted(set(tensors) - set(own))


def sincos_2d(h: int, w: int, dim: int, device: torch.device | None = None) -> torch.Tensor:
    """Fixed 2-D sine/cosine position embedding: [h*w, dim] (dim divisible by 4)."""
    quarter = dim // 4
    omega = 1.0 / (10000 ** (torch.arange(quarter, device=device).float() / max(quarter, 1)))
    ys, xs = torch.meshgrid(torch.arange(h, device=device).float(), torch.arange(w, device=device).float(), indexing="ij")
    out_y = ys.reshape(-1, 1) * omega.view(1, -1)
    out_x = xs.reshape(-1, 1) * omega.view(1, -1)
    return torch.cat([out_y.sin(), out_y.cos(), out_x.sin(), out_x.cos()], dim=1)
