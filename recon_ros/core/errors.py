"""Typed errors of the core layer (raised instead of ``assert``, which ``-O`` strips)."""


class ReconError(Exception):
    """Base class of every recon_ros error."""


class ConfigError(ReconError, ValueError):
    """A configuration value is invalid; the message names the field and the reason."""


class FrameError(ReconError, ValueError):
    """A frame (image, intrinsics or pose) is malformed."""


class VolumeError(ReconError):
    """The voxel volume cannot do what was asked (capacity, coordinates, checkpoint format)."""
