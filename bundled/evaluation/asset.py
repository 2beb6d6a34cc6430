"""A finished run's exported asset (`model.glb`), loaded into our world frame and rendered the way
the ground truth is (`bundled.world.render`: Lambertian under the camera-following light, white
background, 2x2 supersampled), so that differences measure the asset, not the renderer."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
import trimesh
from torch import Tensor
from trimesh.visual import TextureVisuals

from bundled.world.render import WORLD_LIGHT
from framework.cameras.camera import CameraBatch
from framework.export.mesh_io import load_mesh_zup
from framework.renderers.mesh_raster import MeshRasterizer, clip_positions
from framework.renderers.textured_mesh import two_sided_normals


@dataclass
class MeshAsset:
    """A triangle mesh in world coordinates (+z up) with either vertex colours or a texture.

    Attributes:
        vertices: [V, 3] positions.
        faces: [F, 3] vertex indices.
        colours: [V, 3] albedo in [0, 1], or None when textured.
        uvs: [V, 2] texture coordinates (origin at the texture's bottom left), or None.
        texture: [T_h, T_w, 3] albedo in [0, 1] (row 0 = top), or None.
    """

    vertices: Tensor
    faces: Tensor
    colours: Tensor | None = None
    uvs: Tensor | None = None
    texture: Tensor | None = None

    def __post_init__(self) -> None:
        if (self.colours is None) == (self.texture is None):
            raise ValueError("a MeshAsset needs exactly one of colours or texture")
        if self.texture is not None and self.uvs is None:
            raise ValueError("a textured MeshAsset needs uvs")


def _texture_of(mesh: trimesh.Trimesh) -> tuple[Tensor, Tensor] | None:
    """(uvs [V, 2], texture [T_h, T_w, 3]) of a mesh with an image texture, else None."""
    visual = mesh.visual
    if not isinstance(visual, TextureVisuals) or visual.uv is None or visual.material is None:
        return None
    image = getattr(visual.material, "baseColorTexture", None) or getattr(visual.material, "image", None)
    if image is None:
        return None
    texture = torch.from_numpy(np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0)
    factor = getattr(visual.material, "baseColorFactor", None)
    if factor is not None:  # glTF: base colour = texture x factor
        texture = texture * torch.as_tensor(np.asarray(factor[:3], dtype=np.float32) / 255.0)
    return torch.as_tensor(np.asarray(visual.uv), dtype=torch.float32), texture


def load_asset(path: str | Path) -> MeshAsset:
    """Load an exported GLB or OBJ (+Y up) into the world frame with `load_mesh_zup`, keeping
    an image texture when there is one and vertex colours otherwise."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"asset {path} does not exist")
    mesh = load_mesh_zup(path)
    if len(mesh.faces) == 0:
        raise ValueError(f"asset {path} holds no triangles")
    vertices = torch.as_tensor(np.asarray(mesh.vertices), dtype=torch.float32)
    faces = torch.as_tensor(np.asarray(mesh.faces), dtype=torch.long)
    textured = _texture_of(mesh)
    if textured is not None:
        return MeshAsset(vertices, faces, uvs=textured[0], texture=textured[1])
    colours = torch.as_tensor(np.asarray(mesh.visual.vertex_colors)[:, :3], dtype=torch.float32) / 255.0
    return MeshAsset(vertices, faces, colours=colours)


@torch.no_grad()
def render_asset(asset: MeshAsset, cameras: CameraBatch, supersample: int = 2) -> tuple[Tensor, Tensor]:
    """Render like `render_object`: RGB [B, H, W, 3] in [0, 1] on white and coverage [B, H, W].

    Shading is the world's light (`WORLD_LIGHT`) on smooth vertex normals, the light stage 2 of
    DreamGaussian trains its texture under with the bundled prior; two-sided (`two_sided_normals`),
    so inconsistent windings in generated meshes do not count as colour errors.
    """
    fine = cameras.to("cpu").with_resolution(cameras.height * supersample, cameras.width * supersample)
    rasterizer = MeshRasterizer(backend="torch")
    rast = rasterizer.rasterize(clip_positions(asset.vertices, fine), asset.faces, (fine.height, fine.width))
    covered = rast[..., 3] > 0
    if asset.texture is not None:
        uv = rasterizer.interpolate(asset.uvs, rast, asset.faces)  # [B, h, w, 2], v up from the bottom row
        v_down = torch.stack([uv[..., 0], 1 - uv[..., 1]], dim=-1)
        albedo = rasterizer.texture(asset.texture[None], v_down, boundary_mode="clamp")
    else:
        albedo = rasterizer.interpolate(asset.colours, rast, asset.faces)
    normals = two_sided_normals(asset.vertices, asset.faces, rast, fine, rasterizer)
    lit = (albedo * WORLD_LIGHT.brightness(normals, WORLD_LIGHT.directions(fine)[:, None, None, :])).clamp(0.0, 1.0)
    rgb = torch.where(covered[..., None], lit, torch.ones_like(albedo))
    rgb = F.avg_pool2d(rgb.permute(0, 3, 1, 2), supersample).permute(0, 2, 3, 1)
    mask = F.avg_pool2d(covered[:, None].float(), supersample)[:, 0]
    return rgb, mask
