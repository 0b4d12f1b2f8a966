"""Image and camera_info decoding shared by the rosbag2 reader and the live ROS node.

The functions here are duck-typed over message objects: they read only the attributes that
``sensor_msgs/msg/Image`` (``height``, ``width``, ``step``, ``encoding``, ``is_bigendian``,
``data``) and ``sensor_msgs/msg/CompressedImage`` (``format``, ``data``) define, so they accept
messages deserialised by ``rosbags`` and by ``rclpy`` alike, and import neither.

Conventions: depth comes out as (H, W) float32 metres (``16UC1``/``mono16`` millimetres are
divided by 1000; 0, NaN and Inf are kept and mean "no measurement"); color as (H, W, 3) uint8
RGB.
"""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np

from recon_ros.core.errors import FrameError, ReconError
from recon_ros.core.frame import PinholeCamera

__all__ = [
    "COLOR_ENCODINGS",
    "COMPRESSED_IMAGE",
    "DEPTH_ENCODINGS",
    "CameraInfoError",
    "ImageDecodeError",
    "ImageEncodeError",
    "camera_from_info",
    "decode_color",
    "decode_depth",
    "encode_compressed",
    "encode_depth",
]

COMPRESSED_IMAGE = "sensor_msgs/msg/CompressedImage"

#: Depth encodings understood: encoding -> (numpy base dtype, scale to metres or None).
DEPTH_ENCODINGS: dict[str, tuple[str, float | None]] = {
    "16UC1": ("u2", 1000.0),
    "mono16": ("u2", 1000.0),
    "32FC1": ("f4", None),
}
#: Uncompressed color encodings understood -> number of channels on the wire.
COLOR_ENCODINGS: dict[str, int] = {"rgb8": 3, "bgr8": 3, "rgba8": 4, "bgra8": 4, "mono8": 1}


class ImageDecodeError(ReconError, ValueError):
    """An image message cannot be decoded; ``reason`` is a short drop-counter key such as
    ``"unsupported encoding 16SC1"``."""

    def __init__(self, reason: str, detail: str | None = None) -> None:
        super().__init__(reason if detail is None else f"{reason}: {detail}")
        self.reason = reason


class ImageEncodeError(ReconError, ValueError):
    """An array cannot be encoded as asked (shape, dtype, encoding or format)."""


class CameraInfoError(ImageDecodeError):
    """A camera_info does not describe its image (all-zero K, other size, invalid K);
    ``reason`` is a short drop-counter key, ``str(err)`` has the numbers."""


def _pixels(msg: Any, dtype: np.dtype, channels: int) -> np.ndarray:
    """(H, W, channels) array of ``dtype`` from an Image message, honouring ``step``."""
    h, w, step = int(msg.height), int(msg.width), int(msg.step)
    bpp = dtype.itemsize * channels
    if h <= 0 or w <= 0:
        raise ImageDecodeError("empty image", f"{w}x{h}")
    if step < w * bpp:
        raise ImageDecodeError(
            "malformed image (step too small)", f"step {step} < width {w} * {bpp} bytes/pixel"
        )
    data = np.asarray(msg.data, dtype=np.uint8).reshape(-1)
    need = step * (h - 1) + w * bpp
    if data.size < need:
        raise ImageDecodeError(
            "malformed image (data too short)", f"{data.size} bytes for {w}x{h}, step {step}"
        )
    rows = np.lib.stride_tricks.as_strided(data, shape=(h, w * bpp), strides=(step, 1),
                                           writeable=False)
    return np.ascontiguousarray(rows).view(dtype).reshape(h, w, channels)


def decode_depth(msg: Any) -> np.ndarray:
    """``sensor_msgs/msg/Image`` depth -> (H, W) float32 metres.

    ``16UC1``/``mono16`` are millimetres (divided by 1000; 0 stays 0 = invalid), ``32FC1`` is
    metres (NaN/Inf kept, they mean invalid). ``is_bigendian`` and ``step`` are honoured.

    Raises:
        ImageDecodeError: ``"unsupported encoding X"`` or a malformed message.
    """
    enc = str(msg.encoding)
    if enc not in DEPTH_ENCODINGS:
        raise ImageDecodeError(f"unsupported encoding {enc}")
    base, mm_per_m = DEPTH_ENCODINGS[enc]
    dtype = np.dtype(base).newbyteorder(">" if msg.is_bigendian else "<")
    px = _pixels(msg, dtype, 1)[:, :, 0]
    if mm_per_m is None:
        return px.astype(np.float32)
    return px.astype(np.float32) / np.float32(mm_per_m)


def decode_color(msg: Any, msgtype: str) -> np.ndarray:
    """``sensor_msgs/msg/Image`` (rgb8, bgr8, rgba8, bgra8, mono8) or
    ``sensor_msgs/msg/CompressedImage`` (jpeg, png) -> (H, W, 3) uint8 RGB.

    Args:
        msg: the message.
        msgtype: its type name; :data:`COMPRESSED_IMAGE` selects the compressed decoder.

    Raises:
        ImageDecodeError: unsupported encoding / format, or undecodable data.
    """
    if msgtype == COMPRESSED_IMAGE:
        fmt = str(msg.format)
        if "compressedDepth" in fmt:
            raise ImageDecodeError("unsupported encoding compressedDepth")
        data = np.asarray(msg.data, dtype=np.uint8).reshape(-1)
        bgr = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
        if bgr is None:
            raise ImageDecodeError("undecodable compressed image", f"format '{fmt}'")
        return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    enc = str(msg.encoding)
    if enc not in COLOR_ENCODINGS:
        raise ImageDecodeError(f"unsupported encoding {enc}")
    px = _pixels(msg, np.dtype(np.uint8), COLOR_ENCODINGS[enc])
    if enc == "mono8":
        return np.repeat(px, 3, axis=2)
    if enc in ("bgr8", "bgra8"):
        return np.ascontiguousarray(px[:, :, 2::-1])
    return np.ascontiguousarray(px[:, :, :3])


def camera_from_info(K: Any, info_width: int, info_height: int, image_width: int,
                     image_height: int, what: str) -> PinholeCamera:
    """The pinhole model of a ``what`` (``"depth"``/``"color"``) image from its camera_info.

    Args:
        K: the camera_info's 9 (or 3x3) intrinsics, row-major.
        info_width, info_height: the size the camera_info states.
        image_width, image_height: the size of the image it should describe.
        what: image role, used in the reason.

    Raises:
        CameraInfoError: ``"camera_info K is all zero"`` (an uncalibrated driver),
            ``"<what> size differs from camera_info"``, or ``"invalid camera_info"``.
    """
    K = np.asarray(K, dtype=np.float64).reshape(3, 3)
    if not np.any(K):
        raise CameraInfoError("camera_info K is all zero")
    if (int(info_width), int(info_height)) != (int(image_width), int(image_height)):
        raise CameraInfoError(
            f"{what} size differs from camera_info",
            f"{what} image is {image_width}x{image_height}, camera_info says "
            f"{info_width}x{info_height}",
        )
    try:
        return PinholeCamera(K.copy(), int(image_width), int(image_height))
    except FrameError as err:
        raise CameraInfoError("invalid camera_info", str(err)) from err


def encode_depth(depth_m: np.ndarray, encoding: str = "16UC1", is_bigendian: bool = False
                 ) -> np.ndarray:
    """(H, W) depth in metres -> (H, W) pixels in the wire dtype of ``encoding``.

    ``16UC1`` stores ``round(m * 1000)`` millimetres clipped to [0, 65535], NaN/Inf -> 0;
    ``32FC1`` stores float32 metres (NaN/Inf kept).

    Raises:
        ImageEncodeError: not (H, W), or an encoding other than ``16UC1``/``32FC1``.
    """
    depth = np.asarray(depth_m, dtype=np.float64)
    if depth.ndim != 2:
        raise ImageEncodeError(f"depth must be (H, W), got shape {depth.shape}")
    if encoding == "16UC1":
        mm = np.where(np.isfinite(depth), np.round(depth * 1000.0), 0.0)
        return np.clip(mm, 0, 65535).astype(">u2" if is_bigendian else "<u2")
    if encoding == "32FC1":
        return depth.astype(">f4" if is_bigendian else "<f4")
    raise ImageEncodeError(f"depth encoding must be '16UC1' or '32FC1', got {encoding!r}")


def encode_compressed(rgb: np.ndarray, fmt: str = "jpeg", jpeg_quality: int = 95
                      ) -> tuple[np.ndarray, str]:
    """(H, W, 3) uint8 RGB -> ``(data (N,) uint8, format string)`` of a CompressedImage, the
    format string in image_transport's style (``"rgb8; jpeg compressed bgr8"``).

    Raises:
        ImageEncodeError: not (H, W, 3) uint8, a format other than jpeg/png, or OpenCV failed.
    """
    img = np.asarray(rgb)
    if img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3:
        raise ImageEncodeError(f"rgb must be (H, W, 3) uint8, got {img.shape} {img.dtype}")
    bgr = np.ascontiguousarray(img[:, :, ::-1])
    if fmt == "jpeg":
        ok, enc = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, int(jpeg_quality)])
    elif fmt == "png":
        ok, enc = cv2.imencode(".png", bgr)
    else:
        raise ImageEncodeError(f"fmt must be 'jpeg' or 'png', got {fmt!r}")
    if not ok:
        raise ImageEncodeError(f"OpenCV failed to encode a {img.shape} image as {fmt}")
    return np.asarray(enc, dtype=np.uint8).reshape(-1), f"rgb8; {fmt} compressed bgr8"
