"""Triangle mesh container handed from the core to exporters and publishers."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class TriangleMesh:
    """An indexed triangle mesh in the map frame.

    Attributes:
        vertices: (N, 3) float32 positions, metres, map frame.
        faces: (M, 3) int64 vertex indices; counter-clockwise seen from outside, so face
            normals point out of the surface, towards free space (positive TSDF).
        colors: (N, 3) uint8 RGB per vertex, or None when the map has no color.
    """

    vertices: np.ndarray
    faces: np.ndarray
    colors: np.ndarray | None = None

    @property
    def num_vertices(self) -> int:
        return int(self.vertices.shape[0])

    @property
    def num_faces(self) -> int:
        return int(self.faces.shape[0])

    def face_normals(self) -> np.ndarray:
        """(M, 3) unit normals of the faces (zero for degenerate faces)."""
        tri = self.vertices[self.faces].astype(np.float64)
        n = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
        norm = np.linalg.norm(n, axis=1, keepdims=True)
        return np.divide(n, norm, out=np.zeros_like(n), where=norm > 0)

    @classmethod
    def empty(cls, with_colors: bool = False) -> "TriangleMesh":
        return cls(np.zeros((0, 3), np.float32), np.zeros((0, 3), np.int64),
                   np.zeros((0, 3), np.uint8) if with_colors else None)
