"""The mixture SIREN: coefficients, batched forward equivalence, shapes and edge cases."""

import math

import pytest
import torch

from mixinr.model import Arch, MixtureSiren, grid, linear_coefficients, render


def test_linear_coefficients_match_seed_formula():
    """K = 2: alpha_i = 1 - i/(N-1), beta_i = i/(N-1)."""
    n = 7
    c = linear_coefficients(n, 2)
    for i in range(n):
        beta = i / (n - 1)
        assert c[i, 0].item() == pytest.approx(1 - beta)
        assert c[i, 1].item() == pytest.approx(beta)


def test_linear_coefficients_k3_piecewise_and_edges():
    """K > 2: rows sum to 1, first image is set 0, last is set K-1, middle of N=5/K=3 is set 1."""
    c = linear_coefficients(5, 3)
    assert torch.allclose(c.sum(1), torch.ones(5))
    assert c[0].tolist() == [1, 0, 0] and c[4].tolist() == [0, 0, 1] and c[2].tolist() == [0, 1, 0]
    assert c[1].tolist() == pytest.approx([0.5, 0.5, 0.0])
    assert linear_coefficients(1, 2).tolist() == [[1.0, 0.0]]
    assert linear_coefficients(3, 1).tolist() == [[1.0]] * 3


def test_params_per_set_formula():
    """P = 3W + (L-1)(W^2+W) + 3W + 3 matches the real parameter count of one set."""
    for depth, width in [(5, 16), (3, 22), (8, 112), (1, 4)]:
        arch = Arch(depth, width, sets=3)
        model = MixtureSiren(arch, 2)
        expected = 3 * width + (depth - 1) * (width**2 + width) + 3 * width + 3
        assert arch.params_per_set() == expected
        assert sum(p.numel() for p in model.parameters()) == 3 * expected


def _explicit_forward(model, i, coords):
    """theta_i = sum_k c[i,k] theta_k built by hand, then a plain per-image SIREN loop."""
    c = model.coeffs[i]
    h = coords
    n_layers = len(model.weights)
    for layer in range(n_layers):
        w = sum(c[k] * model.weights[layer][k] for k in range(model.arch.sets))
        b = sum(c[k] * model.biases[layer][k] for k in range(model.arch.sets))
        z = h @ w.T + b
        if layer < n_layers - 1:
            omega = model.arch.omega_first if layer == 0 else model.arch.omega
            h = torch.sin(omega * z)
        else:
            h = z
    return h


@pytest.mark.parametrize("sets,n,scheme", [(2, 5, "linear"), (1, 3, "linear"), (2, 1, "linear"),
                                           (2, 2, "linear"), (4, 6, "learned")])
def test_batched_forward_equals_explicit_per_image(sets, n, scheme):
    """The batched forward (shared first layer, bmm) equals a per-image SIREN to 1e-5."""
    torch.manual_seed(0)
    model = MixtureSiren(Arch(4, 12, sets=sets), n, scheme, generator=torch.Generator().manual_seed(1))
    if scheme == "learned":
        with torch.no_grad():
            model.coeffs.add_(0.1 * torch.randn_like(model.coeffs))
    coords = grid(6, 5)
    out = model(coords)
    assert out.shape == (n, 30, 3)
    for i in range(n):
        assert torch.allclose(out[i], _explicit_forward(model, i, coords), atol=1e-5)
    # Per-image coordinates (the path mixed-size groups take) agree too.
    per_image = model(coords.expand(n, -1, -1).contiguous())
    assert torch.allclose(per_image, out, atol=1e-5)


def test_render_matches_batched_forward_and_chunks():
    """render() (the decoder) gives the batched forward's output, however it is chunked."""
    model = MixtureSiren(Arch(3, 8), 3, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ref = model(grid(7, 9))[2].view(7, 9, 3)
        for chunk in (5, 63, 1000):
            assert torch.allclose(render(model.image_layers(2), model.arch, 7, 9, chunk=chunk), ref, atol=1e-5)


def test_initialisation_bounds():
    """First layer U(-1/in, 1/in); hidden U(-sqrt(6/in)/omega, ..); sets drawn independently."""
    arch = Arch(3, 64, sets=2)
    model = MixtureSiren(arch, 2, generator=torch.Generator().manual_seed(0))
    assert model.weights[0].abs().max() <= 1 / 2
    assert model.weights[1].abs().max() <= math.sqrt(6 / 64) / 30
    assert model.weights[1].abs().max() > 0.9 * math.sqrt(6 / 64) / 30
    assert not torch.allclose(model.weights[1][0], model.weights[1][1])


def test_bad_scheme_rejected():
    with pytest.raises(ValueError, match="coefficient scheme"):
        MixtureSiren(Arch(2, 4), 2, "cubic")
