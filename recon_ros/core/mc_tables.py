"""Marching-cubes case tables, generated from first principles instead of copied.

Cube corner ``c`` (0..7) sits at offset ``(c & 1, c >> 1 & 1, c >> 2 & 1)``. A corner is
*inside* when its TSDF is negative. For each of the 256 inside/outside patterns the surface
polygons are built face by face: on every cube face the iso-line segments are directed so that
the inside region lies on their left seen from outside the cube, and on a face with four
crossings (the ambiguous case) the inside corners are always separated. Because that choice
depends only on the four values of the face, two cubes sharing a face always agree, so meshes
have no cracks; because every segment is directed the same way, the chained loops (and so the
triangles) have consistent winding. Loops are emitted reversed so that triangle normals
(right-hand rule) point from inside (negative) to outside (positive).
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np


def corner_offset(c: int) -> tuple[int, int, int]:
    return (c & 1, (c >> 1) & 1, (c >> 2) & 1)


def _edges() -> list[tuple[int, int, int]]:
    """12 cube edges as ``(corner0, corner1, axis)`` with ``corner0`` the lower end."""
    return [(c, c | (1 << axis), axis) for axis in range(3) for c in range(8)
            if not c & (1 << axis)]


EDGES = _edges()
_EDGE_ID = {frozenset((a, b)): i for i, (a, b, _) in enumerate(EDGES)}


def _faces() -> list[list[int]]:
    """6 faces, each as its 4 corners counter-clockwise seen from outside the cube."""
    faces = []
    for axis in range(3):
        b, c = (axis + 1) % 3, (axis + 2) % 3
        for side in (0, 1):
            ring = []
            for ub, uc in ((0, 0), (1, 0), (1, 1), (0, 1)):  # CCW seen from +axis
                ring.append((side << axis) | (ub << b) | (uc << c))
            faces.append(ring if side == 1 else ring[::-1])
    return faces


FACES = _faces()


def _case_loops(case: int) -> list[list[int]]:
    """Closed loops of edge ids for one inside/outside pattern."""
    inside = [(case >> c) & 1 == 1 for c in range(8)]
    successor: dict[int, int] = {}
    for ring in FACES:
        ring_edges = [_EDGE_ID[frozenset((ring[k], ring[(k + 1) % 4]))] for k in range(4)]
        exits = [k for k in range(4) if inside[ring[k]] and not inside[ring[(k + 1) % 4]]]
        entries = {k for k in range(4) if not inside[ring[k]] and inside[ring[(k + 1) % 4]]}
        for k in exits:
            j = (k - 1) % 4
            while j not in entries:
                j = (j - 1) % 4
            successor[ring_edges[k]] = ring_edges[j]
    loops, seen = [], set()
    for start in sorted(successor):
        if start in seen:
            continue
        loop, e = [], start
        while e not in seen:
            seen.add(e)
            loop.append(e)
            e = successor[e]
        loops.append(loop)
    return loops


@lru_cache(maxsize=1)
def triangle_table() -> tuple[np.ndarray, np.ndarray]:
    """``(tris, counts)``: (256, T, 3) int64 edge ids per triangle (-1 padded) and (256,)
    number of triangles per case."""
    per_case = []
    for case in range(256):
        tris = []
        for loop in _case_loops(case):
            loop = loop[::-1]  # normals towards the outside (positive TSDF)
            tris += [(loop[0], loop[i], loop[i + 1]) for i in range(1, len(loop) - 1)]
        per_case.append(tris)
    t_max = max(len(t) for t in per_case)
    table = np.full((256, t_max, 3), -1, dtype=np.int64)
    counts = np.zeros(256, dtype=np.int64)
    for case, tris in enumerate(per_case):
        counts[case] = len(tris)
        if tris:
            table[case, : len(tris)] = tris
    return table, counts
