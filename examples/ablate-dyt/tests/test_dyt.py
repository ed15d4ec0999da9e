import torch

from ablate.catalog import lookup
from ablate.testing import check_component


def test_dyt_passes_the_generated_checks():
    # the same shape, causality and KV-cache checks as the built-ins, alone and with every other slot
    check_component("dyt")


def test_dyt_is_weight_tanh_alpha_x_plus_bias():
    spec = lookup("dyt")
    norm = spec.cls(spec.make_options({"alpha_init": 0.8}), dim=4)
    x = torch.randn(2, 3, 4)
    assert torch.allclose(norm(x), torch.tanh(0.8 * x))  # weight ones, bias zeros at init
    assert spec.origin.startswith("plugin ablate-dyt "), "install it first (pip install -e .) so its entry point loads it"
