"""Search index speed: indexing images/s (base preset), query latency and faiss recall@10 at 10k / 100k / 1M vectors.

Indexing: `Blip.index` on N synthetic JPEGs (base preset: ViT-B/16 at 384, random weights) against its peer, plain
`Blip.image_features` on the same files, timed side by side; the ratio is the index's own cost (hashing, shards,
metadata). Re-ranking: `Index.search` of a text with rerank_k = N (every image re-read, through the ViT and the
image-grounded encoder) against rerank_k = 0 on the same index; its cost grows linearly with rerank_k.

Vectors: random unit vectors (dim 256, the base ITC width) written through `IndexWriter` in 1024-row shards (what
`blip index` writes), then per size: the exact search (chunked matmul over the memory-mapped float16 shards) and
faiss IVF (nprobe chosen at build for recall@10 >= 0.95 on stored vectors), both against a peer, numpy's matmul over
the whole matrix held in RAM as float32; recall@10 of faiss against exact on fresh random queries. Random vectors
have no cluster structure, the hardest case for IVF.

    .venv/bin/python benchmarks/bench_index.py                     # everything, CPU, 2 threads
    .venv/bin/python benchmarks/bench_index.py --sizes 10000 100000 --images 0
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from blip.api import Blip
from blip.index import Index, IndexWriter, Item
from blip.model.blip import BlipModel
from blip.model.config import preset
from blip.tokenizer import Tokenizer

DIM = 256


def cpu_name() -> str:
    out = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
    return next(
        (line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("Model name")),
        platform.processor(),
    )


def bert_shaped_tokenizer() -> Tokenizer:
    """A 30,522-token WordPiece vocabulary with BERT's special ids (as benchmarks/bench_capfilt.py)."""
    words = ["a", "picture", "of", "red", "car", "on", "the", "road"]
    vocab = ["[PAD]"] + [f"[unused{i}]" for i in range(99)] + ["[UNK]", "[CLS]", "[SEP]", "[MASK]"] + words
    vocab += [f"tok{i}" for i in range(30522 - len(vocab))]
    return Tokenizer.from_vocab(vocab)


def timed(fn, repeats: int = 1) -> tuple[float, object]:
    times, out = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), out


def bench_model(root: Path, n: int, batch: int) -> dict:
    root.mkdir(parents=True)
    torch.manual_seed(0)
    model = Blip(BlipModel(preset("base", task="retrieval")), bert_shaped_tokenizer())
    rng = np.random.default_rng(0)
    files = []
    for i in range(n):
        files.append(str(root / f"img{i}.jpg"))
        Image.fromarray(rng.integers(0, 255, (480, 640, 3), dtype=np.uint8)).save(files[-1], quality=90)
    model.image_features(files[:1])  # untimed: page faults and kernel set-up
    t_peer, _ = timed(lambda: model.image_features(files, batch_size=batch))
    t_index, index = timed(lambda: model.index(files, root / "idx", batch_size=batch))
    t_query, _ = timed(lambda: index.search(model, text="a red car on the road", top_k=10, rerank_k=0), 3)
    t_rerank, hits = timed(lambda: index.search(model, text="a red car on the road", top_k=10, rerank_k=n))
    assert all(h.itm is not None for h in hits)
    return {
        "images": n,
        "batch": batch,
        "index_s": t_index,
        "peer_image_features_s": t_peer,
        "index_images_per_s": n / t_index,
        "peer_images_per_s": n / t_peer,
        "index_over_peer": t_index / t_peer,
        "query_itc_s": t_query,
        f"query_rerank_{n}_s": t_rerank,
        "rerank_s_per_candidate": (t_rerank - t_query) / n,
    }


def write_random_index(root: Path, n: int, rng: np.random.Generator) -> np.ndarray:
    writer = IndexWriter(root, {"weights": "random unit vectors"}, DIM)
    vectors = rng.standard_normal((n, DIM), dtype=np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    rows = []
    for start in range(0, n, 1024):
        items = [Item(f"{i:08d}", f"/nowhere/{i}.jpg", -1, 1, 0.0, "") for i in range(start, min(n, start + 1024))]
        places = writer.add(items, vectors[start : start + 1024])
        rows += [{**vars(it), "shard": s, "row": r} for it, (s, r) in zip(items, places)]
    t_build, report = timed(lambda: writer.commit(rows, nn="faiss", recall_target=0.95))
    return vectors.astype(np.float16).astype(np.float32), {
        "faiss_build_s": t_build,
        "nlist": report.nlist,
        "nprobe": report.nprobe,
        "build_recall_at_10": report.recall_at_10,
    }


def bench_vectors(root: Path, n: int, queries: int) -> dict:
    rng = np.random.default_rng(n)
    t_write, (matrix, info) = timed(lambda: write_random_index(root, n, rng))
    index = Index.open(root)
    q = rng.standard_normal((queries, DIM), dtype=np.float32)
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    index.nearest(q[0], 10, exact=True)  # untimed: first touch of the memory map
    exact, approx, peer = [], [], []
    t_exact = t_faiss = t_peer = 0.0
    for v in q:  # interleaved, so background load hits all three alike
        start = time.perf_counter()
        exact.append(index.nearest(v, 10, exact=True)[1])
        t_exact += time.perf_counter() - start
        start = time.perf_counter()
        approx.append(index.nearest(v, 10)[1])
        t_faiss += time.perf_counter() - start
        start = time.perf_counter()
        scores = matrix @ v
        top = np.argpartition(-scores, 9)[:10]
        peer.append(top[np.argsort(-scores[top])])
        t_peer += time.perf_counter() - start
    assert all(set(a) == set(b) for a, b in zip(exact, peer)), "exact search disagrees with numpy"
    recall = float(np.mean([len(np.intersect1d(a, e)) / 10 for a, e in zip(approx, exact)]))
    return {
        "vectors": n,
        "write_and_faiss_build_s": t_write,
        **info,
        "queries": queries,
        "exact_ms": 1000 * t_exact / queries,
        "faiss_ms": 1000 * t_faiss / queries,
        "numpy_in_ram_ms": 1000 * t_peer / queries,
        "faiss_recall_at_10": recall,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--images", type=int, default=8, help="images for the indexing / re-ranking part (0: skip)")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--sizes", type=int, nargs="*", default=[10_000, 100_000, 1_000_000])
    ap.add_argument("--queries", type=int, default=20)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    results = {"cpu": cpu_name(), "threads": args.threads, "torch": torch.__version__, "vectors": []}
    with tempfile.TemporaryDirectory() as tmp:
        if args.images:
            results["model"] = bench_model(Path(tmp) / "model", args.images, args.batch)
            print(json.dumps(results["model"]), flush=True)
        for n in args.sizes:
            folder = Path(tmp) / f"v{n}"
            results["vectors"].append(bench_vectors(folder, n, args.queries))
            print(json.dumps(results["vectors"][-1]), flush=True)
            shutil.rmtree(folder)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
