import pytest
import torch

from recon_ros.core.block_hash import BlockHashMap, pack_coords, unpack_keys
from recon_ros.core.errors import VolumeError


def test_pack_unpack_round_trip(device):
    g = torch.Generator().manual_seed(0)
    coords = torch.randint(-(2**20), 2**20, (5000, 3), generator=g).to(device)
    keys = pack_coords(coords)
    assert (keys >= 0).all()
    assert torch.equal(unpack_keys(keys), coords)
    assert torch.unique(keys).numel() == torch.unique(coords, dim=0).shape[0]


def test_pack_rejects_out_of_range():
    with pytest.raises(VolumeError, match="out of the supported range"):
        pack_coords(torch.tensor([[2**20, 0, 0]]))


def test_insert_and_lookup_match_a_dict(device):
    table = BlockHashMap(device, initial_slots=16)  # forces several rehashes
    reference: dict[int, int] = {}
    g = torch.Generator().manual_seed(1)
    for _ in range(20):
        coords = torch.randint(-50, 50, (300, 3), generator=g)
        keys = torch.unique(pack_coords(coords)).to(device)
        slots, n_new = table.insert_or_find(keys)
        expected_new = sum(int(k) not in reference for k in keys.tolist())
        assert n_new == expected_new
        for k, s in zip(keys.tolist(), slots.tolist()):
            assert reference.setdefault(k, s) == s
    assert len(table) == len(reference)
    assert sorted(reference.values()) == list(range(len(reference)))
    all_keys = torch.tensor(list(reference), device=device)
    assert table.lookup(all_keys).tolist() == list(reference.values())
    assert torch.equal(table.slot_keys[table.lookup(all_keys)], all_keys)
    absent = pack_coords(torch.tensor([[1000, 0, 0], [0, -1000, 5]])).to(device)
    assert table.lookup(absent).tolist() == [-1, -1]
    assert 2 * len(table) <= table.table_size


def test_from_keys_rebuilds_the_same_mapping(device):
    keys = torch.unique(pack_coords(torch.randint(-9, 9, (400, 3)))).to(device)
    table = BlockHashMap(device)
    table.insert_or_find(keys)
    copy = BlockHashMap.from_keys(table.slot_keys.cpu(), device)
    assert torch.equal(copy.lookup(keys), table.lookup(keys))
