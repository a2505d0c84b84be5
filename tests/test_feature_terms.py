"""FA, AT and the causal mask: hand computations, gradient flow, a teacher with a known cause."""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn
import torch.nn.functional as F

from harness.models import build_model
from methods import Batch, Context, Outputs, build_method
from methods.at import at_distance, attention
from methods.causal_mask import effects, select, to_pixels
from methods.fa import FeatureAlignment

torch.manual_seed(0)


def test_at_both_modes_against_hand_computation():
    fs = torch.tensor([[[[1.0, 2.0], [0.0, 1.0]]]])  # (1, 1, 2, 2)
    ft = torch.tensor([[[[2.0, 0.0], [1.0, 1.0]], [[0.0, 2.0], [1.0, 1.0]]]])  # two channels
    a_s = [1, 4, 0, 1]  # mean over channels of F², flattened
    a_t = [2, 2, 1, 1]
    n_s, n_t = math.sqrt(sum(v * v for v in a_s)), math.sqrt(sum(v * v for v in a_t))
    diff = [x / n_s - y / n_t for x, y in zip(a_s, a_t)]
    code = sum(d * d for d in diff) / 4
    paper = math.sqrt(sum(d * d for d in diff))
    assert at_distance(attention(fs), attention(ft), "code").item() == pytest.approx(code, rel=1e-6)
    assert at_distance(attention(fs), attention(ft), "paper").item() == pytest.approx(paper, rel=1e-6)


def test_at_pools_the_larger_map_and_restricts_to_kept_positions():
    fs, ft = torch.randn(2, 3, 8, 8), torch.randn(2, 5, 4, 4)
    a_s = attention(fs, size=4)
    assert torch.allclose(a_s, nn.functional.avg_pool2d(fs.pow(2).mean(1, keepdim=True), 2)[:, 0])
    weights = torch.zeros(2, 4, 4)
    weights[:, :2, :2] = 1
    masked = at_distance(a_s, attention(ft), "code", weights)
    by_hand = at_distance(a_s[:, :2, :2], attention(ft)[:, :2, :2], "code")  # mean over the 4 kept positions
    assert masked.item() == pytest.approx(by_hand.item() * 4 / 16, rel=1e-5)  # squared sums over all 16
    paper = at_distance(a_s, attention(ft), "paper", weights)
    assert paper.item() == pytest.approx(at_distance(a_s[:, :2, :2], attention(ft)[:, :2, :2], "paper").item(), rel=1e-5)


@pytest.mark.parametrize("mode", ["code", "paper"])
def test_masked_at_is_on_the_scale_of_unmasked_at(mode):
    torch.manual_seed(3)
    a_s, a_t = attention(torch.randn(256, 8, 8, 8)), attention(torch.randn(256, 8, 8, 8))
    plain = at_distance(a_s, a_t, mode)
    assert at_distance(a_s, a_t, mode, torch.ones(256, 8, 8)).item() == pytest.approx(plain.item(), rel=1e-6)
    for keep in (0.5, 0.25):
        hard = (torch.rand(256, 64).argsort(1) < keep * 64).float().view(256, 8, 8)
        assert 0.8 < (at_distance(a_s, a_t, mode, hard) / plain).item() < 1.25, keep
    soft = torch.rand(256, 8, 8) * hard  # soft weights on the kept positions: same scale again
    assert 0.8 < (at_distance(a_s, a_t, mode, soft) / plain).item() < 1.25


def test_paper_mode_refuses_the_code_mode_weight(tmp_path):
    from harness.config import grid as gridlib

    path = tmp_path / "g.toml"
    body = 'name = "g"\n[teachers.r]\narch = "resnet20"\n[grid]\nmethod = ["kd+at"]\nteacher_set = [["r"]]\n'
    path.write_text(body + '[methods.at]\nmode = "paper"\n')
    with pytest.raises(gridlib.GridError, match="mode = 'paper' with weight = 1000"):
        gridlib.load(path)
    path.write_text(body + '[methods.at]\nmode = "paper"\nweight = 0.1\n')
    gridlib.load(path)


def make_fa(student_channels, teacher_channels, teacher_size, pairs):
    class Net(nn.Module):
        def __init__(self, channels, strides):
            super().__init__()
            self.feature_channels, self.feature_strides = channels, strides

    student = Net(student_channels, [1])
    teacher = Net(teacher_channels, [32 // teacher_size])
    term = FeatureAlignment(Context(student, [teacher]), pairs=pairs, weight=100.0)
    for reg in term.regressors[0]:  # identity regressor, BN as identity in eval mode
        nn.init.eye_(reg[0].weight.view(reg[0].weight.shape[:2]))
    return term.eval()


@pytest.mark.parametrize("teacher_size", [4, 8, 2])
def test_fa_against_hand_computation_with_and_without_resizing(teacher_size):
    term = make_fa([3], [3], teacher_size, [[0, 0]])
    fs, ft = torch.randn(2, 3, 4, 4), torch.randn(2, 3, teacher_size, teacher_size)
    if teacher_size == 4:
        expected = (fs - ft).pow(2).mean()
    elif teacher_size < 4:
        expected = (nn.functional.adaptive_avg_pool2d(fs, teacher_size) - ft).pow(2).mean()
    else:
        expected = (nn.functional.interpolate(fs, size=teacher_size, mode="bilinear") - ft).pow(2).mean()
    losses = term.losses(Batch(torch.zeros(2), torch.zeros(2, dtype=torch.long)), Outputs(None, [fs]), [Outputs(None, [ft])])
    assert losses["fa"].item() == pytest.approx(100 * expected.item(), rel=1e-5)


def outputs(model, x, grad=False):
    if grad:
        return Outputs(*model(x, features=True))
    with torch.no_grad():
        return Outputs(*model(x, features=True))


@pytest.mark.parametrize("name, mask", [("kd+fa+at", "none"), ("kd+fa+at", "intervention"), ("kd+fa+at", "gradient"),
                                        ("kd+at", "topk")])
def test_gradients_reach_student_and_regressors_never_teacher(name, mask):
    student, teacher = build_model("resnet20"), build_model("resnet32").eval().requires_grad_(False)
    from harness.config.grid import resolve_method

    spec = resolve_method(name, {"fa": {"mask": mask}, "at": {"mask": mask}}, "", [])
    method = build_method(spec, Context(student, [teacher]))
    x, y = torch.randn(4, 3, 32, 32), torch.arange(4)
    batch = Batch(x, y)
    loss = sum(method.losses(batch, outputs(student, x, grad=True), method.teacher_outputs(batch)).values())
    loss.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in student.parameters() if p.dim() > 1)
    if "fa" in name:
        regs = [p for p in method.parameters()]
        assert regs and all(p.grad is not None for p in regs)
    assert all(p.grad is None for p in teacher.parameters())


class QuadrantTeacher(nn.Module):
    """Class c's evidence is channel c, and the prediction reads only the top-left quadrant of the
    8×8 feature map."""

    feature_channels, feature_strides = [4], [4]

    def forward(self, x, features=False):
        logits = self.forward_from(0, x)  # the "stage" is the identity on a (B, 4, 8, 8) input
        return (logits, [x]) if features else logits

    def forward_from(self, index, feature):
        return feature[:, :, :4, :4].mean((2, 3)) * 4


@pytest.mark.parametrize("mode", ["intervention", "gradient"])
def test_causal_mask_finds_the_region_the_teacher_uses(mode):
    torch.manual_seed(1)
    teacher = QuadrantTeacher()
    y = torch.arange(16) % 4
    x = 0.1 * torch.randn(16, 4, 8, 8)
    x[torch.arange(16), y, :4, :4] += 3  # the evidence for the label, where the teacher looks
    x[:, :, 4:, 4:] += 5  # more energy where it does not look: attention points there
    assert torch.equal(teacher(x).argmax(1), y)
    mask = select(effects(mode, teacher, x, 0, y, 4), keep=0.25, soft=False)  # 4 of 16 cells
    ids = torch.arange(16)
    top_left = (ids // 4 < 2) & (ids % 4 < 2)
    assert torch.equal(mask.bool(), top_left.expand(16, -1)), mask
    topk = select(effects("topk", teacher, x, 0, y, 4), keep=0.25, soft=False)
    bottom_right = (ids // 4 >= 2) & (ids % 4 >= 2)
    assert torch.equal(topk.bool(), bottom_right.expand(16, -1))  # attention is not causation


def test_intervention_is_one_batched_call_and_gradient_agrees_on_a_resnet():
    teacher = build_model("resnet32").eval().requires_grad_(False)
    calls = []
    original = teacher.forward_from
    teacher.forward_from = lambda i, f: calls.append(f.shape[0]) or original(i, f)
    x = torch.randn(6, 3, 32, 32)
    feats = teacher(x, features=True)[1]
    y = teacher(x).argmax(1)
    e_int = effects("intervention", teacher, feats[-1], -1, y, 4)
    assert calls == [6 + 6 * 16]
    e_grad = effects("gradient", teacher, feats[-1], -1, y, 4)
    corr = torch.corrcoef(torch.stack([e_int.flatten(), e_grad.flatten()]))[0, 1]
    assert corr > 0.6, corr  # first-order vs exact: same ranking tendency (a sign error gives < 0)


@pytest.mark.parametrize("mode", ["intervention", "gradient"])
def test_mask_under_bf16_autocast_equals_the_float32_mask(mode):
    torch.manual_seed(0)
    teacher = build_model("resnet20").eval().requires_grad_(False)
    teacher.fc.weight.mul_(40)  # a confident teacher: the cells' effects are far below bf16's resolution
    x = torch.randn(32, 3, 32, 32)
    with torch.no_grad():
        logits, feats = teacher(x, features=True)
    y = logits.argmax(1)
    assert F.softmax(logits, 1).max(1).values.min() > 0.99
    reference = select(effects(mode, teacher, feats[-1], -1, y, 4), 0.5, soft=False)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert torch.equal(select(effects(mode, teacher, feats[-1], -1, y, 4), 0.5, soft=False), reference)


def test_soft_mask_sums_to_one_and_resizes():
    effect = torch.tensor([[3.0, -1.0, 1.0, 0.0], [-1.0, -2.0, -3.0, -4.0]])
    soft = select(effect, 0.5, soft=True)
    assert torch.allclose(soft.sum(1), torch.ones(2))
    assert torch.allclose(soft[0], torch.tensor([0.75, 0, 0.25, 0])) and torch.allclose(soft[1], torch.full((4,), 0.25))
    assert select(effect, 0.5, soft=False).tolist() == [[1, 0, 1, 0], [1, 1, 0, 0]]
    pixels = to_pixels(soft, 2, (4, 4))
    assert pixels.shape == (2, 4, 4) and pixels[0, 0, 0] == 0.75 and pixels[0, 3, 0] == 0.25


def test_masks_and_losses_finite_under_bf16():
    student, teacher = build_model("resnet20"), build_model("resnet56").eval().requires_grad_(False)
    from harness.config.grid import resolve_method

    for mask in ("intervention", "gradient", "topk"):
        spec = resolve_method("cakd", {"cakd": {"mask": mask, "soft": mask == "gradient"}}, "", [])
        method = build_method(spec, Context(student, [teacher]))
        batch = Batch(torch.randn(4, 3, 32, 32), torch.arange(4))
        with torch.autocast("cpu", dtype=torch.bfloat16):
            losses = method.losses(batch, outputs(student, batch.images, grad=True), method.teacher_outputs(batch))
        assert all(torch.isfinite(v) and v.dtype == torch.float32 for v in losses.values()), (mask, losses)
        summary = method.epoch_summary(batch)
        assert 0 < summary["mask_kept_fraction"] <= 1 and 0 <= summary["mask_agreement"] <= 1


def test_mask_grid_finer_than_the_teacher_map_is_a_grid_error(tmp_path):
    from harness.config import grid as gridlib

    path = tmp_path / "g.toml"
    path.write_text('name = "g"\n[teachers.v]\narch = "vgg19_bn"\n[grid]\nmethod = ["cakd"]\n'
                    'teacher_set = [["v"]]\n[methods.cakd]\ncells = 8\n')
    with pytest.raises(gridlib.GridError, match="cells = 8 needs a map of at least 8×8"):
        gridlib.load(path)
