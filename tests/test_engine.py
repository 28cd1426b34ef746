"""The streaming engine: sources to units, worker decoding, bad samples skipped by reason, units tracked and stored."""

from __future__ import annotations

import hashlib
import io
import json
import random
import tarfile

import numpy as np
import pytest
import torch
from PIL import Image

from blip.data.robust import SkipCounter
from blip.data.transforms import eval_transform
from blip.errors import BlipError
from blip.images import load_image
from blip.inference.engine import Progress, UnitStore, UnitTracker, plan_units, stream_batches

TRANSFORM = eval_transform(32)


def jpeg_bytes(seed: int, size=(40, 30)) -> bytes:
    arr = np.random.default_rng(seed).integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, "JPEG")
    return buf.getvalue()


def write_tar(path, members: dict[str, bytes], cut: int | None = None):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    data = buf.getvalue()
    path.write_bytes(data[:cut] if cut else data)
    return path


@pytest.fixture
def bad_world(tmp_path):
    """Good images and one file of every bad kind, a TXT list with a non-UTF-8 line, and a good and a cut shard."""
    good = {}
    for i in range(5):
        p = tmp_path / "imgs" / f"good{i}.jpg"
        p.parent.mkdir(exist_ok=True)
        p.write_bytes(jpeg_bytes(i))
        good[str(p)] = p
    bad = {
        "empty": tmp_path / "imgs" / "zero.jpg",
        "truncated": tmp_path / "imgs" / "cut.jpg",
        "not_image": tmp_path / "imgs" / "notes.png",
        "too_large": tmp_path / "imgs" / "bomb.png",
        "missing": tmp_path / "imgs" / "gone.jpg",
    }
    bad["empty"].write_bytes(b"")
    bad["truncated"].write_bytes(jpeg_bytes(9, (200, 200))[:600])
    bad["not_image"].write_text("hello")
    Image.new("L", (300, 300)).save(bad["too_large"])  # 90,000 pixels: over the 50,000 limit set below
    listing = tmp_path / "list.txt"
    names = [f"imgs/{p.name}" for p in good.values()] + [f"imgs/{p.name}" for p in bad.values()]
    listing.write_bytes("\n".join(names).encode() + b"\nimgs/caf\xe9.jpg\n")  # the last line is Latin-1, not UTF-8
    shard = write_tar(
        tmp_path / "ok-000.tar",
        {"a.jpg": jpeg_bytes(20), "a.txt": b"x", "b.jpg": jpeg_bytes(21), "c.txt": b"text without image"},
    )
    write_tar(tmp_path / "tmp.tar", {f"k{i}.jpg": jpeg_bytes(30 + i, (120, 90)) for i in range(4)})
    data = (tmp_path / "tmp.tar").read_bytes()
    cut_at = len(data) // 2 + 100  # inside the third image's bytes
    (tmp_path / "cut-001.tar").write_bytes(data[:cut_at])
    (tmp_path / "tmp.tar").unlink()
    return tmp_path, good, bad, listing, [str(shard), str(tmp_path / "cut-001.tar")]


def collect(units, workers, batch_size=2):
    """key -> pixels, and key -> skip reason, over the whole stream."""
    pixels, skipped, seen = {}, {}, []
    for batch in stream_batches(units, TRANSFORM, batch_size=batch_size, workers=workers, max_pixels=50_000):
        seen.append(batch)
        for i, key in enumerate(batch.keys):
            pixels[key] = batch.pixels[i]
        for _, key, reason, _ in batch.skipped:
            skipped[key] = reason
    return pixels, skipped, seen


@pytest.mark.parametrize("workers", [0, 2])
def test_every_bad_kind_is_skipped_and_counted(bad_world, workers):
    _, good, bad, listing, shards = bad_world
    counter = SkipCounter()
    units = plan_units([str(listing), *shards], unit_size=4, counter=counter)
    assert dict(counter.skipped) == {"bad_text": 1}  # the non-UTF-8 line of the list
    pixels, skipped, _ = collect(units, workers)
    # Good images come through as the reference transform of the decoded file, whatever the worker count.
    expected = {key: TRANSFORM(load_image(p)) for key, p in good.items()}
    expected["ok-000.tar:a"] = TRANSFORM(load_image(jpeg_bytes(20)))
    expected["ok-000.tar:b"] = TRANSFORM(load_image(jpeg_bytes(21)))
    for i in range(2):  # the cut shard's samples before the cut are still used
        expected[f"cut-001.tar:k{i}"] = TRANSFORM(load_image(jpeg_bytes(30 + i, (120, 90))))
    assert sorted(pixels) == sorted(expected)
    for key, want in expected.items():
        assert torch.equal(pixels[key], want), key
    by_key = {str(p): reason for reason, p in bad.items()}
    assert {k: v for k, v in skipped.items() if k in by_key} == by_key
    assert skipped["ok-000.tar:c"] == "incomplete_sample"
    assert skipped[shards[1]] == "bad_shard"
    # The third image of the cut shard is cut in its bytes: it is a bad sample or gone, never fatal.
    assert set(skipped) - set(by_key) - {"ok-000.tar:c", shards[1]} <= {"cut-001.tar:k2"}


def test_batches_stay_inside_units_and_are_cut_at_fixed_positions(tmp_path):
    paths = []
    for i in range(7):
        p = tmp_path / f"{i}.jpg"
        p.write_bytes(jpeg_bytes(i))
        paths.append(str(p))
    units = plan_units([str(tmp_path)], unit_size=4)
    assert [len(u.entries) for u in units] == [4, 3]
    for workers in (0, 1, 2):
        _, _, batches = collect(units, workers, batch_size=3)
        cuts = sorted((b.unit, b.part, tuple(b.positions)) for b in batches)
        assert cuts == [(units[0].name, 0, (0, 1, 2)), (units[0].name, 1, (3,)), (units[1].name, 0, (0, 1, 2))]
        assert all(b.parts == (2 if b.unit == units[0].name else 1) for b in batches)


def test_lists_resolve_against_their_own_folder(tmp_path):
    (tmp_path / "data" / "img").mkdir(parents=True)
    (tmp_path / "data" / "img" / "x.jpg").write_bytes(jpeg_bytes(0))
    (tmp_path / "data" / "t.csv").write_text("filepath,caption\nimg/x.jpg,a cat\n")
    (tmp_path / "data" / "t.jsonl").write_text(json.dumps({"image": "img/x.jpg", "url": "http://u"}) + "\n{bad\n")
    (tmp_path / "data" / "sub").mkdir()
    (tmp_path / "data" / "sub" / "y.png").write_bytes(b"")
    counter = SkipCounter()
    units = plan_units(
        [str(tmp_path / "data" / "t.csv"), str(tmp_path / "data" / "t.jsonl"), str(tmp_path / "data")], counter=counter
    )
    target = str(tmp_path / "data" / "img" / "x.jpg")
    assert [(e.key, e.meta) for e in units[0].entries] == [(target, {"caption": "a cat"})]
    assert [(e.key, e.meta) for e in units[1].entries] == [(target, {"url": "http://u"})]
    assert [e.key for e in units[2].entries] == [target, str(tmp_path / "data" / "sub" / "y.png")]  # recursive
    assert dict(counter.skipped) == {"bad_json": 1}
    (tmp_path / "empty").mkdir()
    with pytest.raises(BlipError, match="no images"):
        plan_units([str(tmp_path / "empty")])


def test_brace_patterns_expand_to_one_unit_per_shard(tmp_path):
    for i in range(3):
        write_tar(tmp_path / f"s-{i:03d}.tar", {"a.jpg": jpeg_bytes(i)})
    units = plan_units([str(tmp_path / "s-{000..002}.tar")])
    assert [u.shard for u in units] == [str(tmp_path / f"s-{i:03d}.tar") for i in range(3)]
    assert len({u.name for u in units}) == 3


def test_tracker_hands_back_whole_units_in_input_order():
    from blip.inference.engine import Batch

    def batch(unit, part, parts, positions, last):
        return Batch(unit, part, parts, [str(p) for p in positions], [{}] * len(positions), positions, None, [], last)

    batches = [
        batch("a", 0, 3, [0, 1], False),
        batch("a", 1, 3, [2, 3], False),
        batch("a", 2, 3, [4], True),
        batch("b", 0, None, [0, 1], False),
        batch("b", 1, 2, [2], True),
    ]
    random.Random(0).shuffle(batches)
    tracker, done = UnitTracker(), []
    for b in batches:
        done += tracker.add(b, [(p, f"{b.unit}{p}") for p in reversed(b.positions)])
    assert sorted(done) == [("a", ["a0", "a1", "a2", "a3", "a4"]), ("b", ["b0", "b1", "b2"])]


def test_store_refuses_another_jobs_folder(tmp_path):
    store = UnitStore(tmp_path / "parts", fingerprint={"units": ["u1"], "beams": 3})
    store.write("u1", [{"image": "x", "caption": "y"}])
    assert store.done("u1") and store.read("u1") == [{"image": "x", "caption": "y"}]
    assert not list((tmp_path / "parts").glob("*.tmp")) and not list((tmp_path / "parts").glob(".*"))
    UnitStore(tmp_path / "parts", fingerprint={"units": ["u1"], "beams": 3})  # the same job resumes
    with pytest.raises(BlipError, match="changed: beams"):
        UnitStore(tmp_path / "parts", fingerprint={"units": ["u1"], "beams": 5})


def test_progress_prints_lines_when_not_a_terminal(capsys):
    progress = Progress(10, every=0.0)
    progress.update(4)
    progress.update(6)
    progress.close()
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines[0].startswith("blip: 4/10 images,") and "img/s" in lines[0] and "ETA" in lines[0]
    assert lines[-1].startswith("blip: 10/10 images,")


@pytest.mark.parametrize("workers", [0, 2])
def test_members_are_listed_from_tar_headers_and_digests_are_of_the_raw_bytes(tmp_path, workers):
    images = {f"{i:03d}.jpg": jpeg_bytes(i) for i in range(3)}
    full = write_tar(tmp_path / "full.tar", {**images, "000.txt": b"a caption"})
    with tarfile.open(full) as tar:
        cut_at = tar.getmember("002.jpg").offset_data + 10  # the third image cut in the middle
    write_tar(tmp_path / "cut.tar", images, cut=cut_at)
    (tmp_path / "list.txt").write_text("cut.tar\n")
    (tmp_path / "a.png").write_bytes(jpeg_bytes(9))
    counter = SkipCounter()
    units = plan_units([str(full), str(tmp_path / "list.txt"), str(tmp_path / "a.png")], counter=counter, members=True)
    entries = [e for u in units for e in u.entries]
    # The shard members by offset (tarfile's own reading of the headers), the cut one counted, not listed.
    with tarfile.open(full) as tar:
        expected = [(f"{full}#{m.name[:3]}", m.offset_data, m.size) for m in tar if m.name.endswith(".jpg")]
    assert [(e.key, e.offset, e.size) for e in entries[:3]] == expected
    assert [e.key for e in entries[3:5]] == [f"{tmp_path / 'cut.tar'}#000", f"{tmp_path / 'cut.tar'}#001"]
    assert dict(counter.skipped) == {"truncated": 1, "bad_shard": 1}
    assert entries[5].path == str(tmp_path / "a.png") and entries[5].offset == -1
    got = {}
    for batch in stream_batches(units, TRANSFORM, batch_size=2, workers=workers, digest=True):
        assert not batch.skipped
        got.update({k: m["__sha256__"] for k, m in zip(batch.keys, batch.meta)})
    raw = {
        **{f"{full}#{n[:3]}": d for n, d in images.items()},
        **{f"{tmp_path / 'cut.tar'}#{n[:3]}": d for n, d in list(images.items())[:2]},
        str(tmp_path / "a.png"): jpeg_bytes(9),
    }
    assert got == {k: hashlib.sha256(d).hexdigest() for k, d in raw.items()}
