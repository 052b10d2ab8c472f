"""Full-size GoogLeNet and BN-Inception: parameter counts recomputed by hand from the papers'
tables and held against published counts, forward and backward, torchvision weight
compatibility, the auxiliary-head loss.

Sources: GoogLeNet's rows are Szegedy et al. 2014, "Going deeper with convolutions", Table 1;
BN-Inception's are Ioffe & Szegedy 2015, "Batch normalization", appendix table (Figure 5);
torchvision's variant is ``torchvision.models.googlenet`` (its differences from the paper are
listed in `search_space.models.googlenet.googlenet`)."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from search_space.models import GoogLeNetOutputs, bn_inception, googlenet, googlenet_loss

# GoogLeNet, Szegedy et al. 2014, Table 1:
# module: (in, #1x1, #3x3 reduce, #3x3, #5x5 reduce, #5x5, pool proj, out, output map at 224)
GOOGLENET_ROWS = {
    "3a": (192, 64, 96, 128, 16, 32, 32, 256, 28),
    "3b": (256, 128, 128, 192, 32, 96, 64, 480, 28),
    "4a": (480, 192, 96, 208, 16, 48, 64, 512, 14),
    "4b": (512, 160, 112, 224, 24, 64, 64, 512, 14),
    "4c": (512, 128, 128, 256, 24, 64, 64, 512, 14),
    "4d": (512, 112, 144, 288, 32, 64, 64, 528, 14),
    "4e": (528, 256, 160, 320, 32, 128, 128, 832, 14),
    "5a": (832, 256, 160, 320, 32, 128, 128, 832, 7),
    "5b": (832, 384, 192, 384, 48, 128, 128, 1024, 7),
}

# BN-Inception, Ioffe & Szegedy 2015, appendix table (outputs are the branch sums):
# module: (in, #1x1, #3x3 reduce, #3x3, #d3x3 reduce, #d3x3, pool proj, stride, out, map at 224)
BN_INCEPTION_ROWS = {
    "3a": (192, 64, 64, 64, 64, 96, 32, 1, 256, 28),
    "3b": (256, 64, 64, 96, 64, 96, 64, 1, 320, 28),
    "3c": (320, 0, 128, 160, 64, 96, 0, 2, 576, 14),
    "4a": (576, 224, 64, 96, 96, 128, 128, 1, 576, 14),
    "4b": (576, 192, 96, 128, 96, 128, 128, 1, 576, 14),
    "4c": (576, 160, 128, 160, 128, 160, 128, 1, 608, 14),
    "4d": (608, 96, 128, 192, 160, 192, 128, 1, 608, 14),
    "4e": (608, 0, 128, 192, 192, 256, 0, 2, 1056, 7),
    "5a": (1056, 352, 192, 320, 160, 224, 128, 1, 1024, 7),
    "5b": (1024, 352, 192, 320, 192, 224, 128, 1, 1024, 7),
}

# BN-Inception's published weight count (1000 classes), with a bias on every convolution beside
# its BN: the ``_test`` of pytorchcv's ``bninception.py`` asserts it, and Cadene's
# pretrainedmodels lists it for its ``bninception``. The papers' tables give no totals: the
# paper-layout GoogLeNet is held against its rows alone, by the tests below.
BN_INCEPTION_PARAMS_WITH_BIAS = 11_295_240


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _conv(cin: int, cout: int, k: int, layout: str) -> int:
    """A k x k convolution: with bias in the paper layout, with bias and BN in ``bn_bias``, else
    without bias but with BN."""
    if layout == "paper":
        return cin * cout * k * k + cout
    if layout == "bn_bias":
        return cin * cout * k * k + 3 * cout
    return cin * cout * k * k + 2 * cout


def _linear(cin: int, cout: int) -> int:
    return cin * cout + cout


def _googlenet_module(name: str, layout: str) -> int:
    cin, c1, r3, c3, r5, c5, proj, _, _ = GOOGLENET_ROWS[name]
    wide_k = 5 if layout == "paper" else 3  # torchvision has a 3x3 where the paper has the 5x5
    return (
        _conv(cin, c1, 1, layout)
        + _conv(cin, r3, 1, layout)
        + _conv(r3, c3, 3, layout)
        + _conv(cin, r5, 1, layout)
        + _conv(r5, c5, wide_k, layout)
        + _conv(cin, proj, 1, layout)
    )


def _googlenet_params(layout: str, aux: bool, classes: int) -> int:
    stem = _conv(3, 64, 7, layout) + _conv(64, 64, 1, layout) + _conv(64, 192, 3, layout)
    modules = sum(_googlenet_module(name, layout) for name in GOOGLENET_ROWS)
    n = stem + modules + _linear(1024, classes)
    if aux:
        for cin in (512, 528):  # after 4a and 4d
            n += _conv(cin, 128, 1, layout) + _linear(128 * 4 * 4, 1024) + _linear(1024, classes)
    return n


def _bn_inception_module(name: str, layout: str = "bn") -> int:
    cin, c1, r3, c3, rd, d, proj, _, _, _ = BN_INCEPTION_ROWS[name]
    n = _conv(cin, r3, 1, layout) + _conv(r3, c3, 3, layout)
    n += _conv(cin, rd, 1, layout) + _conv(rd, d, 3, layout) + _conv(d, d, 3, layout)
    if c1:
        n += _conv(cin, c1, 1, layout)
    if proj:
        n += _conv(cin, proj, 1, layout)
    return n


def _bn_inception_params(classes: int, layout: str = "bn") -> int:
    stem = _conv(3, 64, 7, layout) + _conv(64, 64, 1, layout) + _conv(64, 192, 3, layout)
    modules = sum(_bn_inception_module(n, layout) for n in BN_INCEPTION_ROWS)
    return stem + modules + _linear(1024, classes)


def _numel(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def _assert_every_parameter_has_gradient(model: nn.Module) -> None:
    for name, p in model.named_parameters():
        assert p.grad is not None, f"{name} got no gradient"
        assert torch.isfinite(p.grad).all(), f"{name} has a non-finite gradient"
        assert p.grad.abs().sum() > 0, f"{name} has an all-zero gradient"


def test_hand_arithmetic_agrees_with_published_bn_inception_count() -> None:
    assert _bn_inception_params(1000, "bn_bias") == BN_INCEPTION_PARAMS_WITH_BIAS


def test_hand_arithmetic_agrees_with_torchvision(tv_model) -> None:
    """Table 1's rows in torchvision's layout give torchvision's own counts: the one its weights
    publish (no auxiliary heads) and that of the model it builds (with them)."""
    from torchvision.models import GoogLeNet_Weights

    published = GoogLeNet_Weights.IMAGENET1K_V1.meta["num_params"]
    assert _googlenet_params("torchvision", aux=False, classes=1000) == published
    assert _googlenet_params("torchvision", aux=True, classes=1000) == _numel(tv_model)


def test_table_outputs_are_branch_sums() -> None:
    for _, c1, _, c3, _, c5, proj, out, _ in GOOGLENET_ROWS.values():
        assert c1 + c3 + c5 + proj == out
    for cin, c1, _, c3, _, d, proj, stride, out, _ in BN_INCEPTION_ROWS.values():
        assert c1 + c3 + d + (cin if stride == 2 else proj) == out


@pytest.mark.parametrize("classes", [1000, 10])
@pytest.mark.parametrize("aux", [False, True])
@pytest.mark.parametrize("layout", ["paper", "torchvision"])
def test_googlenet_parameter_count(layout: str, aux: bool, classes: int) -> None:
    model = googlenet(num_classes=classes, aux_logits=aux, layout=layout)
    assert _numel(model) == _googlenet_params(layout, aux, classes)


@pytest.mark.parametrize("layout", ["paper", "torchvision"])
def test_googlenet_modules_match_table(layout: str) -> None:
    model = googlenet(layout=layout)
    for name, row in GOOGLENET_ROWS.items():
        block = getattr(model, f"inception{name}")
        assert (block.in_channels, block.out_channels) == (row[0], row[7]), name
        assert _numel(block) == _googlenet_module(name, layout), name


@pytest.mark.parametrize("classes", [1000, 10])
def test_bn_inception_parameter_count(classes: int) -> None:
    model = bn_inception(num_classes=classes)
    assert _numel(model) == _bn_inception_params(classes)
    for name, row in BN_INCEPTION_ROWS.items():
        block = getattr(model, f"inception{name}")
        assert (block.in_channels, block.out_channels) == (row[0], row[8]), name
        assert _numel(block) == _bn_inception_module(name), name


def _output_maps(model: nn.Module, prefix: str = "inception") -> dict[str, tuple[int, ...]]:
    """Run one 224x224 image and record every Inception module's output shape."""
    shapes: dict[str, tuple[int, ...]] = {}
    hooks = [
        module.register_forward_hook(
            lambda _m, _i, out, name=name: shapes.__setitem__(name[len(prefix) :], tuple(out.shape))
        )
        for name, module in model.named_children()
        if name.startswith(prefix)
    ]
    model.eval()
    with torch.no_grad():
        model(torch.randn(1, 3, 224, 224))
    for hook in hooks:
        hook.remove()
    return shapes


@pytest.mark.parametrize("layout", ["paper", "torchvision"])
def test_googlenet_output_maps_at_224(layout: str) -> None:
    torch.manual_seed(0)
    shapes = _output_maps(googlenet(num_classes=10, aux_logits=False, layout=layout))
    assert shapes == {n: (1, row[7], row[8], row[8]) for n, row in GOOGLENET_ROWS.items()}


def test_bn_inception_output_maps_at_224() -> None:
    torch.manual_seed(0)
    shapes = _output_maps(bn_inception(num_classes=10))
    assert shapes == {n: (1, row[8], row[9], row[9]) for n, row in BN_INCEPTION_ROWS.items()}


# The paper's aux heads (5x5/3 average pool into a 2048-wide FC) need a 14x14 map at 4a, so the
# paper layout trains at 224; torchvision's adaptive pool takes the small input.
@pytest.mark.parametrize(("layout", "batch", "size"), [("paper", 1, 224), ("torchvision", 2, 64)])
def test_googlenet_trains_with_aux_heads(layout: str, batch: int, size: int) -> None:
    torch.manual_seed(0)
    model = googlenet(num_classes=10, layout=layout).train()
    target = torch.randint(0, 10, (batch,))
    out = model(torch.randn(batch, 3, size, size))
    assert isinstance(out, GoogLeNetOutputs)
    for logits in out:
        assert logits.shape == (batch, 10)
        assert torch.isfinite(logits).all()
    googlenet_loss(out, target).backward()
    _assert_every_parameter_has_gradient(model)


@pytest.mark.parametrize("layout", ["paper", "torchvision"])
def test_googlenet_returns_logits_in_eval_and_without_aux(layout: str) -> None:
    torch.manual_seed(0)
    x = torch.randn(2, 3, 64, 64)
    model = googlenet(num_classes=10, layout=layout).eval()
    with torch.no_grad():
        out = model(x)
    assert isinstance(out, torch.Tensor) and out.shape == (2, 10) and torch.isfinite(out).all()

    model = googlenet(num_classes=10, aux_logits=False, layout=layout).train()
    out = model(x)
    assert isinstance(out, torch.Tensor) and out.shape == (2, 10)
    F.cross_entropy(out, torch.tensor([1, 2])).backward()
    _assert_every_parameter_has_gradient(model)


def test_bn_inception_forward_backward() -> None:
    torch.manual_seed(0)
    model = bn_inception(num_classes=10).train()
    out = model(torch.randn(2, 3, 64, 64))
    assert out.shape == (2, 10) and torch.isfinite(out).all()
    F.cross_entropy(out, torch.tensor([3, 7])).backward()
    _assert_every_parameter_has_gradient(model)


def _torchvision_googlenet(state: dict[str, torch.Tensor] | None = None) -> nn.Module:
    torchvision = pytest.importorskip("torchvision")
    tv = torchvision.models.googlenet(
        weights=None, aux_logits=True, init_weights=state is None, transform_input=False
    )
    if state is not None:
        tv.load_state_dict(state)
    return tv


@pytest.fixture(scope="module")
def tv_model() -> nn.Module:
    """torchvision's GoogLeNet with auxiliary heads, built once (its init takes seconds)."""
    torch.manual_seed(0)
    return _torchvision_googlenet()


@pytest.fixture(scope="module")
def tv_state(tv_model) -> dict[str, torch.Tensor]:
    """A state dict of torchvision's GoogLeNet with every weight and BN statistic randomized at a
    useful scale; its own init gives near-zero logits, against which any comparison would pass."""
    tv = copy.deepcopy(tv_model)
    torch.manual_seed(0)
    with torch.no_grad():
        for m in tv.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
                if m.bias is not None:
                    nn.init.uniform_(m.bias, -0.1, 0.1)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.uniform_(m.weight, 0.5, 1.5)
                nn.init.uniform_(m.bias, -0.2, 0.2)
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 2.0)
    return {k: v.clone() for k, v in tv.state_dict().items()}


def test_torchvision_state_dict_loads_and_gives_same_logits(tv_state) -> None:
    tv = _torchvision_googlenet(tv_state).eval()
    ours = googlenet(layout="torchvision")
    result = ours.load_state_dict(tv_state)  # strict: every key and shape must match
    assert not result.missing_keys and not result.unexpected_keys
    ours.eval()
    torch.manual_seed(0)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        expected, got = tv(x), ours(x)
        assert expected.std() > 0.1  # a comparison of near-zero logits would prove nothing
        torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)
        # the auxiliary heads too, on maps of their own input size
        for name, channels in (("aux1", 512), ("aux2", 528)):
            feats = torch.randn(2, channels, 14, 14)
            torch.testing.assert_close(
                getattr(ours, name)(feats), getattr(tv, name)(feats), rtol=1e-4, atol=1e-4
            )
    # and back: torchvision accepts our state dict
    tv.load_state_dict(ours.state_dict())


def test_torchvision_training_outputs_match(tv_state) -> None:
    """In training mode too: same dropout draws in the same order, same batch statistics."""
    tv = _torchvision_googlenet(tv_state).train()
    ours = googlenet(layout="torchvision").train()
    ours.load_state_dict(tv_state)
    torch.manual_seed(0)
    x = torch.randn(2, 3, 64, 64)
    torch.manual_seed(1)
    expected = tv(x)
    torch.manual_seed(1)
    got = ours(x)
    assert isinstance(got, GoogLeNetOutputs)
    for a, b in zip(got, expected):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)


def test_paper_layout_does_not_take_torchvision_weights() -> None:
    """The layouts really differ: conv bias and 5x5 against BN and 3x3."""
    tv_state = googlenet(layout="torchvision").state_dict()
    with pytest.raises(RuntimeError):
        googlenet(layout="paper").load_state_dict(tv_state)


def test_googlenet_loss_weights_aux_heads() -> None:
    torch.manual_seed(0)
    logits, aux2, aux1 = (torch.randn(4, 10) for _ in range(3))
    target = torch.randint(0, 10, (4,))
    main = F.cross_entropy(logits, target)
    a1, a2 = F.cross_entropy(aux1, target), F.cross_entropy(aux2, target)
    outputs = GoogLeNetOutputs(logits, aux2, aux1)
    torch.testing.assert_close(googlenet_loss(outputs, target), main + 0.3 * (a1 + a2))
    torch.testing.assert_close(googlenet_loss(outputs, target, aux_weight=1.0), main + a1 + a2)
    torch.testing.assert_close(googlenet_loss(logits, target), main)
    torch.testing.assert_close(googlenet_loss((logits, None, None), target), main)


@pytest.mark.parametrize(
    ("call", "field"),
    [
        (lambda: googlenet(layout="caffe"), "layout"),
        (lambda: googlenet(num_classes=0), "num_classes"),
        (lambda: bn_inception(num_classes=-1), "num_classes"),
    ],
)
def test_bad_arguments_raise(call, field: str) -> None:
    with pytest.raises(ValueError, match=field):
        call()
