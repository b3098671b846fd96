"""Hara et al.'s 3D ResNets (CVPR 2018) in Paddle: ResNet3D, a factory per depth, a registry."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import paddle
import paddle.nn as nn

WIDTHS = (64, 128, 256, 512)  # stage widths of the paper (times block expansion at the output)
TINY_WIDTHS = (8, 16, 32, 64)
# A: zero-padded identity (He et al.'s option A); A-hara: the same, without gradient through it, as
# in Hara's CVPR 2018 code; B: 1x1x1 convolution + BatchNorm.
SHORTCUTS = ("A", "A-hara", "B")


def conv3x3x3(cin: int, cout: int, stride: int = 1) -> nn.Conv3D:
    return nn.Conv3D(cin, cout, kernel_size=3, stride=stride, padding=1, bias_attr=False)


def conv1x1x1(cin: int, cout: int, stride: int = 1) -> nn.Conv3D:
    return nn.Conv3D(cin, cout, kernel_size=1, stride=stride, bias_attr=False)


class ShortcutA(nn.Layer):
    """Parameter-free shortcut: strided identity plus zero channels.

    detach=False (shortcut "A"): He et al.'s option A; the gradient flows through the identity
    part. detach=True ("A-hara"): Hara's downsample_basic_block, which builds the padded tensor
    from `out.data`, so no gradient flows back through the shortcut. The forward pass is the same.
    """

    def __init__(self, cout: int, stride: int, detach: bool = False) -> None:
        super().__init__()
        self.cout, self.stride, self.detach = cout, stride, detach

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        # (N, C, T, H, W) -> (N, cout, T/s, H/s, W/s)
        s = self.stride
        if s != 1:
            x = x[:, :, ::s, ::s, ::s]
        if self.detach:
            x = x.detach()
        pad = self.cout - x.shape[1]
        if pad <= 0:
            return x
        zeros = paddle.zeros_like(x[:, :1]).tile([1, pad, 1, 1, 1])  # works with a dynamic batch
        return paddle.concat([x, zeros], axis=1)


def make_shortcut(kind: str, cin: int, cout: int, stride: int) -> nn.Layer | None:
    if stride == 1 and cin == cout:
        return None
    if kind in ("A", "A-hara"):
        return ShortcutA(cout, stride, detach=kind == "A-hara")
    return nn.Sequential(conv1x1x1(cin, cout, stride), nn.BatchNorm3D(cout))


class BasicBlock(nn.Layer):
    expansion = 1

    def __init__(self, cin: int, planes: int, stride: int, shortcut: nn.Layer | None) -> None:
        super().__init__()
        self.conv1 = conv3x3x3(cin, planes, stride)
        self.bn1 = nn.BatchNorm3D(planes)
        self.conv2 = conv3x3x3(planes, planes)
        self.bn2 = nn.BatchNorm3D(planes)
        self.relu = nn.ReLU()
        self.shortcut = shortcut

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        identity = x if self.shortcut is None else self.shortcut(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class Bottleneck(nn.Layer):
    expansion = 4

    def __init__(self, cin: int, planes: int, stride: int, shortcut: nn.Layer | None) -> None:
        super().__init__()
        self.conv1 = conv1x1x1(cin, planes)
        self.bn1 = nn.BatchNorm3D(planes)
        self.conv2 = conv3x3x3(planes, planes, stride)
        self.bn2 = nn.BatchNorm3D(planes)
        self.conv3 = conv1x1x1(planes, planes * self.expansion)
        self.bn3 = nn.BatchNorm3D(planes * self.expansion)
        self.relu = nn.ReLU()
        self.shortcut = shortcut

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        identity = x if self.shortcut is None else self.shortcut(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


class ResNet3D(nn.Layer):
    """3D ResNet: conv1 7x7x7 stride (1,2,2), max-pool 3 stride 2, 4 stages, global pool, linear."""

    def __init__(
        self,
        block: type[BasicBlock] | type[Bottleneck],
        layers: Sequence[int],
        num_classes: int = 400,
        shortcut: str = "B",
        widths: Sequence[int] = WIDTHS,
    ) -> None:
        super().__init__()
        if shortcut not in SHORTCUTS:
            raise ValueError(f"shortcut must be one of {', '.join(SHORTCUTS)}, got {shortcut!r}")
        if len(layers) != 4 or len(widths) != 4:
            raise ValueError("layers and widths need one entry per stage (4)")
        self.cin = widths[0]
        self.conv1 = nn.Conv3D(
            3, widths[0], kernel_size=7, stride=(1, 2, 2), padding=3, bias_attr=False
        )
        self.bn1 = nn.BatchNorm3D(widths[0])
        self.relu = nn.ReLU()
        self.maxpool = nn.MaxPool3D(kernel_size=3, stride=2, padding=1)
        stages = []
        for i, (n, w) in enumerate(zip(layers, widths, strict=True)):
            stages.append(self._make_stage(block, w, n, shortcut, stride=1 if i == 0 else 2))
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        # Hara uses AvgPool3d(ceil(T/16), ceil(S/32)); adaptive pooling equals it at 16x112x112
        # and lets the same network run on the small clips of the CPU demo.
        self.avgpool = nn.AdaptiveAvgPool3D(1)
        self.fc = nn.Linear(widths[3] * block.expansion, num_classes)
        self._init_weights()

    def _make_stage(self, block, planes: int, n: int, shortcut: str, stride: int) -> nn.Sequential:
        cout = planes * block.expansion
        blocks = [block(self.cin, planes, stride, make_shortcut(shortcut, self.cin, cout, stride))]
        self.cin = cout
        blocks += [block(cout, planes, 1, None) for _ in range(1, n)]
        return nn.Sequential(*blocks)

    def _init_weights(self) -> None:
        """Hara's init: kaiming normal (fan_out) convs, BN 1/0, PyTorch's default for the fc."""
        kaiming = nn.initializer.KaimingNormal(mode="fan_out", nonlinearity="relu")
        for m in self.sublayers():
            if isinstance(m, nn.Conv3D):
                kaiming(m.weight)
            elif isinstance(m, nn.BatchNorm3D):
                nn.initializer.Constant(1.0)(m.weight)
                nn.initializer.Constant(0.0)(m.bias)
        bound = 1.0 / self.fc.weight.shape[0] ** 0.5  # U(-1/sqrt(fan_in), +) for weight and bias
        nn.initializer.Uniform(-bound, bound)(self.fc.weight)
        nn.initializer.Uniform(-bound, bound)(self.fc.bias)

    def features(self, x: paddle.Tensor) -> paddle.Tensor:
        x = self.relu(self.bn1(self.conv1(x)))  # (N, w0, T, H/2, W/2)
        x = self.maxpool(x)  # (N, w0, T/2, H/4, W/4)
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))  # (N, C, T/16, H/32, W/32)
        return self.avgpool(x).flatten(1)  # (N, C)

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:  # (N, 3, T, H, W) -> (N, classes)
        return self.fc(self.features(x))


DEPTHS: dict[int, tuple[type[BasicBlock] | type[Bottleneck], tuple[int, int, int, int]]] = {
    10: (BasicBlock, (1, 1, 1, 1)),
    18: (BasicBlock, (2, 2, 2, 2)),
    34: (BasicBlock, (3, 4, 6, 3)),
    50: (Bottleneck, (3, 4, 6, 3)),
    101: (Bottleneck, (3, 4, 23, 3)),
    152: (Bottleneck, (3, 8, 36, 3)),
    200: (Bottleneck, (3, 24, 36, 3)),
}


def default_shortcut(name_or_depth: str | int) -> str:
    """A-hara for the BasicBlock nets (R10-R34, as Hara trained them), B for Bottleneck nets (R50+).

    The training defaults reproduce Hara's CVPR 2018 code, so R10-R34 get his detached shortcut
    A. tiny is the demo's network, not a reproduction: it keeps He et al.'s A.
    """
    name = model_name(name_or_depth)
    if name == "tiny":
        return "A"
    return "A-hara" if DEPTHS[int(name.removeprefix("r3d"))][0] is BasicBlock else "B"


def _resnet3d(depth: int, num_classes: int, shortcut: str | None, widths: Sequence[int] | None):
    block, layers = DEPTHS[depth]
    return ResNet3D(
        block, layers, num_classes, shortcut or default_shortcut(depth), tuple(widths or WIDTHS)
    )


def resnet3d_10(num_classes: int = 400, shortcut: str | None = None, widths=None) -> ResNet3D:
    return _resnet3d(10, num_classes, shortcut, widths)


def resnet3d_18(num_classes: int = 400, shortcut: str | None = None, widths=None) -> ResNet3D:
    return _resnet3d(18, num_classes, shortcut, widths)


def resnet3d_34(num_classes: int = 400, shortcut: str | None = None, widths=None) -> ResNet3D:
    return _resnet3d(34, num_classes, shortcut, widths)


def resnet3d_50(num_classes: int = 400, shortcut: str | None = None, widths=None) -> ResNet3D:
    return _resnet3d(50, num_classes, shortcut, widths)


def resnet3d_101(num_classes: int = 400, shortcut: str | None = None, widths=None) -> ResNet3D:
    return _resnet3d(101, num_classes, shortcut, widths)


def resnet3d_152(num_classes: int = 400, shortcut: str | None = None, widths=None) -> ResNet3D:
    return _resnet3d(152, num_classes, shortcut, widths)


def resnet3d_200(num_classes: int = 400, shortcut: str | None = None, widths=None) -> ResNet3D:
    return _resnet3d(200, num_classes, shortcut, widths)


def resnet3d_tiny(num_classes: int = 400, shortcut: str | None = None, widths=None) -> ResNet3D:
    """R3D-10 layout at widths 8-16-32-64 (0.6 M parameters): tests and the CPU demo."""
    return ResNet3D(BasicBlock, (1, 1, 1, 1), num_classes, shortcut or "A", widths or TINY_WIDTHS)


MODELS: dict[str, Callable[..., ResNet3D]] = {
    "r3d10": resnet3d_10,
    "r3d18": resnet3d_18,
    "r3d34": resnet3d_34,
    "r3d50": resnet3d_50,
    "r3d101": resnet3d_101,
    "r3d152": resnet3d_152,
    "r3d200": resnet3d_200,
    "tiny": resnet3d_tiny,
}


def model_name(name_or_depth: str | int) -> str:
    """Registry name for "r3d18", "R3D-18", "resnet18", "18" or 18; ValueError lists choices."""
    key = str(name_or_depth).strip().lower().replace("-", "").replace("_", "")
    for prefix in ("resnet3d", "resnet", "r3d"):
        if key.startswith(prefix) and key[len(prefix) :].isdigit():
            key = key[len(prefix) :]
    if key.isdigit():
        key = f"r3d{key}"
    if key not in MODELS:
        choices = ", ".join([*MODELS, *(str(d) for d in DEPTHS)])
        raise ValueError(f"unknown model {name_or_depth!r}; valid choices: {choices}")
    return key


def create_model(
    name_or_depth: str | int,
    num_classes: int,
    shortcut: str | None = None,
    widths: Sequence[int] | None = None,
) -> ResNet3D:
    """Build a registered model; shortcut None picks the depth's default (A-hara up to 34, B from
    50, A for tiny)."""
    if shortcut is not None and shortcut not in SHORTCUTS:
        raise ValueError(f"unknown shortcut {shortcut!r}; valid choices: {', '.join(SHORTCUTS)}")
    if num_classes < 1:
        raise ValueError(f"num_classes must be positive, got {num_classes}")
    return MODELS[model_name(name_or_depth)](num_classes, shortcut, widths)


def count_parameters(model: nn.Layer) -> int:
    """Trainable parameters (Paddle lists BatchNorm running statistics as frozen parameters)."""
    return sum(int(p.size) for p in model.parameters() if not p.stop_gradient)
