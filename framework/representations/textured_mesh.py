"""A triangle mesh with a UV albedo texture: DreamGaussian's stage-2 representation.

The texture is what stage 2 optimises; vertex offsets are optional (DreamGaussian can refine
geometry a little too). Topology and UVs are fixed buffers, so a checkpoint holds the whole mesh
and `empty` rebuilds a module of the right shapes before the state dict is loaded.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


class TexturedMesh(nn.Module):
    """Args:
    vertices: [V, 3] world positions (+z up).
    faces: [F, 3] vertex indices.
    uv: [V, 2] texture coordinates in [0, 1], origin at the texture's bottom-left.
    texture: [T, T, 3] albedo in [0, 1], row 0 at the top.
    optimize_vertices: learn per-vertex offsets as well.
    """

    def __init__(self, vertices: Tensor, faces: Tensor, uv: Tensor, texture: Tensor, optimize_vertices: bool = False) -> None:
        super().__init__()
        if vertices.ndim != 2 or vertices.shape[1] != 3 or uv.shape != (vertices.shape[0], 2):
            raise ValueError(f"vertices {tuple(vertices.shape)} and uv {tuple(uv.shape)}: need [V, 3] and [V, 2]")
        if faces.ndim != 2 or faces.shape[1] != 3:
            raise ValueError(f"faces must be [F, 3], got {tuple(faces.shape)}")
        if texture.ndim != 3 or texture.shape[2] != 3:
            raise ValueError(f"texture must be [T, T, 3], got {tuple(texture.shape)}")
        self.register_buffer("vertices", vertices.float().clone())
        self.register_buffer("faces", faces.long().clone())
        self.register_buffer("uv", uv.float().clone())
        self.texture = nn.Parameter(texture.float().clone())
        self.vertex_offsets = nn.Parameter(torch.zeros_like(self.vertices)) if optimize_vertices else None

    @classmethod
    def empty(cls, n_vertices: int, n_faces: int, texture_size: tuple[int, int], optimize_vertices: bool) -> "TexturedMesh":
        """A placeholder of the given sizes, to load a checkpoint's state dict into."""
        return cls(
            torch.zeros(n_vertices, 3),
            torch.zeros(n_faces, 3, dtype=torch.long),
            torch.zeros(n_vertices, 2),
            torch.zeros(*texture_size, 3),
            optimize_vertices,
        )

    def shape_state(self) -> dict[str, object]:
        """What `empty` needs to rebuild this mesh (stored in checkpoints)."""
        return {
            "n_vertices": self.vertices.shape[0],
            "n_faces": self.faces.shape[0],
            "texture_size": tuple(self.texture.shape[:2]),
            "optimize_vertices": self.vertex_offsets is not None,
        }

    def positions(self) -> Tensor:
        """[V, 3] vertex positions with the learnt offsets."""
        return self.vertices if self.vertex_offsets is None else self.vertices + self.vertex_offsets

    def albedo(self) -> Tensor:
        """[T, T, 3] the texture clamped to valid colours."""
        return self.texture.clamp(0.0, 1.0)
