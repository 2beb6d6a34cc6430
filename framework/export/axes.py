"""The one conversion between our z-up world and the +Y-up frame of glTF (and of our OBJ files).

Our world is right-handed with +z up and the object's front facing +x; glTF is right-handed with
+Y up and its assets face +Z. The cyclic permutation `(x, y, z) -> (y, z, x)` does both: up (+z)
becomes +Y, the front (+x) becomes +Z, and world +y becomes +X. A proper rotation keeps handedness
and face winding, so the same matrix maps points and normals alike.
"""

from __future__ import annotations

import numpy as np

Z_UP_TO_Y_UP = np.array(
    [
        [0.0, 1.0, 0.0],
        [0.0, 0.0, 1.0],
        [1.0, 0.0, 0.0],
    ]
)


def zup_to_yup(points: np.ndarray) -> np.ndarray:
    """Express our z-up points or normals in the +Y-up frame.

    Args:
        points: [..., 3] positions or directions in our world.

    Returns:
        [..., 3] the same vectors in the +Y-up frame, in the input's dtype.
    """
    points = np.asarray(points)
    return (points @ Z_UP_TO_Y_UP.T).astype(points.dtype, copy=False)


def yup_to_zup(points: np.ndarray) -> np.ndarray:
    """Inverse of `zup_to_yup`: bring +Y-up points or normals back into our world.

    Args:
        points: [..., 3] positions or directions in the +Y-up frame.

    Returns:
        [..., 3] the same vectors in our z-up world, in the input's dtype.
    """
    points = np.asarray(points)
    return (points @ Z_UP_TO_Y_UP).astype(points.dtype, copy=False)
