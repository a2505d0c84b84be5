"""Grad-CAM (methods.gradcam) against the definition, and the map resampling that follows crops/flips."""
from __future__ import annotations

import torch
from torch import nn
import torch.nn.functional as F

from harness.models import StagedNet, build_model
from methods.gradcam import class_maps, gradcam, gradcam_autograd, normalize, resample


def tiny_net(seed: int = 0, classes: int = 5) -> StagedNet:
    """A small convnet with the zoo's structure: stages at 16×16 and 8×8, global pool + fc."""
    torch.manual_seed(seed)
    stem = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU())
    stages = [nn.Sequential(nn.Conv2d(4, 6, 3, 2, 1), nn.BatchNorm2d(6), nn.ReLU()),
              nn.Sequential(nn.Conv2d(6, 8, 3, 2, 1), nn.BatchNorm2d(8), nn.ReLU())]
    net = StagedNet(stem, stages, [6, 8], [2, 4], classes)
    for m in net.modules():  # non-trivial BN statistics, so eval mode is not the identity
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 1.5)
    return net.eval()


def reference(net: nn.Module, x: Tensor, classes: Tensor) -> Tensor:  # noqa: F821
    """Per sample, through the whole network: α = spatial mean of ∂z_c/∂A by torch.autograd.grad."""
    maps = []
    for i in range(len(x)):
        logits, feats = net(x[i:i + 1], features=True)
        (grad,) = torch.autograd.grad(logits[0, classes[i]], feats[-1])
        alpha = grad.mean((2, 3))
        maps.append(F.relu((alpha[:, :, None, None] * feats[-1]).sum(1))[0].detach())
    return torch.stack(maps)


def test_gradcam_matches_per_sample_autograd_reference():
    net = tiny_net()
    x, classes = torch.randn(6, 3, 32, 32), torch.tensor([0, 1, 2, 3, 4, 0])
    expected = reference(net, x, classes)
    _, feats = net(x, features=True)
    assert expected.shape == (6, 8, 8) and expected.max() > 0
    torch.testing.assert_close(gradcam(net, feats[-1], classes), expected, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(gradcam_autograd(net, feats[-1], classes), expected, rtol=1e-5, atol=1e-6)


def test_closed_form_equals_autograd_on_zoo_teachers():
    for arch in ("resnet20", "vgg19_bn"):
        net = build_model(arch).eval().requires_grad_(False)
        torch.manual_seed(1)
        with torch.no_grad():
            net.fc.weight.normal_()
            _, feats = net(torch.randn(3, 3, 32, 32), features=True)
        classes = torch.tensor([1, 7, 3])
        torch.testing.assert_close(gradcam(net, feats[-1], classes), gradcam_autograd(net, feats[-1], classes),
                                   rtol=1e-4, atol=1e-6)
        assert all(p.grad is None for p in net.parameters())


def test_gradcam_is_independent_of_batch_composition_in_eval_mode():
    net = tiny_net(seed=3)
    x, classes = torch.randn(8, 3, 32, 32), torch.randint(0, 5, (8,))
    with torch.no_grad():
        full = gradcam(net, net(x, features=True)[1][-1], classes)
        order = torch.tensor([5, 2, 7])
        part = gradcam(net, net(x[order], features=True)[1][-1], classes[order])
    torch.testing.assert_close(part, full[order], rtol=1e-5, atol=1e-6)


class Brightness(nn.Module):
    """Per pixel: how much brighter than black it is (black → 0), two channels."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 2, 1)

    def set(self):  # after StagedNet's initialisation
        with torch.no_grad():
            self.conv.weight.fill_(1.0)
            self.conv.bias.fill_(5.0)  # a normalised black pixel sums to about −5.7 over RGB
        return self

    def forward(self, x):
        return self.conv(x).relu()


def test_a_teacher_with_known_spatial_dependence_points_there():
    """The teacher's class-0 evidence is the brightness of each 4×4 cell; the image is black but
    for one bright square: the map must sit on the square and nowhere else."""
    net = StagedNet(Brightness(), [nn.AvgPool2d(4)], [2], [4], 3).eval()
    net.stem.set()
    with torch.no_grad():
        net.fc.weight.copy_(torch.tensor([[1.0, 1.0], [-1.0, -1.0], [0.5, -0.5]]))
    mean, std = torch.tensor([0.4914, 0.4822, 0.4465]), torch.tensor([0.2470, 0.2435, 0.2616])
    corners = [(0, 0), (8, 20), (24, 4), (16, 16)]
    images = torch.zeros(len(corners), 32, 32, 3)
    for i, (r, c) in enumerate(corners):
        images[i, r:r + 8, c:c + 8] = 1.0
    x = ((images - mean) / std).permute(0, 3, 1, 2)
    _, feats = net(x, features=True)
    maps = gradcam(net, feats[-1], torch.zeros(len(x), dtype=torch.long))
    for m, (r, c) in zip(maps, corners):
        inside = torch.zeros(8, 8, dtype=torch.bool)
        inside[r // 4:r // 4 + 2, c // 4:c // 4 + 2] = True
        assert (m[inside] > 0).all() and (m[~inside] == 0).all()
    assert (gradcam(net, feats[-1], torch.ones(len(x), dtype=torch.long)) == 0).all()  # class 1: evidence against


def test_student_map_trains_features_not_the_classifier():
    net = tiny_net().train()
    x = torch.randn(4, 3, 32, 32)
    _, feats = net(x, features=True)
    gradcam(net, feats[-1], torch.tensor([0, 1, 2, 3])).sum().backward()
    assert net.stem[0].weight.grad.abs().sum() > 0 and net.stages[1][0].weight.grad.abs().sum() > 0
    assert net.fc.weight.grad is None  # the channel weights are detached


def test_resample_identity_halving_and_whole_cell_shifts_are_exact():
    maps = torch.rand(3, 8, 8)
    assert torch.equal(resample(maps, 8), maps)
    torch.testing.assert_close(resample(maps, 4), F.avg_pool2d(maps[:, None], 2)[:, 0], rtol=0, atol=1e-7)
    flips = torch.tensor([True, False, True])
    assert torch.equal(resample(maps, 8, flips=flips), torch.where(flips[:, None, None], maps.flip(-1), maps))
    # shift by one 4-pixel cell down and right: the view's cell (i, j) is the clean cell (i+1, j+1);
    # the last row and column fall on the padding (zero)
    shifted = resample(maps, 8, shifts=torch.tensor([[4, 4]] * 3), flips=torch.zeros(3, dtype=torch.bool))
    expected = torch.zeros_like(maps)
    expected[:, :7, :7] = maps[:, 1:, 1:]
    assert torch.equal(shifted, expected)


def test_normalize_is_float32_unit_norm_and_keeps_zero_maps():
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = normalize(torch.stack([torch.rand(4, 4), torch.zeros(4, 4)]).bfloat16())
    assert out.dtype == torch.float32 and out.shape == (2, 16)
    assert abs(out[0].norm().item() - 1) < 1e-6 and (out[1] == 0).all()


def test_class_maps_cover_every_class_in_float32_under_autocast():
    net = tiny_net()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        _, feats = net(torch.randn(2, 3, 32, 32), features=True)
        maps = class_maps(net, feats[-1])
    assert maps.shape == (2, 5, 8, 8) and maps.dtype == torch.float32
