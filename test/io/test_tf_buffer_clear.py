"""TfBuffer.clear(keep_static=True): what the live node does when time jumps back."""

import numpy as np
import pytest

from recon_ros.io.tf_buffer import TfBuffer, UnknownFrameError


def test_clear_keeps_static_transforms_on_request():
    buf = TfBuffer()
    buf.set_transform("base", "camera", 0, [0, 0, 1], [0, 0, 0, 1], static=True)
    buf.set_transform("map", "base", 10, [1, 0, 0], [0, 0, 0, 1])
    buf.clear(keep_static=True)
    assert buf.frames() == ["base", "camera"]
    np.testing.assert_allclose(buf.lookup("base", "camera", 5)[:3, 3], [0, 0, 1])
    with pytest.raises(UnknownFrameError):
        buf.lookup("map", "camera", 10)
    buf.set_transform("map", "base", 3, [2, 0, 0], [0, 0, 0, 1])  # earlier than before: fine
    np.testing.assert_allclose(buf.lookup("map", "camera", 3)[:3, 3], [2, 0, 1])
    buf.clear()
    assert buf.frames() == []
