import pytest
import torch

from lnl_lightning.nets.gradient_reversal import grad_reverse


@pytest.mark.parametrize("scale", [0.0, 0.1, 1.0, 2.5])
def test_forward_is_identity_and_backward_is_minus_scale_times_gradient(scale):
    x = torch.randn(4, 3, requires_grad=True)
    upstream = torch.randn(4, 3)
    y = grad_reverse(x, scale)
    assert torch.equal(y, x)
    y.backward(upstream)
    assert torch.allclose(x.grad, -scale * upstream)
