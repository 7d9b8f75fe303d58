"""EigenCAM's first component from the smaller side of the matrix equals the full SVD's, on both sides."""

from __future__ import annotations

import pytest
import torch

from camlens.methods.activation import eigen_smooth, eigencam, eigengradcam, first_component, orient
from camlens.methods.gradcam import gradcam


def svd_component(maps: torch.Tensor, reference: torch.Tensor | None = None) -> torch.Tensor:
    """The definition: ``sigma_1 u_1`` of the full SVD of the centred ``(uv, K)`` matrix, oriented."""
    batch, _, height, width = maps.shape
    matrix = maps.flatten(2).transpose(1, 2).double()
    centred = matrix - matrix.mean(dim=1, keepdim=True)
    u, s, _ = torch.linalg.svd(centred, full_matrices=False)
    projection = (u[:, :, 0] * s[:, :1]).view(batch, height, width)
    reference = maps.mean(dim=1) if reference is None else reference
    return orient(projection, reference.double()).to(maps.dtype)


def corr(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(torch.corrcoef(torch.stack([a.flatten().double(), b.flatten().double()]))[0, 1])


@pytest.mark.parametrize(("channels", "side"), [(8, 12), (300, 6)], ids=["uv>K", "uv<K"])
def test_first_component_equals_the_full_svd(channels: int, side: int) -> None:
    torch.manual_seed(0)
    # a dominant rank-one pattern plus noise, so the first component is well separated
    pattern = torch.rand(2, 1, side, side)
    A = torch.relu(pattern * torch.rand(2, channels, 1, 1) * 3 + 0.3 * torch.rand(2, channels, side, side))
    g = torch.randn_like(A)
    for ours, theirs in [
        (eigencam(A, g), svd_component(A)),
        (eigengradcam(A, g), svd_component(A * g)),
        (first_component(A), svd_component(A)),
    ]:
        for b in range(2):
            assert corr(ours[b], theirs[b]) > 0.9999  # same sign too: both oriented by orient()
        torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-5)


def test_eigen_smooth_equals_the_full_svd_of_the_terms() -> None:
    torch.manual_seed(1)
    A = torch.rand(1, 16, 10, 10)
    g = torch.randn_like(A)
    terms = gradcam(A.reshape(16, 1, 10, 10), g.reshape(16, 1, 10, 10)).reshape(1, 16, 10, 10)
    ours = eigen_smooth(gradcam, A, g)
    assert corr(ours[0], svd_component(terms, terms.sum(dim=1))[0]) > 0.9999


def test_eigencam_on_an_80x80_layer_decomposes_the_256x256_side(monkeypatch: pytest.MonkeyPatch) -> None:
    """The (uv, uv) = 6400 x 6400 decomposition took minutes; only the (K, K) = 256 x 256 one may run."""
    sizes: list[tuple[int, ...]] = []
    real_eigh = torch.linalg.eigh

    def recording_eigh(matrix: torch.Tensor, *args, **kwargs):
        sizes.append(tuple(matrix.shape[-2:]))
        return real_eigh(matrix, *args, **kwargs)

    monkeypatch.setattr(torch.linalg, "eigh", recording_eigh)
    A = torch.rand(1, 256, 80, 80)
    eigencam(A, A)
    assert sizes == [(256, 256)]
