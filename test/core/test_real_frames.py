"""Five real Kinect-class frames (3DMatch) fused into a mesh that agrees with the frames."""

import numpy as np
import torch

from recon_ros.core import Mapper, MapperConfig
from recon_ros.evaluation import nearest_distances, sample_mesh_points
from recon_ros.io.frame_folder import FrameFolder


def test_fused_mesh_agrees_with_back_projected_frames(shared_data, device):
    folder = FrameFolder(shared_data / "3dmatch-seq01")
    assert len(folder) == 5
    voxel = 0.04
    mapper = Mapper(MapperConfig.from_dict({
        "volume": {"voxel_size_m": voxel, "device": device},
        "integration": {"max_depth_m": 4.0, "truncation_voxels": 4.0}}))
    clouds = []
    for frame in folder:
        mapper.integrate(frame)
        d = frame.depth
        v, u = np.nonzero((d > 0.1) & (d <= 4.0))
        pts = frame.camera.backproject(torch.tensor(np.stack((u, v), 1), dtype=torch.float64),
                                       torch.tensor(d[v, u], dtype=torch.float64)).numpy()
        clouds.append(pts[::7] @ frame.T_world_cam[:3, :3].T + frame.T_world_cam[:3, 3])
    cloud = np.concatenate(clouds)
    mesh = mapper.mesh()
    assert mesh.num_faces > 20_000 and mesh.colors is not None
    samples = sample_mesh_points(mesh, 50_000)
    # Accuracy: the mesh lies on the measured points (median well under a voxel).
    d_mesh = nearest_distances(samples, cloud)
    assert np.median(d_mesh) < voxel / 2, np.median(d_mesh)
    assert np.mean(d_mesh < 2 * voxel) > 0.95
    # Completeness: the measured points are covered by the mesh.
    d_cloud = nearest_distances(cloud, samples)
    assert np.median(d_cloud) < voxel / 2, np.median(d_cloud)
    assert np.mean(d_cloud < 2 * voxel) > 0.85
    # Colors come from the real images, not the unobserved default (black).
    assert mesh.colors.mean() > 40
