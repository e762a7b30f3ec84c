"""The sharded store: exact round trips, index integrity, atomic writes, corruption detection, crops."""

from __future__ import annotations

import json
import subprocess
import sys
import tarfile
import textwrap

import numpy as np
import pytest

from img2kernel.store.shards import Shard, ShardWriter, Store, StoreError, index_path, split_for_keys

from img2kernel.store.crops import CropSampler


def ragged_arrays(rng: np.random.Generator, dtype="float32") -> dict[str, np.ndarray]:
    shapes = [(1, 1), (7, 13), (64, 48), (3, 5, 2), (200, 1)]
    return {f"k{i:03d}": (rng.standard_normal(s) * 1000).astype(dtype) for i, s in enumerate(shapes)}


@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_round_trip_is_bit_exact(tmp_path, dtype):
    arrays = ragged_arrays(np.random.default_rng(0), dtype)
    with ShardWriter(tmp_path / "00000.tar", dtype=dtype) as writer:
        for i, (key, array) in enumerate(arrays.items()):
            writer.add(key, array, split=("train", "val", "test")[i % 3])
    shard = Shard(tmp_path / "00000.tar")
    assert shard.keys() == list(arrays)
    for key, array in arrays.items():
        stored = shard.array(key)
        assert stored.dtype == np.dtype(dtype) and stored.shape == array.shape
        assert stored.tobytes() == array.tobytes()
        assert not stored.flags.writeable
    assert shard.keys("val") == ["k001", "k004"]


def test_index_matches_tar_and_tar_is_standard(tmp_path):
    arrays = ragged_arrays(np.random.default_rng(1))
    path = tmp_path / "00003.tar"
    with ShardWriter(path) as writer:
        for key, array in arrays.items():
            writer.add(key, array)
    index = json.loads(index_path(path).read_text())
    assert index["tar_bytes"] == path.stat().st_size
    with tarfile.open(path) as tar:
        members = tar.getmembers()
        assert [m.name for m in members] == [f"{k}.npy" for k in arrays]
        for member, entry in zip(members, index["entries"]):
            assert member.offset_data == entry["member_offset"]
            payload = tar.extractfile(member).read()
            # np.load of the member's bytes: a standard .npy file, data at the indexed offset
            array = np.load(__import__("io").BytesIO(payload))
            assert array.tobytes() == arrays[entry["key"]].tobytes()
            assert entry["offset"] - entry["member_offset"] == len(payload) - array.nbytes


def test_webdataset_reads_the_shard(tmp_path):
    webdataset = pytest.importorskip("webdataset")
    arrays = ragged_arrays(np.random.default_rng(2))
    with ShardWriter(tmp_path / "00000.tar") as writer:
        for key, array in arrays.items():
            writer.add(key, array)
    samples = list(webdataset.WebDataset(str(tmp_path / "00000.tar"), shardshuffle=False).decode())
    assert [s["__key__"] for s in samples] == list(arrays)
    for sample in samples:
        np.testing.assert_array_equal(sample["npy"], arrays[sample["__key__"]])


def test_failed_writer_leaves_previous_shard_untouched(tmp_path):
    path = tmp_path / "00000.tar"
    with ShardWriter(path) as writer:
        writer.add("old", np.ones((4, 4)))
    with pytest.raises(RuntimeError):
        with ShardWriter(path) as writer:
            writer.add("new", np.zeros((4, 4)))
            raise RuntimeError("interrupted")
    assert Shard(path).keys() == ["old"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["00000.tar", "00000.tar.index.json"]


def test_killed_writer_leaves_no_shard(tmp_path):
    script = textwrap.dedent(
        f"""
        import os, signal, numpy as np
        from img2kernel.store.shards import ShardWriter
        writer = ShardWriter({str(tmp_path / "00000.tar")!r})
        writer.add("a", np.ones((256, 256)))
        writer.add("b", np.ones((256, 256)))
        os.kill(os.getpid(), signal.SIGKILL)  # mid-shard: never closed
        """
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True)
    assert result.returncode == -9
    assert not (tmp_path / "00000.tar").exists()
    assert not index_path(tmp_path / "00000.tar").exists()
    # Only a hidden partial file is left, which no reader or glob picks up.
    assert Store(tmp_path).keys() == []


def _one_shard(tmp_path):
    path = tmp_path / "00007.tar"
    with ShardWriter(path) as writer:
        writer.add("img", np.arange(4096, dtype=np.float32).reshape(64, 64))
    return path


def test_truncated_shard_names_the_file(tmp_path):
    path = _one_shard(tmp_path)
    with open(path, "r+b") as handle:
        handle.truncate(path.stat().st_size - 1024)
    with pytest.raises(StoreError, match=r"00007\.tar.*truncated.*rebuild"):
        Shard(path)


def test_corrupted_shard_names_file_and_member(tmp_path):
    path = _one_shard(tmp_path)
    entry = json.loads(index_path(path).read_text())["entries"][0]
    with open(path, "r+b") as handle:
        handle.seek(entry["offset"] + 100)
        byte = handle.read(1)
        handle.seek(entry["offset"] + 100)
        handle.write(bytes([byte[0] ^ 0x40]))
    with pytest.raises(StoreError, match=r"00007\.tar: member img\.npy .*corrupted.*rebuild"):
        Shard(path)


def test_missing_index_names_the_file(tmp_path):
    path = _one_shard(tmp_path)
    index_path(path).unlink()
    with pytest.raises(StoreError, match=r"00007\.tar: index .* is missing"):
        Store(tmp_path)


def test_writer_rejects_bad_keys(tmp_path):
    with ShardWriter(tmp_path / "x.tar") as writer:
        with pytest.raises(ValueError, match="key"):
            writer.add("../escape", np.zeros(2))
        writer.add("a", np.zeros(2))
        with pytest.raises(ValueError, match="twice"):
            writer.add("a", np.zeros(2))


def test_split_is_deterministic_from_keys():
    keys = [f"{i:06d}" for i in range(100)]
    split = split_for_keys(keys, 0.2, 0.1, seed=0)
    assert split == split_for_keys(list(reversed(keys)), 0.2, 0.1, seed=0)
    counts = {s: sum(v == s for v in split.values()) for s in ("train", "val", "test")}
    assert counts == {"train": 70, "val": 20, "test": 10}
    assert split != split_for_keys(keys, 0.2, 0.1, seed=1)
    assert set(split_for_keys(keys[:3], 0.1, 0.1, seed=0).values()) == {"train", "val", "test"}


def test_crops_are_exact_slices_with_halo_alignment():
    rng = np.random.default_rng(0)
    images = [rng.standard_normal((40, 50)).astype(np.float32), rng.standard_normal((30, 30)).astype(np.float32)]
    targets = [im * 2 for im in images]
    sampler = CropSampler(images, size=8, halo=2, targets=targets, seed=3)
    inputs, crops = sampler.sample(200)
    assert inputs.shape == (200, 12, 12) and crops.shape == (200, 8, 8)
    np.testing.assert_array_equal(crops, inputs[:, 2:-2, 2:-2] * 2)
    # Each crop is a real window of one of the images.
    for crop in inputs[:20]:
        assert any(
            np.array_equal(crop, im[y : y + 12, x : x + 12])
            for im in images
            for y in range(im.shape[0] - 11)
            for x in range(im.shape[1] - 11)
        )
    again = CropSampler(images, size=8, halo=2, targets=targets, seed=3).sample(200)[0]
    np.testing.assert_array_equal(inputs, again)


def test_crops_skip_images_too_small_and_fail_when_none_fit():
    images = [np.zeros((5, 5), np.float32), np.zeros((20, 20), np.float32)]
    sampler = CropSampler(images, size=10, halo=1)
    assert sampler.skipped == 1
    with pytest.raises(ValueError, match="12x12"):
        CropSampler(images[:1], size=10, halo=1)


def test_store_sampler_streams_the_same_crops_one_shard_at_a_time(tmp_path):
    """Same crops as CropSampler over the split's arrays; what stays mapped is bounded by the budget."""
    from img2kernel.store.crops import StoreCropSampler

    rng = np.random.default_rng(1)
    images, splits = {}, {}
    for shard in range(3):
        for i in range(4):
            key = f"{shard}{i:03d}"
            images[key] = rng.standard_normal((30 + 3 * i, 40 - 2 * shard)).astype(np.float32)
            splits[key] = "train" if i != 3 else "val"
    for kind, scale in (("in", 1), ("out", 3)):
        (tmp_path / kind).mkdir()
        for shard in range(3):
            with ShardWriter(tmp_path / kind / f"{shard:05d}.tar") as writer:
                for key in sorted(k for k in images if k.startswith(str(shard))):
                    writer.add(key, images[key] * scale, splits[key])
    inputs, targets = Store(tmp_path / "in"), Store(tmp_path / "out")
    train_keys = [k for k in sorted(images) if splits[k] == "train"]

    def mapped():
        return sum(shard._mmap is not None for store in (inputs, targets) for shard in store.shards)

    # A budget below one shard: only the last-used (input, target) pair stays mapped.
    for budget, left_mapped in ((0, 2), (100, 6)):
        streamed = StoreCropSampler(inputs, targets, "train", size=8, halo=2, seed=4, mapped_budget_mb=budget)
        in_memory = CropSampler([images[k] for k in train_keys], 8, 2, [images[k] * 3 for k in train_keys], seed=4)
        for n in (1, 50, 200):
            got, expected = streamed.sample(n), in_memory.sample(n)
            np.testing.assert_array_equal(got[0], expected[0])
            np.testing.assert_array_equal(got[1], expected[1])
        assert streamed.images == 9
        assert mapped() == left_mapped
        streamed.release()
        assert mapped() == 0


@pytest.mark.parametrize("damaged", [0, 2, 4])
def test_every_member_is_checked_not_only_the_first(tmp_path, damaged):
    path = tmp_path / "00003.tar"
    with ShardWriter(path) as writer:
        for i in range(5):
            writer.add(f"m{i}", np.full((16, 16), float(i), dtype=np.float32))
    entry = json.loads(index_path(path).read_text())["entries"][damaged]
    with open(path, "r+b") as handle:
        handle.seek(entry["offset"] + 17)
        byte = handle.read(1)
        handle.seek(entry["offset"] + 17)
        handle.write(bytes([byte[0] ^ 0x01]))  # one bit of one pixel
    with pytest.raises(StoreError, match=rf"00003\.tar: member m{damaged}\.npy .*corrupted"):
        Shard(path)
