"""framework.losses.regularisers' mesh terms: each reads a mesh renderer's `info` (the surface and
the DMTet's grid SDF) and is the mesh_regularisers function of it, with its gradient."""

from __future__ import annotations

import pytest
import torch

from framework.losses.mesh_regularisers import laplacian_smoothness, normal_consistency, sdf_sign_entropy
from framework.losses.regularisers import LaplacianSmoothness, NormalConsistency, SdfSignEntropy
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
