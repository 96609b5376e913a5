"""The KD-loss modules, config and argument checks on the paths the defaults do not take: both
linear heads' biases, teacher weights, settings checked when a config is built, tensor-valued
scalars that are bool or complex, a bool chunk size."""

import pytest
import torch

import edgegen  # noqa: F401
from edgegen.distill import FusedLinearKDLoss, KDConfig, KDLoss, fused_linear_kd_loss, kd_loss


@pytest.mark.parametrize("value", [torch.tensor(True), torch.tensor(2 + 0j)], ids=["bool", "complex"])
def test_bool_and_complex_tensor_settings_are_refused(value):
    s, t, y = torch.randn(4, 10), torch.randn(4, 10), torch.tensor([1, 2, 3, 4])
    with pytest.raises(TypeError, match="temperature: expected a real number"):
        kd_loss(s, t, y, temperature=value)


def test_fused_module_uses_both_linear_biases():
    torch.manual_seed(0)
    sh, th = torch.nn.Linear(8, 40), torch.nn.Linear(12, 40)  # bias=True
    hs, ht, y = torch.randn(5, 8), torch.randn(5, 12), torch.arange(5)
    got = FusedLinearKDLoss(chunk_size=2)(hs, sh, ht, th, y)
    torch.testing.assert_close(got, kd_loss(sh(hs), th(ht), y), rtol=1e-5, atol=1e-6)
    got.backward()
    assert sh.bias.grad is not None and sh.bias.grad.abs().sum() > 0


def test_kdloss_module_uses_teacher_weights():
    torch.manual_seed(0)
    s, ts, y = torch.randn(5, 40), [torch.randn(5, 40) for _ in range(2)], torch.arange(5)
    torch.testing.assert_close(KDLoss(teacher_weights=[0.9, 0.1])(s, ts, y),
                               kd_loss(s, ts, y, teacher_weights=[0.9, 0.1]))


@pytest.mark.parametrize("kw, match", [(dict(temperature=0.0), "temperature"), (dict(alpha=1.5), "alpha"),
                                       (dict(reduction="avg"), "reduction")])
def test_kdconfig_validates_on_construction(kw, match):
    with pytest.raises(ValueError, match=match):
        KDConfig(**kw)
    with pytest.raises(ValueError, match=match):
        KDConfig.from_dict(kw)


def test_chunk_size_refuses_bool():
    hs, ws, ht, wt = torch.randn(5, 8), torch.randn(40, 8), torch.randn(5, 12), torch.randn(40, 12)
    with pytest.raises(ValueError, match="chunk_size"):
        fused_linear_kd_loss(hs, ws, ht, wt, torch.arange(5), chunk_size=True)
