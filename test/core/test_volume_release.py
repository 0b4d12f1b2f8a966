"""Block release in the volume: payload follows its key, freed storage reads unobserved, the
change log reports what changed and what was released, listeners follow slot moves."""

import torch

from recon_ros.core.block_hash import pack_coords
from recon_ros.core.latent_volume import LatentVolume
from recon_ros.core.volume import CHANGE_LOG_LENGTH, BlockVolume


def filled_volume(device: str, n: int = 40) -> tuple[BlockVolume, torch.Tensor]:
    vol = BlockVolume(0.1, 4, 0.3, device, initial_capacity_blocks=8)
    coords = torch.stack((torch.arange(n), torch.zeros(n, dtype=torch.int64),
                          torch.zeros(n, dtype=torch.int64)), 1)
    slots = vol.allocate(coords)
    vol.tsdf[slots] = torch.arange(n, dtype=torch.float32, device=vol.device)[:, None] * 0.001
    vol.weight[slots] = 1.0 + torch.arange(n, dtype=torch.float32, device=vol.device)[:, None]
    vol.color[slots] = 7.0
    return vol, pack_coords(coords).to(vol.device)


def test_release_moves_payload_with_its_key(device):
    vol, keys = filled_volume(device)
    before = {k: float(vol.weight[s, 0]) for k, s in zip(keys.tolist(),
                                                        vol.index.lookup(keys).tolist())}
    drop = keys[::3]
    released = vol.release(vol.index.lookup(drop))
    assert sorted(released.tolist()) == sorted(drop.tolist())
    assert vol.num_blocks == keys.numel() - drop.numel()
    assert (vol.index.lookup(drop) == -1).all()
    for k in keys.tolist():
        s = int(vol.index.lookup(torch.tensor([k], device=vol.device)))
        if k in set(drop.tolist()):
            continue
        assert float(vol.weight[s, 0]) == before[k]
    n = vol.num_blocks
    assert float(vol.weight[n:].abs().sum()) == 0.0
    assert bool((vol.tsdf[n:] == vol.truncation_m).all())
    # A released block comes back as a fresh, unobserved block.
    slot = vol.allocate_keys(drop[:1])
    assert float(vol.weight[slot].sum()) == 0.0


def test_change_log_matches_what_happened(device):
    vol, keys = filled_volume(device)
    stamp = vol.stamp
    vol.mark_changed(vol.index.lookup(keys[:5]))
    vol.release(vol.index.lookup(keys[3:8]))
    ch = vol.changes(stamp)
    assert ch.complete
    # keys 0..2 changed and still here; 3, 4 changed then released; 5..7 released.
    assert sorted(vol.index.slot_keys[ch.slots].tolist()) == sorted(keys[:3].tolist())
    assert sorted(ch.released_keys.tolist()) == sorted(keys[3:8].tolist())
    later = vol.changes(vol.stamp)
    assert later.complete and later.slots.numel() == 0 and later.released_keys.numel() == 0


def test_change_log_that_no_longer_reaches_back_says_so(device):
    vol, keys = filled_volume(device, n=4)
    stamp = vol.stamp
    for _ in range(CHANGE_LOG_LENGTH + 1):
        vol.mark_changed(vol.index.lookup(keys[:1]))
    ch = vol.changes(stamp)
    assert not ch.complete and ch.slots.numel() == vol.num_blocks
    assert vol.changes(vol.stamp - 1).complete


def test_latent_features_follow_slot_moves_and_shrink(device):
    vol, keys = filled_volume(device)
    latent = LatentVolume(vol, feature_channels=2)
    latent._grow_to_volume()
    slots = vol.index.lookup(keys)
    latent.features[slots] = torch.arange(keys.numel(), dtype=torch.float32,
                                          device=vol.device)[:, None, None]
    vol.release(slots[:10])
    kept = vol.index.lookup(keys[10:])
    expected = torch.arange(10, keys.numel(), dtype=torch.float32, device=vol.device)
    assert torch.equal(latent.features[kept, 0, 0], expected)
    assert float(latent.features[vol.num_blocks:].abs().sum()) == 0.0
    vol.shrink_to(vol.num_blocks)
    assert latent.capacity == vol.capacity == vol.num_blocks
    assert torch.equal(latent.features[vol.index.lookup(keys[10:]), 0, 0], expected)


def test_capacity_stops_doubling_at_the_limit(device):
    vol = BlockVolume(0.1, 4, 0.3, device, initial_capacity_blocks=4, max_capacity_blocks=10)
    coords = torch.stack((torch.arange(9), torch.zeros(9, dtype=torch.int64),
                          torch.zeros(9, dtype=torch.int64)), 1)
    vol.allocate(coords)
    assert vol.capacity == 10
    vol.allocate(coords + torch.tensor([0, 1, 0]))  # a single allocation of 9 more
    assert vol.capacity == 18  # grows to what it needs, not to the next power of two
