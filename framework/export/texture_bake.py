"""UV unwrapping, texture baking from multi-view images, and textured OBJ/GLB export.

DreamGaussian's mesh stage needs a UV-textured mesh whose texture starts from what the
Gaussians look like: `unwrap_uv` cuts the mesh into charts with xatlas, `bake_texture`
back-projects rendered views onto the charts, and `write_textured_mesh` writes the result
through `framework.export.mesh_io`.

UV convention (OBJ's, as in `mesh_io.Texture`): the origin is the texture image's bottom-left
corner, and texture images are [T, T, 3] with row 0 at the top. Rasterizing the mesh at clip
position (2u - 1, 2v - 1) with `MeshRasterizer` (row 0 at clip y = +1) therefore lands every texel
exactly on its row of the texture image.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
import xatlas
from scipy import ndimage
from torch import Tensor

from framework.cameras.camera import CameraBatch
from framework.export.mesh_io import Texture, write_glb, write_obj
from framework.renderers.mesh_raster import MeshRasterizer, clip_positions, face_normals, vertex_normals
from framework.representations.lights import CameraLight


def unwrap_uv(vertices: Tensor, faces: Tensor, texture_size: int = 512, padding: int = 2) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Cut a mesh into UV charts packed into one square atlas (xatlas).

    Vertices on chart seams are duplicated, so every output vertex has one UV.

    Args:
        vertices: [V, 3] positions.
        faces: [F, 3] vertex indices.
        texture_size: texture resolution the charts are packed for.
        padding: texels kept free around each chart, so bilinear lookups stay inside it.

    Returns:
        vertices: [V', 3] `vertices[vmapping]` (differentiable in `vertices`).
        faces: [F, 3] long, the input faces in the same order, indexing the new vertices.
        uv: [V', 2] float in [0, 1], origin at the texture's bottom-left.
        vmapping: [V'] long, the input vertex each output vertex copies.
    """
    atlas = xatlas.Atlas()
    atlas.add_mesh(vertices.detach().cpu().numpy().astype(np.float32), faces.cpu().numpy().astype(np.uint32))
    pack = xatlas.PackOptions()
    pack.resolution = texture_size
    pack.padding = padding
    atlas.generate(pack_options=pack)
    vmapping, indices, uv = atlas.get_mesh(0)
    vmapping = torch.from_numpy(vmapping.astype(np.int64)).to(vertices.device)
    new_faces = torch.from_numpy(indices.astype(np.int64)).to(vertices.device)
    return vertices[vmapping], new_faces, torch.from_numpy(uv).to(vertices.device), vmapping


def _fill_from_nearest(texture: Tensor, filled: Tensor) -> Tensor:
    """Give every unfilled texel [T, T] the colour of its nearest filled texel, so seams and the
    atlas's empty space never show background under bilinear filtering or mipmaps."""
    _, nearest = ndimage.distance_transform_edt(~filled.cpu().numpy(), return_indices=True)
    rows, cols = (torch.from_numpy(index).to(texture.device) for index in nearest)
    return texture[rows, cols]


@torch.no_grad()
def bake_texture(
    vertices: Tensor,
    faces: Tensor,
    uv: Tensor,
    cameras: CameraBatch,
    images: Tensor,
    masks: Tensor | None = None,
    texture_size: int = 512,
    min_cosine: float = 0.1,
    depth_tolerance: float = 0.01,
    rasterizer: MeshRasterizer | None = None,
    light: CameraLight | None = None,
) -> tuple[Tensor, Tensor]:
    """Back-project views onto a UV-mapped mesh.

    Each texel's surface point and face normal come from rasterizing the mesh in UV space. A view
    contributes to a texel when the point projects inside the image (and its mask), faces the
    camera by more than `min_cosine`, and is not hidden: its camera depth is at most
    `1 + depth_tolerance` times the depth the view's own rasterization sees at that pixel.
    Contributions are averaged with the cosine as weight, so grazing views count little; texels
    no view sees take the colour of the nearest seen texel. Given the `light` the views were lit
    by, each view's colour is first divided by the brightness that light gives the texel in that
    view (smooth normals), so the texture holds albedo rather than the views' lighting.

    Args:
        vertices: [V, 3] world positions.
        faces: [F, 3] vertex indices, counter-clockwise seen from outside (that decides facing).
        uv: [V, 2] texture coordinates (from `unwrap_uv`).
        cameras: B cameras at the images' resolution.
        images: [B, H, W, 3] colours in [0, 1], row 0 at the top.
        masks: [B, H, W] foreground (bool, or float > 0.5), or None to trust every pixel.
        texture_size: T.
        min_cosine: least cosine between face normal and view direction a view needs.
        depth_tolerance: relative slack of the visibility test.
        rasterizer: the rasterizer to use; a default `MeshRasterizer()` if None.
        light: the light the views were rendered under, divided out; None keeps their colours.

    Returns:
        texture: [T, T, 3] float in [0, 1], row 0 at the top.
        filled: [T, T] bool, texels some view saw.
    """
    if images.shape[:3] != (cameras.batch_size, cameras.height, cameras.width):
        raise ValueError(
            f"images {tuple(images.shape)} do not match {cameras.batch_size} cameras of {cameras.height}x{cameras.width}"
        )
    rasterizer = rasterizer or MeshRasterizer()
    device = images.device
    vertices, faces, uv, cameras = vertices.to(device, torch.float32), faces.to(device).long(), uv.to(device, torch.float32), cameras.to(device)

    # Texels: the surface point and face normal under each texel centre.
    uv_clip = torch.cat([uv * 2 - 1, torch.zeros_like(uv[:, :1]), torch.ones_like(uv[:, :1])], dim=-1)[None]
    uv_rast = rasterizer.rasterize(uv_clip, faces, (texture_size, texture_size))
    texel_face = uv_rast[0, ..., 3].long() - 1
    on_surface = texel_face >= 0
    points = rasterizer.interpolate(vertices, uv_rast, faces)[0][on_surface]  # [N, 3]
    normals = F.normalize(face_normals(vertices, faces), dim=-1)[texel_face[on_surface]]
    if light is not None:
        smooth_normals = F.normalize(rasterizer.interpolate(vertex_normals(vertices, faces), uv_rast, faces)[0][on_surface], dim=-1)

    # Views: the depth each camera sees, to tell visible texels from hidden ones.
    view_clip = clip_positions(vertices, cameras)
    view_rast = rasterizer.rasterize(view_clip, faces, (cameras.height, cameras.width))
    view_depth = rasterizer.interpolate(view_clip[..., 3:], view_rast, faces)[..., 0]  # [B, H, W], 0 = background

    colour_sum = torch.zeros(points.shape[0], 3, device=device)
    weight_sum = torch.zeros(points.shape[0], device=device)
    for b in range(cameras.batch_size):
        camera = cameras.subset(slice(b, b + 1))
        clip = clip_positions(points, camera)[0]  # [N, 4]
        depth = clip[:, 3]
        ndc = clip[:, :2] / depth.clamp(min=1e-6)[:, None]
        image_uv = torch.stack([(ndc[:, 0] + 1) / 2, (1 - ndc[:, 1]) / 2], dim=-1)  # v down from row 0
        row = (image_uv[:, 1] * cameras.height).long().clamp(0, cameras.height - 1)
        col = (image_uv[:, 0] * cameras.width).long().clamp(0, cameras.width - 1)
        seen_depth = view_depth[b, row, col]
        visible = (depth > 0) & (ndc.abs() <= 1).all(-1) & (seen_depth > 0) & (depth <= seen_depth * (1 + depth_tolerance))
        if masks is not None:
            visible &= masks[b, row, col].float() > 0.5
        cosine = (normals * F.normalize(camera.position - points, dim=-1)).sum(-1)
        weight = torch.where(visible & (cosine > min_cosine), cosine, torch.zeros_like(cosine))
        colour = rasterizer.texture(images[b : b + 1].float(), image_uv[None, None], boundary_mode="clamp")[0, 0]
        if light is not None:
            colour = colour / light.brightness(smooth_normals, light.directions(camera))
        colour_sum += weight[:, None] * colour
        weight_sum += weight

    seen = weight_sum > 0
    if not seen.any():
        raise ValueError("bake_texture: no texel is visible in any view (check the cameras, masks and face winding)")
    texture = torch.zeros(texture_size, texture_size, 3, device=device)
    filled = torch.zeros(texture_size, texture_size, dtype=torch.bool, device=device)
    texture[on_surface] = colour_sum / weight_sum.clamp(min=1e-8)[:, None]
    filled[on_surface] = seen
    return _fill_from_nearest(texture, filled).clamp(0.0, 1.0), filled


def write_textured_mesh(export_dir: str | os.PathLike, vertices: Tensor, faces: Tensor, uv: Tensor, texture: Tensor, unlit: bool = False) -> dict[str, Path]:
    """Write `model.obj` + `model.mtl` + `model_albedo.png` and `model.glb` (+Y up), each atomically.

    Args:
        export_dir: the run's `export/` folder.
        vertices: [V, 3] world positions (z up).
        faces: [F, 3] vertex indices, counter-clockwise seen from outside.
        uv: [V, 2] texture coordinates, origin at the texture's bottom-left.
        texture: [T, T, 3] float albedo in [0, 1], row 0 at the top.
        unlit: the texture holds lit colours rather than albedo: the GLB's material is marked
            unlit (KHR_materials_unlit; OBJ has no such flag).

    Returns:
        Paths under the keys "obj", "mtl", "texture" and "glb".
    """
    export_dir = Path(export_dir)
    image = (texture.detach().clamp(0.0, 1.0) * 255).round().to(torch.uint8).cpu().numpy()
    mapped = Texture(uv=uv.detach().cpu().numpy().astype(np.float64), image=image)
    positions = vertices.detach().cpu().numpy().astype(np.float32)
    indices = faces.detach().cpu().numpy().astype(np.int64)
    paths = {
        "obj": export_dir / "model.obj",
        "mtl": export_dir / "model.mtl",
        "texture": export_dir / "model_albedo.png",
        "glb": export_dir / "model.glb",
    }
    write_obj(paths["obj"], positions, indices, texture=mapped, texture_name=paths["texture"].stem)
    write_glb(paths["glb"], positions, indices, texture=mapped, unlit=unlit)
    return paths
