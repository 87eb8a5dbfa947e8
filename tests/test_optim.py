from types import SimpleNamespace

import lightning as L
import torch
from torch import nn

from lightning_gen.core.optim import adam


def test_adam_is_fused_without_a_grad_scaler_and_matches_the_default_update():
    torch.manual_seed(0)
    a, b = nn.Linear(5, 3), nn.Linear(5, 3)
    b.load_state_dict(a.state_dict())
    module = L.LightningModule()
    fused = adam(module, a.parameters(), lr=1e-2, betas=(0.5, 0.999), weight_decay=1e-3)
    plain = torch.optim.Adam(b.parameters(), lr=1e-2, betas=(0.5, 0.999), weight_decay=1e-3)
    assert fused.defaults["fused"] and not plain.defaults["fused"]
    x = torch.randn(8, 5)
    for _ in range(3):
        for net, opt in ((a, fused), (b, plain)):
            opt.zero_grad()
            net(x).square().sum().backward()
            opt.step()
    for p, q in zip(a.parameters(), b.parameters()):
        torch.testing.assert_close(p, q)


def test_adam_is_not_fused_under_a_grad_scaler():
    # 16-mixed: a fused step unscales internally, so hooks and gradient clipping would see scaled gradients
    module = L.LightningModule()
    module._trainer = SimpleNamespace(precision_plugin=SimpleNamespace(scaler=torch.amp.GradScaler("cpu")))
    assert not adam(module, nn.Linear(2, 2).parameters(), lr=1e-3).defaults["fused"]


def test_adam_is_not_fused_for_a_technique_that_clips_under_mixed_precision():
    """Lightning's mixed-precision plugins refuse to clip gradients for an optimizer that unscales inside its step
    (a fused one), under bf16-mixed as under 16-mixed: a technique that clips asks for the plain step."""
    from lightning.pytorch.plugins.precision import MixedPrecision

    module = L.LightningModule()
    assert not adam(module, nn.Linear(2, 2).parameters(), lr=1e-3, clips_gradients=True).defaults["fused"]
    net = nn.Linear(2, 2)
    opt = adam(module, net.parameters(), lr=1e-3, clips_gradients=True)
    net(torch.ones(1, 2)).sum().backward()
    MixedPrecision("bf16-mixed", "cpu").clip_gradients(opt, clip_val=0.1)  # raises for a fused optimizer
    assert torch.cat([p.grad.flatten() for p in net.parameters()]).norm() <= 0.1 + 1e-6
