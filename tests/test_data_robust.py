"""Every kind of bad input is skipped and counted by reason; a pass never dies on one bad sample."""

import io
import json
import struct
import tarfile
import zlib

import numpy as np
import pytest
from PIL import Image
from torch.utils.data import DataLoader

from blip.data import (
    CountingLoader,
    DataError,
    PairDataset,
    PairRecord,
    Skip,
    SkipCounter,
    VideoDataset,
    VideoRecord,
    WebDatasetPairs,
    collate,
    eval_transform,
    read_karpathy_train,
    read_pretrain_json,
    read_table,
)

TF = eval_transform(16)


def noise_jpeg(size=64) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (size, size, 3), dtype=np.uint8)).save(buf, "JPEG")
    return buf.getvalue()


def png_header_only(width: int, height: int) -> bytes:
    """A PNG that claims width x height pixels (a decompression bomb needs no more than its header to be caught)."""

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0")) + chunk(b"IEND", b"")


def corrupt_png() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (32, 32), (1, 2, 3)).save(buf, "PNG")
    data = bytearray(buf.getvalue())
    start = data.index(b"IDAT") + 4
    data[start : start + 8] = b"\xff" * 8  # garbage in the compressed stream, CRC now wrong too
    return bytes(data)


BAD_IMAGES = {
    "empty": lambda: b"",
    "truncated": lambda: noise_jpeg()[: len(noise_jpeg()) // 2],
    "corrupt": corrupt_png,
    "not_image": lambda: b"<html>404 not found</html>",
    "too_large": lambda: png_header_only(20000, 20000),
}


@pytest.mark.parametrize("reason", sorted(BAD_IMAGES))
def test_bad_image_file_is_skipped_with_its_reason(tmp_path, reason):
    (tmp_path / "bad.jpg").write_bytes(BAD_IMAGES[reason]())
    item = PairDataset([PairRecord(str(tmp_path / "bad.jpg"), ("a caption",), "1")], TF)[0]
    assert isinstance(item, Skip) and item.reason == reason


def test_missing_file_is_skipped(tmp_path):
    item = PairDataset([PairRecord(str(tmp_path / "nope.jpg"), ("a caption",), "1")], TF)[0]
    assert isinstance(item, Skip) and item.reason == "missing"


def test_loader_with_workers_counts_every_reason_and_finishes(tmp_path):
    good = noise_jpeg(16)
    files = {f"good{i}.jpg": good for i in range(5)}
    files.update({f"{reason}.jpg": make() for reason, make in BAD_IMAGES.items()})
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    records = [PairRecord(str(tmp_path / n), ("caption",), n) for n in files]
    records.append(PairRecord(str(tmp_path / "missing.jpg"), ("caption",), "m"))
    records.append(PairRecord(str(tmp_path / "good0.jpg"), ("...",), "e"))  # empty once cleaned
    loader = CountingLoader(
        DataLoader(PairDataset(records, TF), batch_size=3, num_workers=2, collate_fn=collate), report=False
    )
    ids = [i for batch in loader for i in batch["image_id"]]
    assert sorted(ids) == [f"good{i}.jpg" for i in range(5)]
    assert loader.counter.used == 5
    assert dict(loader.counter.skipped) == {r: 1 for r in [*BAD_IMAGES, "missing", "empty_text"]}
    assert "skipped" in loader.counter.summary()


def test_a_pass_that_is_mostly_bad_stops_with_a_clear_error(tmp_path):
    records = [PairRecord(str(tmp_path / f"{i}.jpg"), ("c",), str(i)) for i in range(30)]
    loader = CountingLoader(
        DataLoader(PairDataset(records, TF), batch_size=10, collate_fn=collate), min_samples=20, report=False
    )
    with pytest.raises(DataError, match="most samples are bad"):
        list(loader)


def test_bad_json_lines_are_skipped_and_counted(tmp_path):
    (tmp_path / "t.jsonl").write_text(
        '{"image": "a.jpg", "caption": "ok"}\n{"image": "b.jpg", "capt\n'
        '[1, 2]\n\n{"caption": "no image"}\n{"image": "c.jpg", "caption": "ok too"}\n'
    )
    counter = SkipCounter()
    recs = read_table(tmp_path / "t.jsonl", tmp_path, counter)
    assert [r.texts[0] for r in recs] == ["ok", "ok too"]
    assert dict(counter.skipped) == {"bad_json": 3}


def test_json_list_with_bad_entries(tmp_path):
    (tmp_path / "p.json").write_text(
        json.dumps(
            [
                {"image": "a.jpg", "caption": "fine"},
                {"caption": "no image"},
                "not an object",
                {"image": "b.jpg", "caption": 5},
            ]
        )
    )
    counter = SkipCounter()
    assert len(read_pretrain_json(tmp_path / "p.json", tmp_path, counter)) == 1
    assert dict(counter.skipped) == {"bad_json": 3}


def test_whole_file_not_json_raises_a_user_error(tmp_path):
    (tmp_path / "p.json").write_text("{not json")
    with pytest.raises(DataError, match="not valid JSON"):
        read_pretrain_json(tmp_path / "p.json")


def test_non_utf8_text_is_skipped_per_entry(tmp_path):
    good = json.dumps({"image": "a.jpg", "caption": "good", "image_id": "1"}).encode()
    bad = b'{"image": "b.jpg", "caption": "caf\xe9 latin-1", "image_id": "2"}'
    (tmp_path / "k.json").write_bytes(b"[" + good + b", " + bad + b"]")
    (tmp_path / "t.csv").write_bytes(b"image,caption\na.jpg,good\nb.jpg,caf\xe9\n")
    counter = SkipCounter()
    assert [r.image_id for r in read_karpathy_train(tmp_path / "k.json", tmp_path, counter)] == ["1"]
    assert [r.texts for r in read_table(tmp_path / "t.csv", tmp_path, counter)] == [("good",)]
    assert dict(counter.skipped) == {"bad_text": 2}


def test_empty_captions_are_skipped(tmp_path):
    (tmp_path / "p.json").write_text(
        json.dumps(
            [
                {"image": "a.jpg", "caption": ""},
                {"image": "a.jpg", "caption": "   "},
                {"image": "a.jpg", "caption": ["", "x"]},
            ]
        )
    )
    counter = SkipCounter()
    recs = read_pretrain_json(tmp_path / "p.json", tmp_path, counter)
    assert [r.texts for r in recs] == [("x",)] and dict(counter.skipped) == {"empty_text": 3}


def shard(members) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def test_truncated_shard_and_bad_samples_in_shards_are_counted(tmp_path):
    jpg = noise_jpeg(16)
    whole = shard(
        [("a.jpg", jpg), ("a.txt", b"first"), ("b.jpg", jpg), ("b.txt", b"second"), ("c.jpg", jpg), ("c.txt", b"third")]
    )
    cut = whole.index(b"second") - 200  # inside b.jpg's data
    (tmp_path / "0.tar").write_bytes(whole[:cut])
    (tmp_path / "1.tar").write_bytes(
        shard(
            [
                ("d.jpg", jpg),
                ("d.txt", b"fine"),
                ("e.jpg", b""),
                ("e.txt", b"zero-byte image"),
                ("f.jpg", jpg),
                ("f.txt", b"\xff\xfe not utf-8"),
                ("g.txt", b"no image at all"),
                ("h.jpg", jpg),
                ("h.txt", b"  "),
                ("i.png", png_header_only(30000, 30000)),
                ("i.txt", b"bomb"),
            ]
        )
    )
    items = list(
        WebDatasetPairs(
            [str(tmp_path / "0.tar"), str(tmp_path / "missing.tar"), str(tmp_path / "1.tar")], TF, shuffle_buffer=0
        )
    )
    good = sorted(i.image_id for i in items if not isinstance(i, Skip))
    reasons = sorted(i.reason for i in items if isinstance(i, Skip))
    assert good == ["a", "d"]
    # 0.tar: the cut (bad_shard) leaves b.jpg without its text (incomplete_sample); c is lost with the cut.
    assert reasons == [
        "bad_shard",
        "bad_text",
        "empty",
        "empty_text",
        "incomplete_sample",
        "incomplete_sample",
        "missing",
        "too_large",
    ]


def test_corrupt_video_is_skipped(tmp_path):
    (tmp_path / "v.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 4)
    (tmp_path / "e.mp4").write_bytes(b"")
    ds = VideoDataset(
        [
            VideoRecord(str(tmp_path / "v.mp4"), ("c",), "v"),
            VideoRecord(str(tmp_path / "e.mp4"), ("c",), "e"),
            VideoRecord(str(tmp_path / "m.mp4"), ("c",), "m"),
        ],
        TF,
    )
    assert [ds[i].reason for i in range(3)] == ["bad_video", "empty", "missing"]
