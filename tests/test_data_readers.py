"""Each reader on small data written here in the real format; every value checked against what was written."""

import io
import json
import tarfile
from pathlib import Path

import av
import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from blip.data import (
    CountingLoader,
    ImageDataset,
    NLVR2Dataset,
    PairDataset,
    SkipCounter,
    VideoDataset,
    VQADataset,
    WebDatasetPairs,
    collate,
    eval_texts,
    eval_transform,
    read_answer_list,
    read_karpathy_eval,
    read_karpathy_train,
    read_msrvtt,
    read_nlvr2,
    read_pretrain_json,
    read_table,
    read_vqa,
    read_vqa_official,
)


def image_bytes(colour, fmt="JPEG", size=(20, 16)):
    buf = io.BytesIO()
    Image.new("RGB", size, colour).save(buf, format=fmt)
    return buf.getvalue()


def write_image(path: Path, colour=(255, 0, 0), fmt="JPEG"):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(image_bytes(colour, fmt))


def dump(path: Path, data):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))


TF = eval_transform(32)


def test_pretrain_json(tmp_path):
    write_image(tmp_path / "img" / "a.jpg")
    write_image(tmp_path / "img" / "b.jpg", (0, 0, 255))
    dump(
        tmp_path / "pre.json",
        [
            {"image": "img/a.jpg", "caption": "A red Square."},
            {"image": "img/b.jpg", "caption": ["web text", "a blue square"]},
        ],
    )
    recs = read_pretrain_json(tmp_path / "pre.json", tmp_path)
    assert [r.image for r in recs] == [str(tmp_path / "img/a.jpg"), str(tmp_path / "img/b.jpg")]
    assert recs[0].texts == ("A red Square.",) and recs[1].texts == ("web text", "a blue square")
    sample = PairDataset(recs, TF)[0]
    assert sample.caption == "a red square" and sample.image.shape == (3, 32, 32)
    assert PairDataset(recs, TF)[1].caption in ("web text", "a blue square")


@pytest.mark.parametrize("layout", ["coco", "flickr30k"])
def test_karpathy_train_and_eval(tmp_path, layout):
    if layout == "coco":
        names = ["val2014/COCO_val2014_000000391895.jpg", "val2014/COCO_val2014_000000522418.jpg"]
        ids = ["coco_391895", "coco_522418"]
        eval_ids = ["391895", "522418"]
    else:
        names = ["flickr30k-images/1000092795.jpg", "flickr30k-images/10002456.jpg"]
        ids = ["0", "1"]
        eval_ids = ["1000092795", "10002456"]
    for n in names:
        write_image(tmp_path / n)
    dump(
        tmp_path / "train.json",
        [
            {"caption": "Cap one.", "image": names[0], "image_id": ids[0]},
            {"caption": "cap two", "image": names[0], "image_id": ids[0]},
            {"caption": "cap three", "image": names[1], "image_id": ids[1]},
        ],
    )
    dump(
        tmp_path / "test.json",
        [
            {"image": names[0], "caption": ["a", "b", "c", "d", "e"]},
            {"image": names[1], "caption": ["f", "g", "h", "i", "j"]},
        ],
    )
    train = read_karpathy_train(tmp_path / "train.json", tmp_path)
    assert [(r.texts[0], r.image_id) for r in train] == [
        ("Cap one.", ids[0]),
        ("cap two", ids[0]),
        ("cap three", ids[1]),
    ]
    rset = read_karpathy_eval(tmp_path / "test.json", tmp_path)
    assert rset.texts == list("abcdefghij")
    assert rset.txt2img == [0] * 5 + [1] * 5
    assert rset.img2txt == [[0, 1, 2, 3, 4], [5, 6, 7, 8, 9]]
    assert rset.image_ids == eval_ids
    assert eval_texts(rset)[0] == "a"
    item = ImageDataset(rset, TF)[1]
    assert item.index == 1 and item.image_id == eval_ids[1]


def test_vqa_blip_format_with_vg_and_answer_list(tmp_path):
    write_image(tmp_path / "coco" / "train2014" / "x.jpg")
    write_image(tmp_path / "vg" / "image" / "1.jpg")
    dump(
        tmp_path / "vqa_train.json",
        [
            {
                "question_id": 7,
                "question": "What color is it?",
                "answer": ["red"] * 7 + ["maroon"] * 3,
                "image": "train2014/x.jpg",
                "dataset": "vqa",
            }
        ],
    )
    dump(
        tmp_path / "vg_qa.json",
        [{"question_id": 8, "question": "How many?", "answer": "2", "image": "image/1.jpg", "dataset": "vg"}],
    )
    dump(tmp_path / "answer_list.json", ["red", "2", "yes"])
    vqa = read_vqa(tmp_path / "vqa_train.json", tmp_path / "coco")
    vg = read_vqa(tmp_path / "vg_qa.json", tmp_path / "vg")
    assert vqa[0].answers == ("red", "maroon") and vqa[0].weights == pytest.approx((0.7, 0.3))
    assert vg[0].answers == ("2",) and vg[0].weights == (0.2,) and vg[0].source == "vg"
    assert read_answer_list(tmp_path / "answer_list.json") == ["red", "2", "yes"]
    s = VQADataset(vqa + vg, TF)[0]
    assert s.question == "what color is it?" and s.question_id == "7"


def test_vqa_official_format(tmp_path):
    write_image(tmp_path / "val2014" / "COCO_val2014_000000000042.jpg")
    dump(
        tmp_path / "q.json",
        {"data_subtype": "val2014", "questions": [{"image_id": 42, "question": "Is this a cat?", "question_id": 420}]},
    )
    dump(
        tmp_path / "a.json",
        {
            "annotations": [
                {
                    "question_id": 420,
                    "image_id": 42,
                    "answers": [{"answer": "yes", "answer_confidence": "yes", "answer_id": i + 1} for i in range(9)]
                    + [{"answer": "no", "answer_confidence": "maybe", "answer_id": 10}],
                }
            ]
        },
    )
    recs = read_vqa_official(tmp_path / "q.json", tmp_path / "a.json", tmp_path)
    assert recs[0].image == str(tmp_path / "val2014" / "COCO_val2014_000000000042.jpg")
    assert dict(zip(recs[0].answers, recs[0].weights)) == pytest.approx({"yes": 0.9, "no": 0.1})
    assert VQADataset(recs, TF)[0].question == "is this a cat?"


def test_nlvr2_blip_and_official(tmp_path):
    for name in (
        "images/train/3/train-1-0-img0.png",
        "images/train/3/train-1-0-img1.png",
        "dev/dev-5-2-img0.png",
        "dev/dev-5-2-img1.png",
    ):
        write_image(tmp_path / name, fmt="PNG")
    dump(
        tmp_path / "nlvr_train.json",
        [
            {
                "images": ["images/train/3/train-1-0-img0.png", "images/train/3/train-1-0-img1.png"],
                "sentence": "The left image has two dogs.",
                "label": "True",
            }
        ],
    )
    (tmp_path / "dev.jsonl").write_text(
        json.dumps({"identifier": "dev-5-2-1", "sentence": "No dogs.", "label": "False"}) + "\n"
    )
    blip = read_nlvr2(tmp_path / "nlvr_train.json", tmp_path)
    official = read_nlvr2(tmp_path / "dev.jsonl", tmp_path)
    assert blip[0].label is True and official[0].label is False
    assert official[0].images == (str(tmp_path / "dev/dev-5-2-img0.png"), str(tmp_path / "dev/dev-5-2-img1.png"))
    s = NLVR2Dataset(blip, TF)[0]
    assert s.statement == "the left image has two dogs" and s.label == 1 and s.image1.shape == (3, 32, 32)


def write_mp4(path: Path, colours):
    with av.open(str(path), "w") as c:
        st = c.add_stream("mpeg4", rate=4)
        st.width, st.height, st.pix_fmt = 32, 32, "yuv420p"
        for col in colours:
            frame = av.VideoFrame.from_ndarray(np.full((32, 32, 3), col, np.uint8), format="rgb24")
            for p in st.encode(frame):
                c.mux(p)
        for p in st.encode():
            c.mux(p)


def test_msrvtt_both_layouts_and_video_frames(tmp_path):
    # Frame i is grey level 10*i, so the sampled indices can be read back from pixel values.
    write_mp4(tmp_path / "video7.mp4", [(10 * i,) * 3 for i in range(16)])
    (tmp_path / "test.jsonl").write_text(json.dumps({"clip_name": "video7", "caption": "A grey clip."}) + "\n")
    dump(
        tmp_path / "info.json",
        {
            "videos": [{"video_id": "video7", "split": "test"}, {"video_id": "video8", "split": "train"}],
            "sentences": [
                {"video_id": "video7", "caption": "one", "sen_id": 0},
                {"video_id": "video8", "caption": "x", "sen_id": 1},
                {"video_id": "video7", "caption": "two", "sen_id": 2},
            ],
        },
    )
    jsonl = read_msrvtt(tmp_path / "test.jsonl", tmp_path)
    official = read_msrvtt(tmp_path / "info.json", tmp_path, split="test")
    assert jsonl[0].video == str(tmp_path / "video7.mp4") and jsonl[0].captions == ("A grey clip.",)
    assert [(r.video_id, r.captions) for r in official] == [("video7", ("one", "two"))]
    sample = VideoDataset(jsonl, eval_transform(32), num_frames=8)[0]
    assert sample.frames.shape == (8, 3, 32, 32) and sample.captions == ["a grey clip"]
    # Uniform sampling of 8 out of 16 frames takes frames 0, 2, ..., 14.
    from blip.data.transforms import MEAN, STD

    grey = (sample.frames[:, 0].mean(dim=(1, 2)) * STD[0] + MEAN[0]) * 255
    assert torch.allclose(grey, torch.arange(0, 160, 20, dtype=torch.float), atol=4)


def test_csv_and_jsonl_tables(tmp_path):
    write_image(tmp_path / "a.jpg")
    (tmp_path / "t.csv").write_text('filepath,title\na.jpg,"A caption, with a comma"\n')
    (tmp_path / "t.jsonl").write_text('{"image": "a.jpg", "text": "jsonl caption"}\n')
    (tmp_path / "t.tsv").write_text("path\tcaption\na.jpg\ttab caption\n")
    assert read_table(tmp_path / "t.csv", tmp_path)[0].texts == ("A caption, with a comma",)
    assert read_table(tmp_path / "t.jsonl", tmp_path)[0].texts == ("jsonl caption",)
    rec = read_table(tmp_path / "t.tsv", tmp_path)[0]
    assert rec.texts == ("tab caption",) and rec.image == str(tmp_path / "a.jpg")


def write_shard(path: Path, members):
    with tarfile.open(path, "w") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def test_webdataset_img2dataset_layout(tmp_path):
    write_shard(
        tmp_path / "00000.tar",
        [
            ("000000000.jpg", image_bytes((255, 0, 0))),
            ("000000000.txt", b"A red one."),
            ("000000000.json", json.dumps({"caption": "A red one.", "url": "http://x", "status": "success"}).encode()),
            ("000000001.png", image_bytes((0, 255, 0), "PNG")),
            ("000000001.txt", b"a green one"),
        ],
    )
    write_shard(
        tmp_path / "00001.tar",
        [
            ("000010000.webp", image_bytes((0, 0, 255), "WEBP")),
            ("000010000.json", json.dumps({"caption": "caption only in json"}).encode()),
        ],
    )
    ds = WebDatasetPairs(str(tmp_path / "{00000..00001}.tar"), TF, shuffle_buffer=0)
    got = {s.image_id: s.caption for s in ds}
    assert got == {"000000000": "a red one", "000000001": "a green one", "000010000": "caption only in json"}
    # Two DataLoader workers split the two shards: every sample exactly once.
    loader = CountingLoader(
        DataLoader(WebDatasetPairs(str(tmp_path), TF), batch_size=2, num_workers=2, collate_fn=collate), report=False
    )
    ids = sorted(i for b in loader for i in b["image_id"])
    assert ids == ["000000000", "000000001", "000010000"] and loader.counter.used == 3


def test_webdataset_splits_shards_by_rank(tmp_path, monkeypatch):
    for k in range(4):
        write_shard(tmp_path / f"{k}.tar", [(f"{k}.jpg", image_bytes((k, k, k))), (f"{k}.txt", b"t")])
    import blip.data.webdata as webdata

    seen = []
    for rank in range(2):
        monkeypatch.setattr(webdata, "rank_and_world", lambda rank=rank: (rank, 2))
        seen.append({s.image_id for s in WebDatasetPairs(str(tmp_path), TF, shuffle_buffer=0)})
    assert seen[0].isdisjoint(seen[1]) and seen[0] | seen[1] == {"0", "1", "2", "3"}


def test_pair_loader_batches_through_workers(tmp_path):
    for i in range(6):
        write_image(tmp_path / f"{i}.jpg", (40 * i, 0, 0))
    dump(tmp_path / "p.json", [{"image": f"{i}.jpg", "caption": f"image {i}"} for i in range(6)])
    counter = SkipCounter()
    recs = read_pretrain_json(tmp_path / "p.json", tmp_path, counter)
    loader = CountingLoader(
        DataLoader(PairDataset(recs, TF), batch_size=4, num_workers=2, collate_fn=collate), counter, report=False
    )
    batches = list(loader)
    assert [b["image"].shape for b in batches] == [(4, 3, 32, 32), (2, 3, 32, 32)]
    assert [c for b in batches for c in b["caption"]] == [f"image {i}" for i in range(6)]
