"""The pure-torch tile rasterizer against gsplat's torch projection, a dense reference rasterizer,
gsplat's densification strategy and (on a GPU) gsplat's CUDA kernels."""

from __future__ import annotations

import pytest
import torch
from gsplat.strategy import DefaultStrategy

import framework.renderers.splatting as splatting
import framework.renderers.splatting_torch as splatting_torch
from framework.cameras.camera import CameraBatch
from framework.renderers.splatting import rasterize_gaussians
from framework.renderers.splatting_torch import intersect_tiles, project_gaussians
from tests.splatting_reference import project_reference, render_reference

WIDTH, HEIGHT = 40, 28  # neither a multiple of 16 nor of 12


def _cameras() -> tuple[torch.Tensor, torch.Tensor]:
    cameras = CameraBatch.from_orbit(
        torch.tensor([10.0, 35.0]), torch.tensor([0.0, 130.0]), torch.tensor([2.5, 2.2]), torch.tensor([45.0, 55.0]), HEIGHT, WIDTH
    )
    return cameras.world_to_camera_opencv(), cameras.intrinsics()


def _scene(n: int = 300, spread: float = 0.5, seed: int = 0, sh_degree: int | None = None) -> dict[str, torch.Tensor]:
    """Overlapping Gaussians around the origin; a few behind the first camera (it sits at
    x = 2.5 looking down -x), a few far off-screen, a few fully opaque (alpha hits 0.999)."""
    generator = torch.Generator().manual_seed(seed)
    means = torch.randn(n, 3, generator=generator) * spread
    means[:8, 0] += 3.5  # behind camera 0
    means[8:16, 1] += 6.0  # outside both images
    opacities = torch.rand(n, generator=generator) * 0.95 + 0.02
    opacities[16:24] = 1.0
    colors = torch.rand(n, 3, generator=generator) if sh_degree is None else torch.randn(n, (sh_degree + 1) ** 2, 3, generator=generator) * 0.3
    return {
        "means": means,
        "quats": torch.randn(n, 4, generator=generator),
        "scales": torch.rand(n, 3, generator=generator) * 0.1 + 0.02,
        "opacities": opacities,
        "colors": colors,
    }


def test_projection_matches_gsplat_torch_reference():
    scene = _scene()
    viewmats, Ks = _cameras()
    radii, means2d, depths, conics = project_gaussians(scene["means"], scene["quats"], scene["scales"], viewmats, Ks, WIDTH, HEIGHT)
    ref_radii, ref_means2d, ref_depths, ref_conics = project_reference(scene["means"], scene["quats"], scene["scales"], viewmats, Ks, WIDTH, HEIGHT)
    visible = (ref_radii > 0).all(dim=-1)
    assert radii.dtype == torch.int32 and radii.shape == (2, 300, 2)
    assert torch.equal(radii, ref_radii)
    assert 0 < visible.sum() < visible.numel()  # something is culled: behind, off-screen
    torch.testing.assert_close(means2d[visible], ref_means2d[visible], rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(depths[visible], ref_depths[visible])
    torch.testing.assert_close(conics[visible], ref_conics[visible], rtol=1e-4, atol=1e-6)
    assert (means2d[~visible] == 0).all() and (depths[~visible] == 0).all() and (conics[~visible] == 0).all()


def test_opacity_aware_radii_and_culling():
    """As gsplat's CUDA kernel: the box shrinks to where alpha reaches 1/255, faint Gaussians and
    those within radius_clip are culled."""
    scene = _scene()
    viewmats, Ks = _cameras()
    opacities = scene["opacities"].clone()
    opacities[30:40] = 0.5 / 255
    args = (scene["means"], scene["quats"], scene["scales"], viewmats, Ks, WIDTH, HEIGHT)
    full = project_gaussians(*args)[0]
    aware = project_gaussians(*args, opacities=opacities)[0]
    assert (aware <= full).all() and (aware < full).any()
    assert (aware[:, 30:40] == 0).all()
    clipped = project_gaussians(*args, opacities=opacities, radius_clip=3.0)[0]
    kept = (clipped > 0).all(dim=-1)
    assert kept.any() and (clipped[kept] > 3).any(dim=-1).all()
    assert ((aware > 0).all(dim=-1) & (aware <= 3).all(dim=-1) & ~kept).any()


def test_intersections_are_sorted_by_camera_tile_and_depth():
    scene = _scene()
    viewmats, Ks = _cameras()
    radii, means2d, depths, _ = project_gaussians(scene["means"], scene["quats"], scene["scales"], viewmats, Ks, WIDTH, HEIGHT, scene["opacities"])
    tiles_per_gauss, isect_ids, flatten_ids, offsets = intersect_tiles(means2d, radii, depths, 16, 3, 2)
    assert offsets.shape == (2, 2, 3) and tiles_per_gauss.shape == (2, 300)
    assert int(tiles_per_gauss.sum()) == isect_ids.numel() == flatten_ids.numel()
    assert (isect_ids[1:] >= isect_ids[:-1]).all()
    tile_key = isect_ids >> 32
    same_tile = tile_key[1:] == tile_key[:-1]
    depth = depths.flatten()[flatten_ids.long()]
    assert (depth[1:][same_tile] >= depth[:-1][same_tile]).all()
    assert (radii.flatten(0, 1)[flatten_ids.long()] > 0).all()


@pytest.mark.parametrize(
    "render_mode, tile_size, sh_degree, backgrounds",
    [
        ("RGB", 16, None, True),
        ("RGB+ED", 12, None, False),
        ("D", 8, None, False),
        ("RGB+D", 16, 2, True),
        ("ED", 16, 1, False),
    ],
)
def test_images_match_dense_reference(render_mode, tile_size, sh_degree, backgrounds, monkeypatch):
    monkeypatch.setattr(splatting_torch, "SLAB_LENGTH", 16)  # several slabs per tile: the carry
    scene = _scene(sh_degree=sh_degree)
    viewmats, Ks = _cameras()
    bg = torch.tensor([[0.2, 0.5, 0.9], [1.0, 0.0, 0.3]]) if backgrounds else None
    kwargs = dict(sh_degree=sh_degree, backgrounds=bg, render_mode=render_mode)
    image, alpha, info = rasterize_gaussians(*scene.values(), viewmats, Ks, WIDTH, HEIGHT, tile_size=tile_size, backend="torch", **kwargs)
    ref_image, ref_alpha = render_reference(*scene.values(), viewmats, Ks, WIDTH, HEIGHT, **kwargs)
    channels = {"RGB": 3, "D": 1, "ED": 1, "RGB+D": 4, "RGB+ED": 4}[render_mode]
    assert image.shape == (2, HEIGHT, WIDTH, channels) and alpha.shape == (2, HEIGHT, WIDTH, 1)
    assert (alpha > 0.999).any() and (alpha == 0).any()  # saturated pixels and empty ones
    torch.testing.assert_close(alpha, ref_alpha, rtol=0, atol=1e-5)
    torch.testing.assert_close(image, ref_image, rtol=1e-4, atol=1e-4)
    assert info["tile_size"] == tile_size and info["isect_offsets"].shape == (2, -(-HEIGHT // tile_size), -(-WIDTH // tile_size))


def test_saturated_tiles_stop_early_and_match_dense_reference(monkeypatch):
    """An opaque wall in front of camera 0 saturates its tiles: the Gaussians behind are skipped."""
    monkeypatch.setattr(splatting_torch, "SLAB_LENGTH", 16)
    composited = []
    composite = splatting_torch._composite_slab

    def counting(*args):
        composited.append(int(args[3].sum()))  # lengths: list entries in this slab
        return composite(*args)

    monkeypatch.setattr(splatting_torch, "_composite_slab", counting)
    scene = _scene(n=200, spread=0.3, seed=4)
    grid = torch.stack(torch.meshgrid(torch.linspace(-1.2, 1.2, 9), torch.linspace(-0.9, 0.9, 7), indexing="ij"), -1).view(-1, 2)
    wall = {
        "means": torch.cat([torch.cat([torch.full((63, 1), depth), grid], dim=-1) for depth in (1.1, 1.2)]),
        "quats": torch.tensor([[1.0, 0.0, 0.0, 0.0]]).expand(126, 4),
        "scales": torch.tensor([[0.02, 0.3, 0.3]]).expand(126, 3),
        "opacities": torch.full((126,), 0.99),
        "colors": torch.rand(126, 3),
    }
    scene = {name: torch.cat([wall[name], value]) for name, value in scene.items()}
    viewmats, Ks = _cameras()
    image, alpha, info = rasterize_gaussians(*scene.values(), viewmats, Ks, WIDTH, HEIGHT, backend="torch")
    ref_image, ref_alpha = render_reference(*scene.values(), viewmats, Ks, WIDTH, HEIGHT)
    assert (alpha[0] > 0.999).all()
    assert sum(composited) < info["flatten_ids"].numel()
    torch.testing.assert_close(alpha, ref_alpha, rtol=0, atol=1e-5)
    torch.testing.assert_close(image, ref_image, rtol=1e-4, atol=1e-4)


def test_per_camera_colors_match_dense_reference():
    scene = _scene(n=120, seed=3)
    viewmats, Ks = _cameras()
    scene["colors"] = torch.rand(2, 120, 5)
    image, alpha, _ = rasterize_gaussians(*scene.values(), viewmats, Ks, WIDTH, HEIGHT, backend="torch")
    ref_image, ref_alpha = render_reference(*scene.values(), viewmats, Ks, WIDTH, HEIGHT)
    torch.testing.assert_close(image, ref_image, rtol=1e-4, atol=1e-5)


def test_gradients_match_dense_reference(monkeypatch):
    monkeypatch.setattr(splatting_torch, "SLAB_LENGTH", 16)
    scene = _scene(n=200, seed=1)
    viewmats, Ks = _cameras()
    weights = torch.rand(2, HEIGHT, WIDTH, 4, generator=torch.Generator().manual_seed(5))
    grads = []
    for render in (
        lambda *args: rasterize_gaussians(*args, render_mode="RGB+ED", backend="torch")[:2],
        lambda *args: render_reference(*args, render_mode="RGB+ED"),
    ):
        params = {name: value.clone().requires_grad_() for name, value in scene.items()}
        image, alpha = render(*params.values(), viewmats, Ks, WIDTH, HEIGHT)
        ((image * weights).sum() + alpha.sum()).backward()
        grads.append({name: value.grad for name, value in params.items()})
    for name in scene:
        ours, reference = grads[0][name], grads[1][name]
        assert torch.isfinite(ours).all(), name
        assert reference.abs().max() > 0, name
        torch.testing.assert_close(ours, reference, rtol=1e-3, atol=1e-3 * reference.abs().max().item(), msg=name)


def test_means2d_grad_is_the_2d_positional_gradient():
    scene = _scene()
    viewmats, Ks = _cameras()
    means = scene["means"].clone().requires_grad_()
    image, alpha, info = rasterize_gaussians(means, *list(scene.values())[1:], viewmats, Ks, WIDTH, HEIGHT, backend="torch")
    info["means2d"].retain_grad()
    image.sum().backward()
    grad2d = info["means2d"].grad
    visible = (info["radii"] > 0).all(dim=-1)
    assert grad2d.shape == (2, 300, 2)
    assert (grad2d[visible].norm(dim=-1) > 0).float().mean() > 0.5
    assert (grad2d[~visible] == 0).all()
    assert means.grad is not None and torch.isfinite(means.grad).all()
    assert info["width"] == WIDTH and info["height"] == HEIGHT and info["n_cameras"] == 2
    assert info["gaussian_ids"] is None and info["opacities"].shape == (2, 300)


def test_default_strategy_densifies_from_torch_backend_info():
    """One plain step accumulates the 2D gradients; the next refines (gsplat's strategy on CPU)."""
    scene = _scene(n=150, seed=2)
    viewmats, Ks = _cameras()
    params = torch.nn.ParameterDict(
        {
            "means": scene["means"],
            "scales": scene["scales"].log(),
            "quats": scene["quats"],
            "opacities": torch.logit(scene["opacities"].clamp(0.02, 0.98)),
            "colors": scene["colors"],
        }
    )
    optimizers = {name: torch.optim.Adam([param], lr=1e-3) for name, param in params.items()}
    strategy = DefaultStrategy(refine_start_iter=0, refine_every=2, grow_grad2d=1e-6, verbose=False)
    strategy.check_sanity(params, optimizers)
    state = strategy.initialize_state(scene_scale=1.0)
    for step in range(3):
        image, alpha, info = rasterize_gaussians(
            params["means"], params["quats"], params["scales"].exp(), torch.sigmoid(params["opacities"]), params["colors"],
            viewmats, Ks, WIDTH, HEIGHT, backend="torch",
        )
        strategy.step_pre_backward(params, optimizers, state, step, info)
        ((image - 0.5) ** 2).mean().backward()
        n_before = len(params["means"])
        strategy.step_post_backward(params, optimizers, state, step, info, packed=False)
        if step < 2:
            assert state["count"].sum() > 0 and state["grad2d"].sum() > 0
            assert len(params["means"]) == n_before
        else:
            assert len(params["means"]) != n_before  # grown (and perhaps pruned)
        for optimizer in optimizers.values():
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
    assert optimizers["means"].state[params["means"]]["exp_avg"].shape == params["means"].shape


class _CudaLooking(torch.Tensor):
    """A CPU tensor that says it is on CUDA: `auto`'s dispatch without a GPU."""

    @property
    def is_cuda(self) -> bool:
        return True


def test_backend_selection_and_input_errors(monkeypatch):
    """`auto` runs our torch rasterizer on CPU tensors and gsplat's kernels on CUDA ones, `torch`
    always runs ours, `cuda` on CPU tensors is a one-line error; bad inputs fail before either."""
    scene = _scene(n=20)
    viewmats, Ks = _cameras()
    args = list(scene.values()) + [viewmats, Ks, WIDTH, HEIGHT]
    calls = []

    def recorder(name):
        def record(*positional, **options):
            calls.append((name, positional, options))
            return name, None, {}

        return record

    monkeypatch.setattr(splatting, "rasterization", recorder("cuda"))
    monkeypatch.setattr(splatting, "rasterize_gaussians_torch", recorder("torch"))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # as on a GPU machine: the tensors decide
    backgrounds = torch.rand(2, 3)
    assert rasterize_gaussians(*args, tile_size=8, backgrounds=backgrounds, render_mode="RGB+ED")[0] == "torch"
    [(name, positional, options)] = calls
    assert name == "torch" and all(a is b for a, b in zip(positional, args, strict=True))
    assert options["tile_size"] == 8 and options["backgrounds"] is backgrounds and options["render_mode"] == "RGB+ED"
    assert rasterize_gaussians(*args, backend="torch")[0] == "torch"

    cuda_looking = [scene["means"].as_subclass(_CudaLooking)] + args[1:]
    calls.clear()
    assert rasterize_gaussians(*cuda_looking, tile_size=8)[0] == "cuda"
    assert rasterize_gaussians(*cuda_looking, backend="cuda")[0] == "cuda"
    assert rasterize_gaussians(*cuda_looking, backend="torch")[0] == "torch"
    assert [name for name, _, _ in calls] == ["cuda", "cuda", "torch"]
    assert calls[0][2]["packed"] is False and calls[0][2]["rasterize_mode"] == "classic" and calls[0][2]["tile_size"] == 8

    calls.clear()
    for available, inputs in ((True, args), (False, args), (False, cuda_looking)):  # CPU tensors, or no CUDA
        monkeypatch.setattr(torch.cuda, "is_available", lambda available=available: available)
        with pytest.raises(ValueError, match="backend=cuda") as error:
            rasterize_gaussians(*inputs, backend="cuda")
        assert "\n" not in str(error.value) and "backend=torch" in str(error.value)
    assert calls == []
    with pytest.raises(ValueError, match="backend must be one of"):
        rasterize_gaussians(*args, backend="metal")
    bad = {
        "quats": (1, scene["quats"][:, :3], r"quats must be \[N, 4\].*\[20, 3\]"),
        "opacities": (3, scene["opacities"][:, None], r"opacities must be \[N\]"),
        "colors": (4, torch.rand(19, 3), r"colors must be"),
        "Ks": (6, Ks[:1], r"Ks must be \[C, 3, 3\] with C = 2"),
        "width": (7, 0, "width and height must be positive"),
    }
    for name, (position, value, message) in bad.items():
        broken = list(args)
        broken[position] = value
        with pytest.raises(ValueError, match=message):
            rasterize_gaussians(*broken)
    with pytest.raises(ValueError, match="render_mode"):
        rasterize_gaussians(*args, render_mode="RGBD")
    with pytest.raises(ValueError, match=r"K >= 9"):
        rasterize_gaussians(*args[:4], torch.rand(20, 4, 3), *args[5:], sh_degree=2)
    with pytest.raises(ValueError, match="backgrounds"):
        rasterize_gaussians(*args, backgrounds=torch.rand(2, 4))
    assert calls == []  # every bad input is caught here, before either backend runs


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA for gsplat's kernels")
def test_torch_backend_matches_gsplat_cuda():
    scene = _scene(n=400, sh_degree=1)
    viewmats, Ks = _cameras()
    kwargs = dict(sh_degree=1, render_mode="RGB+ED", backgrounds=torch.tensor([[0.1, 0.2, 0.3], [0.3, 0.2, 0.1]]))
    outputs = {}
    for backend, device in (("torch", "cpu"), ("cuda", "cuda")):
        params = {name: value.detach().to(device).requires_grad_() for name, value in scene.items()}  # leaves on both devices
        tensors = [viewmats.to(device), Ks.to(device)]
        kw = {**kwargs, "backgrounds": kwargs["backgrounds"].to(device)}
        image, alpha, info = rasterize_gaussians(*params.values(), *tensors, WIDTH, HEIGHT, backend=backend, **kw)
        (image.sum() + alpha.sum()).backward()
        outputs[backend] = (image.cpu(), alpha.cpu(), info["radii"].cpu(), {k: v.grad.cpu() for k, v in params.items()})
    (image, alpha, radii, grads), (ref_image, ref_alpha, ref_radii, ref_grads) = outputs["torch"], outputs["cuda"]
    torch.testing.assert_close(alpha, ref_alpha, rtol=0, atol=1e-4)
    torch.testing.assert_close(image, ref_image, rtol=1e-3, atol=1e-3)
    assert (radii != ref_radii).any(dim=-1).float().mean() < 0.01  # ceil() of float maths may differ by one
    for name in grads:  # gsplat's backward re-derives transmittance by division: compare in norm
        error = (grads[name] - ref_grads[name]).norm() / ref_grads[name].norm()
        assert error < 2e-2, (name, error)
