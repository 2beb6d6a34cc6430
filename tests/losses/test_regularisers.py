"""framework.losses.regularisers' mesh terms: each reads a mesh renderer's `info` (the surface and
the DMTet's grid SDF) and is the mesh_regularisers function of it, with its gradient."""

from __future__ import annotations

import pytest
import torch

from framework.losses.mesh_regularisers import initial_shape_hold, laplacian_smoothness, normal_consistency, sdf_sign_entropy
from framework.losses.regularisers import InitialShapeHold, LaplacianSmoothness, NormalConsistency, SdfSignEntropy
from framework.representations.dmtet import DMTet


@pytest.mark.parametrize(
    ("loss", "function", "fields"),
    [
        (LaplacianSmoothness(), laplacian_smoothness, ("vertices", "faces")),
        (NormalConsistency(), normal_consistency, ("vertices", "faces")),
        (SdfSignEntropy(), sdf_sign_entropy, ("sdf", "edges")),
    ],
    ids=["laplacian", "normal-consistency", "sdf-sign-entropy"],
)
def test_mesh_losses_read_the_render_info(loss, function, fields) -> None:
    dmtet = DMTet(resolution=6, encoding=None, init_radii=(0.5, 0.4, 0.3))
    with torch.no_grad():
        dmtet.vertex_deformation.normal_(generator=torch.Generator().manual_seed(0))  # a bumpy surface: no term is 0
    vertices, faces, sdf = dmtet.surface_with_sdf()
    info = {"vertices": vertices, "faces": faces, "sdf": sdf, "edges": dmtet.edges}
    value = loss({"rgb": torch.zeros(1, 2, 2, 3), "info": info}, None)
    torch.testing.assert_close(value, function(*(info[name] for name in fields)), rtol=0, atol=0)
    assert value.item() > 0
    value.backward()
    assert dmtet.vertex_sdf.grad is not None and dmtet.vertex_sdf.grad.abs().sum() > 0


def test_initial_shape_hold_reads_the_dmtets_starting_sdf() -> None:
    """The DMTet keeps the SDF it started from (the renderer passes it in `info`); a shrunken grid is pulled back out."""
    dmtet = DMTet(resolution=8, encoding=None, init_radii=(0.6, 0.6, 0.6))
    torch.testing.assert_close(dmtet.initial_sdf, dmtet.vertex_sdf.detach())
    with torch.no_grad():
        dmtet.vertex_sdf.add_(0.3)  # every vertex 0.3 further out: the sphere shrinks to radius 0.3
    vertices, faces, sdf = dmtet.surface_with_sdf()
    info = {"vertices": vertices, "faces": faces, "sdf": sdf, "edges": dmtet.edges, "initial_sdf": dmtet.initial_sdf}
    value = InitialShapeHold(margin=0.05)({"info": info}, None)
    torch.testing.assert_close(value, initial_shape_hold(sdf, dmtet.initial_sdf, 0.05), rtol=0, atol=0)
    assert value.item() > 0
    value.backward()
    assert (dmtet.vertex_sdf.grad >= 0).all() and dmtet.vertex_sdf.grad.sum() > 0  # descent lowers the SDF: the sphere regrows


def test_initial_shape_hold_needs_a_starting_shape() -> None:
    dmtet = DMTet(resolution=4, encoding=None, init="none")
    assert dmtet.initial_sdf is None
    info = {"sdf": dmtet.vertex_sdf, "edges": dmtet.edges, "initial_sdf": dmtet.initial_sdf}
    with pytest.raises(ValueError, match="init=none"):
        InitialShapeHold()({"info": info}, None)
    with pytest.raises(ValueError, match="margin=-1"):
        InitialShapeHold(margin=-1)
