"""Regularisers on a render dict. Each is a callable `(render, batch) -> scalar` (losses see the
batch, hence the reference view of image-to-3D); the system weighs them with (scheduled) weights
from the config."""

from __future__ import annotations

from torch import Tensor

from framework.cameras.batch import Batch
from framework.losses.mesh_regularisers import initial_shape_hold, laplacian_smoothness, normal_consistency, sdf_sign_entropy


class OpacitySparsity:
    """Mean of sqrt(opacity^2 + 0.01): pushes pixels to empty unless the prior wants them."""

    def __call__(self, render: dict[str, Tensor], batch: Batch) -> Tensor:
        return (render["opacity"] ** 2 + 0.01).sqrt().mean()


class Orientation:
    """Ref-NeRF's orientation loss: penalise visible normals that face away from the camera,
    sum_i w_i max(0, n_i . d)^2, averaged over rays."""

    def __call__(self, render: dict[str, Tensor], batch: Batch) -> Tensor:
        if "sample_normals" not in render:
            raise KeyError("the orientation loss needs per-sample normals: use a material that shades with normals")
        facing_away = (render["sample_normals"] * render["sample_directions"]).sum(-1).clamp(min=0.0)
        n_rays = render["opacity"].numel()
        return (render["sample_weights"] * facing_away**2).sum() / n_rays


class DepthVariance:
    """Variance of the sample depths along each ray (weighted): favours crisp surfaces."""

    def __call__(self, render: dict[str, Tensor], batch: Batch) -> Tensor:
        return render["z_variance"].mean()


class LaplacianSmoothness:
    """A mesh renderer's surface (`info`): mean squared uniform Laplacian of its vertices."""

    def __call__(self, render: dict, batch: Batch) -> Tensor:
        return laplacian_smoothness(render["info"]["vertices"], render["info"]["faces"])


class NormalConsistency:
    """A mesh renderer's surface: 1 - cos between the normals of faces sharing an edge."""

    def __call__(self, render: dict, batch: Batch) -> Tensor:
        return normal_consistency(render["info"]["vertices"], render["info"]["faces"])


class SdfSignEntropy:
    """A DMTet's grid SDF: cross-entropy of the signs across surface-crossing edges (removes
    floaters and inner faces)."""

    def __call__(self, render: dict, batch: Batch) -> Tensor:
        return sdf_sign_entropy(render["info"]["sdf"], render["info"]["edges"])


class InitialShapeHold:
    """A DMTet's grid SDF against the shape it started from (`initial_shape_hold`): vertices more
    than `margin` from the starting surface are pulled back to their side of it.

    Args:
        margin: world units within which the surface moves freely (0.05: under one cell of a
            32-cell grid over [-1, 1]).
    """

    def __init__(self, margin: float = 0.05) -> None:
        if margin < 0:
            raise ValueError(f"InitialShapeHold margin={margin}: must be >= 0")
        self.margin = margin

    def __call__(self, render: dict, batch: Batch) -> Tensor:
        initial_sdf = render["info"].get("initial_sdf")
        if initial_sdf is None:
            raise ValueError("initial_shape_hold needs a DMTet built with an initial shape (representation.init ellipsoid, mesh or shape), not init=none")
        return initial_shape_hold(render["info"]["sdf"], initial_sdf, self.margin)
