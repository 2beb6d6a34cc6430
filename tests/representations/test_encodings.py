import math

import pytest
import torch

from framework.representations.encodings import (
    HashGridEncoding,
    HashGridLevel,
    TriplaneEncoding,
    _import_tinycudann,
    hash_grid_levels,
    reference_hash_grid_encode,
)

CUDA_AND_TCNN = torch.cuda.is_available() and _import_tinycudann() is not None


def _reference(encoding: HashGridEncoding, points: torch.Tensor) -> torch.Tensor:
    return reference_hash_grid_encode(
        points,
        encoding.params,
        n_levels=encoding.n_levels,
        n_features_per_level=encoding.n_features_per_level,
        log2_hashmap_size=encoding.log2_hashmap_size,
        base_resolution=encoding.base_resolution,
        per_level_scale=encoding.per_level_scale,
        bound=encoding.bound,
    )


@pytest.mark.parametrize("combine, out_dim", [("concat", 12), ("sum", 4)])
def test_triplane_shapes_and_gradients(combine, out_dim):
    encoding = TriplaneEncoding(resolution=8, channels=4, combine=combine)
    points = (torch.rand(100, 3) * 2 - 1).requires_grad_()
    features = encoding(points)
    assert encoding.out_dim == out_dim
    assert features.shape == (100, out_dim) and features.dtype == torch.float32
    features.square().sum().backward()
    assert torch.isfinite(points.grad).all() and points.grad.abs().sum() > 0
    assert torch.isfinite(encoding.planes.grad).all() and encoding.planes.grad.abs().sum() > 0


def test_triplane_matches_hand_interpolation():
    bound, resolution = 2.0, 5
    encoding = TriplaneEncoding(resolution=resolution, channels=3, bound=bound)
    xy, xz, yz = encoding.planes.detach()  # each [C, R(rows: second axis), R(columns: first axis)]

    def coordinate(index: float) -> float:
        return -bound + 2 * bound * index / (resolution - 1)

    i, j, k = 1, 3, 2
    vertex = torch.tensor([[coordinate(i), coordinate(j), coordinate(k)]])
    expected = torch.cat([xy[:, j, i], xz[:, k, i], yz[:, k, j]])
    torch.testing.assert_close(encoding(vertex)[0], expected)

    # Halfway between vertices along x and z, on a vertex along y.
    midpoint = torch.tensor([[coordinate(i + 0.5), coordinate(j), coordinate(k + 0.5)]])
    expected = torch.cat(
        [
            (xy[:, j, i] + xy[:, j, i + 1]) / 2,
            (xz[:, k, i] + xz[:, k, i + 1] + xz[:, k + 1, i] + xz[:, k + 1, i + 1]) / 4,
            (yz[:, k, j] + yz[:, k + 1, j]) / 2,
        ]
    )
    torch.testing.assert_close(encoding(midpoint)[0], expected)

    encoding.combine = "sum"
    torch.testing.assert_close(encoding(midpoint)[0], expected.view(3, -1).sum(0))


def test_triplane_clamps_points_outside_the_bound():
    encoding = TriplaneEncoding(resolution=8, channels=4, bound=1.5)
    outside = torch.tensor([[4.0, 0.3, -9.0]], requires_grad=True)
    on_surface = torch.tensor([[1.5, 0.3, -1.5]])
    torch.testing.assert_close(encoding(outside), encoding(on_surface))
    encoding(outside).sum().backward()
    assert outside.grad[0, 0] == 0 and outside.grad[0, 2] == 0 and outside.grad[0, 1] != 0


def test_hash_grid_level_layout():
    # base 4, finest 16 over 3 levels: per-level scale 2; scales 3, 7, 15 -> 4, 8, 16 vertices;
    # 16**3 = 4096 > 2**10 entries, so the last level is hashed.
    encoding = HashGridEncoding(n_levels=3, log2_hashmap_size=10, base_resolution=4, finest_resolution=16)
    assert encoding.per_level_scale == pytest.approx(2.0)
    assert hash_grid_levels(3, 10, 4, encoding.per_level_scale) == [
        HashGridLevel(scale=3.0, resolution=4, size=64, offset=0, hashed=False),
        HashGridLevel(scale=7.0, resolution=8, size=512, offset=64, hashed=False),
        HashGridLevel(scale=15.0, resolution=16, size=1024, offset=576, hashed=True),
    ]
    assert encoding.params.numel() == (64 + 512 + 1024) * 2
    # Dense sizes are rounded up to a multiple of 8 (tcnn's alignment): 3**3 = 27 -> 32.
    assert [level.size for level in hash_grid_levels(2, 12, 2, 1.5)] == [8, 32]


def test_hash_grid_shapes_init_and_gradients():
    encoding = HashGridEncoding()  # the Instant-NGP defaults: 16 levels, 2**19 entries, 16 -> 2048
    assert encoding.out_dim == 32
    assert encoding.per_level_scale == pytest.approx(math.exp(math.log(2048 / 16) / 15))
    assert list(encoding.state_dict()) == ["params"]
    assert encoding.params.abs().max() <= 1e-4
    points = (torch.rand(64, 3) * 2 - 1).requires_grad_()
    features = encoding(points)
    assert features.shape == (64, 32) and features.dtype == torch.float32
    features.sum().backward()
    assert torch.isfinite(points.grad).all()
    assert torch.isfinite(encoding.params.grad).all() and encoding.params.grad.abs().sum() > 0


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize(
    "config",
    [
        # 3 dense levels (the first with an integer scale, so top-face vertices wrap) and 3 hashed.
        dict(n_levels=6, n_features_per_level=2, log2_hashmap_size=9, base_resolution=2, finest_resolution=32),
        dict(n_levels=16, n_features_per_level=4, log2_hashmap_size=12, base_resolution=4, finest_resolution=512),
    ],
)
def test_hash_grid_matches_reference(config, dtype):
    torch.manual_seed(0)
    encoding = HashGridEncoding(bound=1.5, backend="torch", **config).to(dtype)
    assert 0 < encoding.n_dense_levels < encoding.n_levels
    with torch.no_grad():
        encoding.params.uniform_(-1, 1)
    points = torch.rand(500, 3, dtype=dtype) * 3.6 - 1.8  # some outside the bound (clamped)
    points[:50, 0], points[50:100, 2] = 1.5, -1.5  # on the faces
    points.requires_grad_()
    upstream = torch.randn(500, encoding.out_dim, dtype=dtype)

    fast = encoding(points)
    fast_points_grad, fast_params_grad = torch.autograd.grad((fast * upstream).sum(), [points, encoding.params])
    reference = _reference(encoding, points)
    ref_points_grad, ref_params_grad = torch.autograd.grad((reference * upstream).sum(), [points, encoding.params])

    tolerance = 1e-5 if dtype == torch.float32 else 1e-10
    torch.testing.assert_close(fast, reference, atol=tolerance, rtol=0)
    torch.testing.assert_close(fast_params_grad, ref_params_grad, atol=tolerance, rtol=0)
    # Point gradients reach ~1e3 here (grid scale x table values): compare relative to that scale,
    # since float32 summation order alone moves them by ~1e-7 of it.
    scale = ref_points_grad.abs().max()
    torch.testing.assert_close(fast_points_grad, ref_points_grad, atol=tolerance * scale, rtol=0)


def test_hash_grid_clamps_points_outside_the_bound():
    encoding = HashGridEncoding(n_levels=4, log2_hashmap_size=10, base_resolution=4, finest_resolution=32)
    with torch.no_grad():
        encoding.params.uniform_(-1, 1)
    outside = torch.tensor([[3.0, 0.2, -5.0]], requires_grad=True)
    torch.testing.assert_close(encoding(outside), encoding(torch.tensor([[1.0, 0.2, -1.0]])))
    encoding(outside).sum().backward()
    assert outside.grad[0, 0] == 0 and outside.grad[0, 2] == 0 and outside.grad[0, 1] != 0


def test_encodings_reject_unknown_options():
    with pytest.raises(ValueError, match="backend"):
        HashGridEncoding(backend="tcnn")
    with pytest.raises(ValueError, match="combine"):
        TriplaneEncoding(combine="mean")


@pytest.mark.skipif(CUDA_AND_TCNN, reason="tinycudann and CUDA are both present")
def test_cuda_backend_without_tinycudann_or_cuda_raises():
    with pytest.raises(RuntimeError, match=r"backend='cuda' needs tinycudann and CUDA; missing: "):
        HashGridEncoding(n_levels=2, log2_hashmap_size=8, backend="cuda")


@pytest.mark.gpu
@pytest.mark.skipif(not CUDA_AND_TCNN, reason="needs CUDA and tinycudann")
def test_tinycudann_matches_reference():
    encoding = HashGridEncoding(n_levels=8, log2_hashmap_size=12, base_resolution=4, finest_resolution=256).cuda()
    with torch.no_grad():
        encoding.params.uniform_(-1, 1)
    points = (torch.rand(4096, 3, device="cuda") * 2.2 - 1.1).requires_grad_()
    tcnn_features = encoding(points)
    encoding.backend = "torch"
    torch.testing.assert_close(tcnn_features, encoding(points), atol=1e-4, rtol=0)
    torch.testing.assert_close(tcnn_features, _reference(encoding, points), atol=1e-4, rtol=0)
