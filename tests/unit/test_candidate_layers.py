"""``camlens.layers.candidate_layers``: the layers the automatic rule chooses among, from one forward pass."""

from __future__ import annotations

import torch
from torch import nn

from camlens.layers import candidate_layers, default_layer


class _Tokens(nn.Module):
    """A (B, C, H, W) -> (B, N, C) step: the blocks after it output tokens."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(2).transpose(1, 2)


def _cnn() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1),  # 0
        nn.BatchNorm2d(4),  # 1
        nn.ReLU(),  # 2
        nn.Dropout(0.5),  # 3: a pass-through
        nn.Conv2d(4, 5, 3, padding=1),  # 4
        nn.MaxPool2d(2),  # 5: a pooling layer
        nn.AdaptiveAvgPool2d(1),  # 6
        nn.Flatten(),  # 7
        nn.Linear(5, 3),  # 8
    )


def test_the_candidates_are_the_spatial_layers_in_forward_order_without_pools_and_pass_throughs():
    model = _cnn().eval()
    x = torch.rand(2, 3, 16, 16)
    names = candidate_layers(model, x)
    assert names == ["0", "1", "2", "4"]
    assert default_layer(model, x)[0] == names[-1]  # the automatic choice is the deepest informative one


def test_token_layers_are_candidates_too():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 4, stride=4), _Tokens(), nn.LayerNorm(8), nn.Linear(8, 8))
    head = nn.Sequential(model, nn.Flatten(), nn.Linear(16 * 8, 3)).eval()
    names = candidate_layers(head, torch.rand(1, 3, 16, 16))
    # the map, the tokens, their norm and projection, and the container that outputs the projection's tokens
    assert names == ["0.0", "0.1", "0.2", "0.3", "0"]


def test_the_model_is_left_as_found():
    model = _cnn().train()
    model[3].eval()  # a mixed state
    flags = [m.training for m in model.modules()]
    buffers = {k: v.clone() for k, v in model.state_dict().items()}
    hooks = [len(m._forward_hooks) for m in model.modules()]
    candidate_layers(model, torch.rand(2, 3, 16, 16))
    assert [m.training for m in model.modules()] == flags
    assert all(torch.equal(buffers[k], v) for k, v in model.state_dict().items())
    assert [len(m._forward_hooks) for m in model.modules()] == hooks
    assert all(p.grad is None for p in model.parameters())
