"""Map deltas and shared maps: lossless packing of blocks, the change cursor of a sender, and a
receiver's shared map that counts every peer block once however often it arrives."""

import copy

import pytest
import torch

from recon_ros.core import Mapper, MapperConfig
from recon_ros.core.map_delta import (
    BlockGeometry,
    ChangeCursor,
    DeltaError,
    block_bytes,
    decode_blocks,
    encode_blocks,
)
from recon_ros.core.shared_map import SharedMap
from recon_ros.io.synthetic import (default_camera, iter_frames, make_demo_scene,
                                    room_scan_trajectory)

#: Plain weighted averaging (as test_merge): merging equals fusing, up to float rounding.
PLAIN = {"integration": {"max_weight": 1e6, "clearing_weight_factor": 1.0,
                         "behind_surface_drop": False}}


@pytest.fixture(scope="module")
def frames() -> list:
    scene = make_demo_scene()
    return list(iter_frames(scene, default_camera(96, 72), room_scan_trajectory(scene, 12)))


def _mapper(device: str, **volume) -> Mapper:
    return Mapper(MapperConfig.from_dict({"volume": {"voxel_size_m": 0.08, "device": device,
                                                     **volume}, **PLAIN}))


def _send(mapper: Mapper, cursor: ChangeCursor):
    """What a sender publishes now: (decoded delta, its geometry, replace_all)."""
    slots, removed, complete = cursor.take()
    encoding, data = encode_blocks(mapper.volume, slots, removed, mapper.has_color)
    delta = decode_blocks(encoding, data, slots.numel(), removed.numel(),
                          mapper.volume.block_size)
    return delta, BlockGeometry.of(mapper.volume), not complete


def _state(mapper: Mapper) -> dict[int, tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """Block key -> (tsdf, weight, color) as float32 CPU tensors."""
    vol = mapper.volume
    n = vol.num_blocks
    keys = vol.index.slot_keys.cpu().tolist()
    t, w, c = (x[:n].float().cpu() for x in (vol.tsdf, vol.weight, vol.color))
    return {k: (t[i], w[i], c[i]) for i, k in enumerate(keys)}


def _assert_same_map(a: Mapper, b: Mapper, tsdf_atol: float = 1e-5,
                     exact_weights: bool = True) -> None:
    """Same observed blocks (a block the integrator allocated but never updated holds no
    observation and need not reach the view), same voxels to float rounding. Without
    ``exact_weights``: ``a``'s weights at most ``b``'s (see the change threshold below)."""
    sa, sb = ({k: v for k, v in _state(m).items() if bool((v[1] > 0).any())} for m in (a, b))
    assert sa.keys() == sb.keys()
    for k, (t, w, c) in sa.items():
        t2, w2, c2 = sb[k]
        if exact_weights:
            assert torch.allclose(w, w2, rtol=1e-5, atol=1e-5)
            assert torch.allclose(c[w > 0], c2[w > 0], atol=1e-2)
        else:
            assert bool((w <= w2 + 1e-4).all())
        seen = w > 0
        assert torch.allclose(t[seen], t2[seen], atol=tsdf_atol)


@pytest.mark.parametrize("dtype,color", [("float32", True), ("float16", False)])
def test_encode_decode_is_bitwise(device, frames, dtype, color):
    mapper = _mapper(device, dtype=dtype)
    for f in frames[:3]:
        mapper.integrate(f)
    vol = mapper.volume
    slots = torch.arange(0, vol.num_blocks, 2, device=vol.device)
    removed = torch.tensor([5, 1 << 40], dtype=torch.int64)
    encoding, data = encode_blocks(vol, slots, removed, color)
    assert encoding == f"zlib;shuffle;{dtype};tsdf,weight" + (",color" if color else "")
    assert len(data) < 0.5 * slots.numel() * block_bytes(vol, color)  # it compresses
    back = decode_blocks(encoding, data, slots.numel(), 2, vol.block_size)
    assert torch.equal(back.keys, vol.index.slot_keys[slots].cpu())
    assert torch.equal(back.removed, removed)
    for name, got in (("tsdf", back.tsdf), ("weight", back.weight)):
        want = getattr(vol, name)[slots].cpu()
        assert got.dtype == want.dtype and torch.equal(got.view(torch.int16 if dtype ==
                                                                "float16" else torch.int32),
                                                       want.view(got.dtype).view(
                                                           torch.int16 if dtype == "float16"
                                                           else torch.int32))
    if color:
        assert torch.equal(back.color, vol.color[slots].cpu())
    else:
        assert back.color is None


def test_malformed_deltas_are_refused(device, frames):
    mapper = _mapper(device)
    mapper.integrate(frames[0])
    vol = mapper.volume
    slots = torch.arange(vol.num_blocks, device=vol.device)
    empty = torch.empty(0, dtype=torch.int64)
    encoding, data = encode_blocks(vol, slots, empty, True)
    n, b = slots.numel(), vol.block_size
    for bad in (dict(encoding="lz4;shuffle;float32;tsdf,weight"),
                dict(data=data[:-20]), dict(data=b"not zlib"), dict(num_blocks=n + 1),
                dict(num_blocks=n - 1), dict(num_removed=3), dict(block_size=b // 2),
                dict(encoding=encoding.replace(",color", ""))):
        args = dict(encoding=encoding, data=data, num_blocks=n, num_removed=0, block_size=b)
        args.update(bad)
        with pytest.raises(DeltaError):
            decode_blocks(**args)
    twice = torch.cat([slots[:1], slots[:1]])
    encoding, data = encode_blocks(vol, twice, empty, True)
    with pytest.raises(DeltaError, match="repeated"):
        decode_blocks(encoding, data, 2, 0, b)


def test_change_cursor_reports_changes_once(device, frames):
    mapper = _mapper(device)
    cursor = ChangeCursor(mapper.volume)
    mapper.integrate(frames[0])
    slots, removed, complete = cursor.take()
    assert not complete and slots.numel() == mapper.volume.num_blocks  # the first is full
    slots, removed, complete = cursor.take()
    assert complete and slots.numel() == 0 and removed.numel() == 0
    mapper.integrate(frames[1])
    slots, _, complete = cursor.take()
    assert complete and 0 < slots.numel() <= mapper.volume.num_blocks
    key = mapper.volume.index.slot_keys[:1].clone()
    mapper.volume.release(torch.tensor([0], device=mapper.volume.device))
    slots, removed, complete = cursor.take()
    assert complete and torch.equal(removed.cpu(), key.cpu())
    slots, _, complete = cursor.take(full=True)
    assert not complete and slots.numel() == mapper.volume.num_blocks


def test_shared_map_counts_repeated_blocks_once(device, frames):
    """Robot A sends its changed blocks after every frame (cumulative states of the same
    blocks), a full snapshot again, and a message twice: B's shared map equals B's own map
    merged once with A's; A's own map never holds B's blocks (nothing to echo)."""
    a, b = _mapper(device), _mapper(device)
    shared = SharedMap(b)
    cursor = ChangeCursor(a.volume)
    half = len(frames) // 2
    for i, f in enumerate(frames):
        (a if i < half else b).integrate(f)
        if i < half:
            delta, geometry, replace_all = _send(a, cursor)
            shared.apply("robot_a", delta, geometry, replace_all)
            shared.apply("robot_a", delta, geometry, replace_all)  # duplicated delivery
            shared.sync()
            # never more weight than A's and B's together (no double counting); a block
            # whose TSDF moved by less than the core's change threshold (1e-3 truncation) is
            # not logged as changed, so its weight may lag until its next change
            expected = copy.deepcopy(b)
            expected.merge(a)
            _assert_same_map(shared.view, expected, tsdf_atol=0.01 * a.truncation_m,
                             exact_weights=False)
    full_cursor = ChangeCursor(a.volume)  # a new subscriber: everything again
    delta, geometry, replace_all = _send(a, full_cursor)
    assert replace_all
    shared.apply("robot_a", delta, geometry, replace_all)
    shared.sync()
    expected = copy.deepcopy(b)
    expected.merge(a)
    _assert_same_map(shared.view, expected)
    # a block's weight is A's + B's, not doubled
    k = next(iter(set(_state(a)) & set(_state(b))))
    assert torch.allclose(_state(shared.view)[k][1], _state(a)[k][1] + _state(b)[k][1])
    assert shared.view.has_color and shared.view.frames_integrated == b.frames_integrated
    # B keeps mapping: the view follows its own changes (to the change threshold)
    b.integrate(frames[0])
    shared.sync()
    expected = copy.deepcopy(b)
    expected.merge(a)
    _assert_same_map(shared.view, expected, tsdf_atol=0.01 * a.truncation_m,
                     exact_weights=False)


def test_removed_and_replaced_blocks_leave_the_view(device, frames):
    a, b = _mapper(device), _mapper(device)
    a.integrate(frames[0])
    shared = SharedMap(b)
    cursor = ChangeCursor(a.volume)
    shared.apply("a", *_send(a, cursor))
    shared.sync()
    _assert_same_map(shared.view, a)
    gone = a.volume.index.slot_keys[:3].clone()
    a.volume.release(torch.arange(3, device=a.volume.device))
    shared.apply("a", *_send(a, cursor))
    shared.sync()
    assert not (shared.view.volume.index.lookup(gone) >= 0).any()
    _assert_same_map(shared.view, a)
    empty_a = _mapper(device)  # A restarted with an empty map: a full snapshot forgets all
    shared.apply("a", *_send(empty_a, ChangeCursor(empty_a.volume)))
    shared.sync()
    assert shared.view.volume.num_blocks == 0


def test_mismatched_geometry_is_refused(device, frames):
    a, b = _mapper(device, voxel_size_m=0.05), _mapper(device)
    a.integrate(frames[0])
    shared = SharedMap(b)
    delta, geometry, replace_all = _send(a, ChangeCursor(a.volume))
    with pytest.raises(DeltaError, match="voxel_size_m 0.05 != 0.08"):
        shared.apply("a", delta, geometry, replace_all)
    assert shared.sync() == 0 and shared.view.volume.num_blocks == 0 and not shared.peers


def test_rebase_follows_a_new_own_map(device, frames):
    a, b = _mapper(device), _mapper(device)
    a.integrate(frames[0])
    b.integrate(frames[-1])
    shared = SharedMap(b)
    shared.apply("a", *_send(a, ChangeCursor(a.volume)))
    shared.sync()
    fresh = _mapper(device)
    shared.rebase(fresh)  # e.g. ~/reset: the peers' blocks stay
    shared.sync()
    _assert_same_map(shared.view, a)
