"""Learned models (ROS-free torch): latent depth fusion (NeuralFusion, Weder et al. 2021).

- :mod:`.networks`: ``FusionNet``, ``Translator``, ``LatentFusionModel``, ``ModelConfig``.
- :mod:`.checkpoint`: safe weight files (``load_weights``; the shipped default lives in
  ``weights/``) and resumable training checkpoints.
- :mod:`.trained_for`: what weights were trained for (voxel size, truncation, image sizes)
  and the mapper's check of its configuration against it.
- :mod:`.data`: procedural training / held-out sequences and truncated-SDF targets.
- :mod:`.train`: ``recon-ros train latent-fusion`` (presets ``small`` and ``full``).
- :mod:`.evaluate`: ``recon-ros eval-fusion`` (TSDF vs latent fusion on identical inputs).
- :mod:`.bench_latent`: per-frame cost of latent fusion.

The core-side storage and integration are :mod:`recon_ros.core.latent_volume` and
:mod:`recon_ros.core.latent_integrator`; the mapper uses them with ``fusion.method: latent``.
Submodules are imported on demand (nothing heavy happens on ``import recon_ros.models``).
"""
