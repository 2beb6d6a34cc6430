"""The true object of a prompt, written to disk from the evaluation views: what other tools and
people compare generated assets with."""

from __future__ import annotations

import json
from pathlib import Path

from bundled.evaluation.views import cameras_to_json, evaluation_cameras
from bundled.world.objects import OBJECTS, parse_prompt
from bundled.world.render import object_mesh, render_object
from framework.export.mesh_io import write_obj
from framework.utils.atomic import atomic_path
from framework.utils.images import save_png


def write_ground_truth(
    prompt: str, n_views: int, out: str | Path, resolution: int = 64, mesh_resolution: int = 128
) -> None:
    """Write OUT/view_XX.png (shaded renders on white), OUT/mask_XX.png (coverage), OUT/cameras.json
    and OUT/mesh.obj (vertex-coloured, +Y up like every export; `load_mesh_zup` reads it back).

    Raises:
        ValueError: the prompt names no object of the bundled world.
    """
    colour, object_name = parse_prompt(prompt)
    out = Path(out)
    cameras = evaluation_cameras(n_views, resolution)
    rgb, mask = render_object(OBJECTS[object_name], colour, cameras)
    for i in range(n_views):
        save_png(out / f"view_{i:02d}.png", rgb[i])
        save_png(out / f"mask_{i:02d}.png", mask[i])
    index = {
        "prompt": prompt,
        "colour": colour,
        "object": object_name,
        "convention": (
            "world +z up, azimuth 0 = +x = the object's front; c2w is OpenGL camera-to-world; "
            "mesh.obj is +Y up like every export"
        ),
        "views": cameras_to_json(cameras),
    }
    with atomic_path(out / "cameras.json") as tmp:
        tmp.write_text(json.dumps(index, indent=2) + "\n")
    mesh = object_mesh(OBJECTS[object_name], colour, resolution=mesh_resolution)
    write_obj(out / "mesh.obj", mesh.vertices, mesh.faces, vertex_colors=mesh.visual.vertex_colors[:, :3] / 255.0)
