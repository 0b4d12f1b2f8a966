import pytest
import torch

from recon_ros.core.block_hash import BlockHashMap, fixed_probing, pack_coords, unpack_keys
from recon_ros.core.errors import VolumeError


@pytest.fixture(autouse=True, params=["device default", "fixed rounds"])
def probing(request):
    """Every test runs with the device's own probing (on the CPU: until an empty cell) and
    with the accelerators' fixed probe rounds: the two must agree."""
    if request.param == "fixed rounds":
        with fixed_probing():
            yield request.param
    else:
        yield request.param


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


def test_remove_keeps_slots_dense_and_matches_a_dict(device):
    """Random inserts and removals against a dict; slots stay 0..len-1 and every key maps to
    the slot that holds it, through tombstones and rehashes."""
    table = BlockHashMap(device, initial_slots=16)
    reference: dict[int, int] = {}
    g = torch.Generator().manual_seed(2)
    for step in range(40):
        keys = torch.unique(pack_coords(torch.randint(-30, 30, (200, 3), generator=g)))
        slots, _ = table.insert_or_find(keys.to(device))
        for k, s in zip(keys.tolist(), slots.tolist()):
            reference[k] = s
        if step % 2:
            present = torch.tensor(sorted(reference), dtype=torch.int64)
            drop = present[torch.randperm(present.numel(), generator=g)[: present.numel() // 3]]
            drop_slots = table.lookup(drop.to(device))
            src, dst = table.remove_slots(drop_slots)
            for k in drop.tolist():
                del reference[k]
            moved = dict(zip(src.tolist(), dst.tolist()))
            reference = {k: moved.get(s, s) for k, s in reference.items()}
            assert table.lookup(drop.to(device)).tolist() == [-1] * drop.numel()
        assert len(table) == len(reference)
        assert sorted(reference.values()) == list(range(len(reference)))
        all_keys = torch.tensor(list(reference), dtype=torch.int64, device=device)
        assert table.lookup(all_keys).tolist() == list(reference.values())
        assert torch.equal(table.slot_keys[table.lookup(all_keys)], all_keys)
        assert 4 * (len(table) + table._tombstones) <= table.table_size


def test_remove_nothing_and_remove_everything(device):
    table = BlockHashMap(device)
    keys = torch.unique(pack_coords(torch.randint(-5, 5, (50, 3)))).to(device)
    table.insert_or_find(keys)
    src, dst = table.remove_slots(torch.empty(0, dtype=torch.int64, device=device))
    assert src.numel() == dst.numel() == 0 and len(table) == keys.numel()
    table.remove_slots(torch.arange(len(table), device=device))
    assert len(table) == 0
    assert (table.lookup(keys) == -1).all()
    slots, n_new = table.insert_or_find(keys)  # the keys can come back
    assert n_new == keys.numel() and sorted(slots.tolist()) == list(range(keys.numel()))


def test_probe_chains_longer_than_a_placement_batch(device):
    """Keys that all hash to one cell need probe sequences far beyond PLACE_ROUNDS; inserts,
    lookups and removals still agree with a dict."""
    from recon_ros.core.block_hash import PLACE_ROUNDS, _hash

    table = BlockHashMap(device, initial_slots=16)
    mask = table.table_size - 1
    candidates = torch.arange(1, 200_000, dtype=torch.int64)
    same_home = candidates[_hash(candidates, mask) == 7][: 3 * PLACE_ROUNDS]
    assert same_home.numel() == 3 * PLACE_ROUNDS
    slots, n_new = table.insert_or_find(same_home.to(device))
    assert n_new == same_home.numel() and table.table_size == mask + 1  # no rehash
    assert table._max_probe >= same_home.numel()
    assert table.lookup(same_home.to(device)).tolist() == list(range(same_home.numel()))
    src, dst = table.remove_slots(torch.tensor([0, 5], device=device))
    kept = torch.cat((same_home[1:5], same_home[6:]))
    assert torch.equal(table.slot_keys[table.lookup(kept.to(device))], kept.to(device))
    assert table.lookup(same_home[[0, 5]].to(device)).tolist() == [-1, -1]


def test_host_synchronisations_of_lookup_and_insert(device):
    """With fixed probe rounds (accelerators; what the sync audit counts), a lookup makes the
    host wait for nothing and an insert of new keys for two counts."""
    from recon_ros.core.sync_audit import SyncOpCounter

    with fixed_probing():
        table = BlockHashMap(device, initial_slots=4096)
        old = torch.unique(pack_coords(torch.randint(-20, 20, (500, 3)))).to(device)
        table.insert_or_find(old)
        new = pack_coords(torch.randint(40, 60, (200, 3))).unique().to(device)
        with SyncOpCounter("cuda") as lookups:
            table.lookup(torch.cat((old, new)))
        with SyncOpCounter("cuda") as inserts:
            table.insert_or_find(new)
    assert lookups.total == 0, lookups.ops
    assert inserts.total == 2, inserts.ops
