"""Hara's 3D ResNets: parameter counts, every depth runs forward and backward, the registry."""

from __future__ import annotations

import paddle
import pytest

from train.models import (
    DEPTHS,
    MODELS,
    count_parameters,
    create_model,
    default_shortcut,
    model_name,
)

SMALL = (8, 16, 32, 64)


@pytest.mark.parametrize(
    ("shortcut", "params"), [("A", 33_081_893), ("A-hara", 33_081_893), ("B", 33_255_717)]
)
def test_r3d18_parameter_count_matches_paper(shortcut: str, params: int) -> None:
    model = create_model(18, 101, shortcut=shortcut)
    assert count_parameters(model) == params  # the paper's 33.1 M (A) and 33.3 M (B)


@pytest.mark.parametrize(("shortcut", "through"), [("A", True), ("A-hara", False)])
def test_gradient_through_downsampling_shortcuts(shortcut: str, through: bool) -> None:
    """He's A passes the gradient through the zero-padded identity; Hara's (out.data) does not."""
    model = create_model(18, 5, shortcut=shortcut, widths=SMALL)
    blocks = [model.layer2[0], model.layer3[0], model.layer4[0]]  # the three that downsample
    for block, cin in zip(blocks, SMALL[:3], strict=True):
        x = paddle.randn([2, cin, 4, 8, 8])  # (N, C, T, H, W)
        x.stop_gradient = False
        y = block.shortcut(x)
        assert y.shape == [2, 2 * cin, 2, 4, 4]
        (y.sum() + 0.0 * x.sum()).backward()  # the second term gives x a gradient either way
        assert (float(paddle.abs(x.grad).sum()) > 0) == through
    # the residual branches still reach every parameter, also with the detached shortcuts
    model(paddle.randn([1, 3, 16, 32, 32])).sum().backward()
    assert all(p.grad is not None for p in model.parameters() if not p.stop_gradient)


def test_default_shortcuts() -> None:
    assert [default_shortcut(d) for d in DEPTHS] == ["A-hara"] * 3 + ["B"] * 4
    assert default_shortcut("tiny") == "A"
    # shortcut A adds no parameters: R3D-18 A minus its fc equals the conv/BN trunk
    a, b = create_model(18, 10, "A", SMALL), create_model(18, 10, "B", SMALL)
    assert count_parameters(b) > count_parameters(a)


@pytest.mark.parametrize("depth", sorted(DEPTHS))
def test_every_depth_forward_backward(depth: int) -> None:
    paddle.seed(0)
    model = create_model(depth, 5, widths=SMALL)
    x = paddle.randn([2, 3, 16, 32, 32])  # (N, C, T, H, W)
    logits = model(x)
    assert logits.shape == [2, 5]
    loss = paddle.nn.functional.cross_entropy(logits, paddle.to_tensor([0, 3]))
    loss.backward()
    grads = [p.grad for p in model.parameters() if not p.stop_gradient]
    assert all(g is not None for g in grads)
    assert float(paddle.abs(model.conv1.weight.grad).sum()) > 0


@pytest.mark.parametrize(("shortcut", "size"), [("A", 56), ("B", 64), ("A", 33)])
def test_tiny_runs_on_small_and_odd_clips(shortcut: str, size: int) -> None:
    model = create_model("tiny", 3, shortcut=shortcut)
    model.eval()
    assert model(paddle.randn([1, 3, 16, size, size])).shape == [1, 3]
    assert count_parameters(create_model("tiny", 101)) < 1_000_000


def test_width_is_configurable() -> None:
    model = create_model("r3d10", 4, widths=(4, 8, 16, 32))
    assert model.fc.weight.shape == [32, 4]
    assert create_model(50, 4, widths=SMALL).fc.weight.shape == [256, 4]  # Bottleneck: x4


def test_names_and_aliases() -> None:
    for alias in (18, "18", "r3d18", "R3D-18", "resnet18", "resnet3d_18"):
        assert model_name(alias) == "r3d18"
    assert model_name("tiny") == "tiny"
    assert set(MODELS) == {f"r3d{d}" for d in DEPTHS} | {"tiny"}


@pytest.mark.parametrize("bad", ["r3d19", 19, "vgg16", ""])
def test_unknown_model_lists_choices(bad: object) -> None:
    with pytest.raises(ValueError, match=r"valid choices: r3d10, r3d18, .*tiny"):
        create_model(bad, 10)


def test_bad_shortcut_and_classes() -> None:
    with pytest.raises(ValueError, match="valid choices: A, A-hara, B"):
        create_model(18, 10, shortcut="C")
    with pytest.raises(ValueError, match="num_classes"):
        create_model(18, 0)
