"""The miniature's counterpart of the paper's DeiT initialisation: the demo's vision tower trained with labels first.

The paper starts its ViT from ImageNet-trained DeiT weights; `make demo` (tasks/ablation.py) starts every row from
the tower this module trains, once, on a supervised task of the synthetic world: from its class token, which
colours, shapes and colour-shape pairs are present, what shape and colour fill each cell of the 3x3 grid, and how
many objects there are; from every patch token, the shape and colour of the object under it. The scenes come from
their own seed stream (STREAM_TOWER), never from a demo world, as ImageNet is not COCO, and there are many more of
them than a demo world holds (a pool of fresh scenes), because a ViT without a locality prior needs far more samples
than the demo's 24,000 to see shapes (BENCHMARKS.md).

    python -m blip.tasks.vision_pretrain --out runs/tower                  # 5,000 steps of batch 48, 1 thread
    python -m blip.tasks.vision_pretrain --probe src/blip/assets/tower_tiny_synth.safetensors

writes OUT/tower.safetensors (the VisionEncoder's state dict; blip/assets/tower_tiny_synth.safetensors is the one
the demo loads), OUT/probe.json (held-out AUCs of its read-outs during training, and a frozen probe of its class
token against a random tower on a demo world's scenes) and, on the way, OUT/pool_*.npz (the rendered training
scenes, 1.6 GB: delete it after). The batches depend only on (seed, step), so a run killed and restarted with the
same arguments continues from its last checkpoint (every --eval-every steps) and sees the same samples. The shipped
file was made in two parts (BENCHMARKS.md): `--steps 8000` up to its step-2000 checkpoint, then `--steps 5000`
resumed from it to the end; the lr between steps 500 and 2000 was up to 1.2x that of a plain `--steps 5000` run.
"""

from __future__ import annotations

import argparse
import io
import json
import math
import time
from multiprocessing import Pool
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from safetensors.torch import load_file, save_file
from torch import nn
from torch.nn import functional as F

from blip.data.synth import COLOURS, SHAPES, encode_jpeg, make_scene, render_scene
from blip.data.synth.vocabulary import STREAM_IMAGE
from blip.data.transforms import MEAN, STD
from blip.model.config import VisionConfig, preset
from blip.model.vision import VisionEncoder

# A seed stream of its own (the demo's worlds use streams 1-4 of blip/data/synth/vocabulary.py).
STREAM_TOWER = 17
HELDOUT_FROM = 10**8  # scene indices of the held-out scenes: far beyond any pool
SIZE, PATCH, GRID = 64, 8, 8
NC, NS = len(COLOURS), len(SHAPES)
COLOUR_IDS = {c: i for i, c in enumerate(COLOURS)}
SHAPE_IDS = {s: i for i, s in enumerate(SHAPES)}
# Class-token targets: multi-hot [colours | shapes | colour-shape pairs], then per cell (shape or empty, colour or
# empty) and the object count; patch targets: shape or none, colour or none.
MULTI = NC + NS + NC * NS


def tower_config() -> VisionConfig:
    """The demo's vision tower: tiny preset at 64 px with 8-px patches and 2 blocks (tasks/ablation.py's model)."""
    return preset("tiny", **{"vision.image_size": SIZE, "vision.patch_size": PATCH, "vision.depth": 2}).vision


def new_tower(cfg: VisionConfig) -> VisionEncoder:
    """A VisionEncoder initialised as BlipModel initialises its visual encoder (Linear std cfg.init_std)."""
    vit = VisionEncoder(cfg)
    for module in vit.modules():
        if isinstance(module, nn.Linear):
            nn.init.trunc_normal_(module.weight, std=cfg.init_std)
    return vit


def scene_targets(scene: dict[str, Any]) -> dict[str, np.ndarray]:
    """The labels of one scene graph (with bboxes filled in by render_scene)."""
    multi = np.zeros(MULTI, np.float32)
    cell_shape, cell_colour = np.full(9, NS, np.int64), np.full(9, NC, np.int64)
    patch_shape, patch_colour = np.full((GRID, GRID), NS, np.int64), np.full((GRID, GRID), NC, np.int64)
    centres = (np.arange(GRID) + 0.5) * PATCH
    for o in scene["objects"]:
        c, s = COLOUR_IDS[o["colour"]], SHAPE_IDS[o["shape"]]
        multi[[c, NC + s, NC + NS + c * NS + s]] = 1.0
        cell_shape[o["row"] * 3 + o["col"]], cell_colour[o["row"] * 3 + o["col"]] = s, c
        x0, y0, x1, y1 = o["bbox"]
        inside = ((centres >= y0) & (centres <= y1))[:, None] & ((centres >= x0) & (centres <= x1))[None, :]
        patch_shape[inside], patch_colour[inside] = s, c
    return {
        "multi": multi,
        "cell_shape": cell_shape,
        "cell_colour": cell_colour,
        "count": np.array(len(scene["objects"]) - 1),
        "patch_shape": patch_shape.reshape(-1),
        "patch_colour": patch_colour.reshape(-1),
    }


def render(args: tuple[int, int, int]) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Scene (seed, stream, index): its image as the demo reads it (through JPEG) and its labels."""
    rng = np.random.default_rng(list(args))
    scene = make_scene(rng)
    image = render_scene(scene, SIZE, rng)
    pixels = np.asarray(Image.open(io.BytesIO(encode_jpeg(image))).convert("RGB"))
    return pixels, scene_targets(scene)


def render_set(seed: int, indices: range, workers: int, stream: int = STREAM_TOWER) -> dict[str, np.ndarray]:
    """Images (N, 64, 64, 3) uint8 and stacked labels of the scenes `indices` of a seed stream."""
    with Pool(workers) as pool:
        items = pool.map(render, [(seed, stream, i) for i in indices], chunksize=256)
    out = {"pixels": np.stack([p for p, _ in items])}
    out |= {k: np.stack([t[k] for _, t in items]) for k in items[0][1]}
    return out


def batch_tensors(data: dict[str, np.ndarray], idx: np.ndarray, mirror: np.ndarray | None = None) -> dict:
    """Normalised pixels and labels of rows `idx`; rows with mirror set are flipped left-right (labels too)."""
    pixels = torch.from_numpy(data["pixels"][idx]).permute(0, 3, 1, 2).float() / 255.0
    t = {k: torch.from_numpy(v[idx]) for k, v in data.items() if k != "pixels"}
    if mirror is not None and mirror.any():
        m = torch.from_numpy(mirror)
        pixels[m] = pixels[m].flip(-1)
        for key, side in (("cell_shape", 3), ("cell_colour", 3), ("patch_shape", GRID), ("patch_colour", GRID)):
            t[key][m] = t[key][m].view(-1, side, side).flip(-1).reshape(m.sum(), -1)
    mean, std = torch.tensor(MEAN).view(1, 3, 1, 1), torch.tensor(STD).view(1, 3, 1, 1)
    return {"pixels": (pixels - mean) / std, **t}


class TowerHeads(nn.Module):
    """Linear read-outs of the tower: class token -> scene labels, patch tokens -> the object under each patch."""

    def __init__(self, width: int):
        super().__init__()
        self.cls = nn.Linear(width, MULTI + 9 * (NS + 1) + 9 * (NC + 1) + 4)
        self.patch = nn.Linear(width, (NS + 1) + (NC + 1))

    def forward(self, tokens: torch.Tensor) -> dict[str, torch.Tensor]:
        c, p = self.cls(tokens[:, 0]), self.patch(tokens[:, 1:])
        b = c.shape[0]
        a, z = MULTI, MULTI + 9 * (NS + 1)
        return {
            "multi": c[:, :a],
            "cell_shape": c[:, a:z].view(b, 9, NS + 1),
            "cell_colour": c[:, z : z + 9 * (NC + 1)].view(b, 9, NC + 1),
            "count": c[:, -4:],
            "patch_shape": p[..., : NS + 1],
            "patch_colour": p[..., NS + 1 :],
        }


def tower_loss(out: dict[str, torch.Tensor], t: dict[str, torch.Tensor], dense: bool) -> torch.Tensor:
    """Sum of the class-token losses (BCE multi-hot, CE per cell and count) and, if dense, the patch losses."""
    loss = F.binary_cross_entropy_with_logits(out["multi"], t["multi"]) * 10
    for k in ("cell_shape", "cell_colour", "count") + (("patch_shape", "patch_colour") if dense else ()):
        loss = loss + F.cross_entropy(out[k].flatten(0, -2), t[k].flatten())
    return loss


def auc(scores: torch.Tensor, y: torch.Tensor) -> float:
    """Mean over label columns (with both classes present) of P(positive scores above negative)."""
    aucs = []
    for k in range(y.shape[1]):
        pos, neg = scores[y[:, k] > 0, k], scores[y[:, k] == 0, k]
        if len(pos) and len(neg):
            aucs.append(((pos[:, None] > neg[None, :]).float() + 0.5 * (pos[:, None] == neg[None, :]).float()).mean())
    return float(torch.stack(aucs).mean())


def scene_probe_labels(t: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Multi-hot label groups scored by the probe: colours, shapes, occupied cells, object count (1-4)."""
    return {
        "colour": t["multi"][:, :NC],
        "shape": t["multi"][:, NC : NC + NS],
        "cell": (t["cell_shape"] < NS).float(),
        "count": F.one_hot(t["count"], 4).float(),
    }


@torch.no_grad()
def head_auc(vit: VisionEncoder, heads: TowerHeads, data: dict[str, np.ndarray]) -> dict[str, float]:
    """Held-out AUC of the tower's own class-token read-outs per label group."""
    vit.eval()
    idx = np.arange(len(data["pixels"]))
    t = batch_tensors(data, idx)
    chunks = [heads(vit(px)) for px in t["pixels"].split(250)]
    out = {k: torch.cat([c[k] for c in chunks]) for k in chunks[0]}
    vit.train()
    scores = {
        "colour": out["multi"][:, :NC],
        "shape": out["multi"][:, NC : NC + NS],
        "cell": -out["cell_shape"].softmax(-1)[..., NS],  # 1 - p(empty)
        "count": out["count"],
    }
    y = scene_probe_labels(t)
    return {k: round(auc(scores[k], y[k]), 4) for k in scores}


@torch.no_grad()
def frozen_probe(vit: VisionEncoder, data: dict[str, np.ndarray], train: int) -> dict[str, float]:
    """AUC per label group of a ridge-regression probe on the frozen class token, fitted on the first `train`
    scenes and scored on the rest: what a tower's features hold, whatever head it was trained with."""
    vit.eval()
    t = batch_tensors(data, np.arange(len(data["pixels"])))
    x = torch.cat([vit(px)[:, 0] for px in t["pixels"].split(250)]).double()
    x = (x - x[:train].mean(0)) / (x[:train].std(0) + 1e-6)
    x = torch.cat([x, torch.ones(len(x), 1, dtype=x.dtype)], 1)
    gram = x[:train].T @ x[:train] + 10.0 * torch.eye(x.shape[1], dtype=x.dtype)
    result = {}
    for group, y in scene_probe_labels(t).items():
        w = torch.linalg.solve(gram, x[:train].T @ y[:train].double())
        result[group] = round(auc(x[train:] @ w, y[train:]), 4)
    return result


def probe_report(weights: str | Path, seed: int = 0, scenes: int = 2000, workers: int = 2) -> dict[str, Any]:
    """Frozen-probe AUCs of a tower's weights and of a randomly initialised tower on scenes of the demo world of
    `seed` (its image stream: scenes no tower trained on), fitted on 3/4 of them."""
    data = render_set(seed, range(scenes), workers, stream=STREAM_IMAGE)
    cfg = tower_config()
    torch.manual_seed(seed)
    random = new_tower(cfg)
    trained = new_tower(cfg)
    trained.load_state_dict(load_file(str(weights)))
    train = scenes * 3 // 4
    return {
        "scenes": scenes,
        "trained": frozen_probe(trained, data, train),
        "random": frozen_probe(random, data, train),
    }


def lr_at(step: int, steps: int, lr: float, warmup: int) -> float:
    """Linear warm-up, then cosine to zero."""
    if step < warmup:
        return lr * (step + 1) / warmup
    return 0.5 * lr * (1 + math.cos(math.pi * (step - warmup) / max(1, steps - warmup)))


def train(args: argparse.Namespace) -> dict[str, Any]:
    """Render the pool, train the tower (resuming its checkpoint), save it and its held-out AUCs."""
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    pool_file = out / f"pool_{args.seed}_{args.pool}.npz"
    if not pool_file.exists():
        t0 = time.perf_counter()
        np.savez(pool_file, **render_set(args.seed, range(args.pool), args.workers))
        print(f"rendered {args.pool} scenes in {time.perf_counter() - t0:.0f} s", flush=True)
    pool = dict(np.load(pool_file))
    heldout = render_set(args.seed, range(HELDOUT_FROM, HELDOUT_FROM + args.heldout), args.workers)
    torch.manual_seed(args.seed)
    cfg = tower_config()
    vit, heads = new_tower(cfg), TowerHeads(cfg.width)
    params = [*vit.parameters(), *heads.parameters()]
    decay = [p for p in params if p.ndim >= 2]
    rest = [p for p in params if p.ndim < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": args.wd}, {"params": rest, "weight_decay": 0.0}])
    ckpt, step, log = out / "checkpoint.pt", 0, []
    if ckpt.exists():
        state = torch.load(ckpt, weights_only=False)
        vit.load_state_dict(state["vit"])
        heads.load_state_dict(state["heads"])
        opt.load_state_dict(state["opt"])
        step, log = state["step"], state["log"]
        print(f"resumed at step {step}", flush=True)
    t0 = time.perf_counter()
    while step < args.steps:
        # The batch of each step depends only on (seed, step), so a resumed run sees the same samples.
        rng = np.random.default_rng([args.seed, step])
        t = batch_tensors(pool, rng.integers(len(pool["pixels"]), size=args.batch), rng.random(args.batch) < 0.5)
        for g in opt.param_groups:
            g["lr"] = lr_at(step, args.steps, args.lr, args.warmup)
        loss = tower_loss(heads(vit(t["pixels"])), t, args.dense)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        step += 1
        if step % args.eval_every == 0 or step == args.steps:
            rec = {"step": step, "loss": round(loss.item(), 4), "s": round(time.perf_counter() - t0, 1)}
            rec |= head_auc(vit, heads, heldout)
            log.append(rec)
            print(json.dumps(rec), flush=True)
            torch.save(
                {
                    "vit": vit.state_dict(),
                    "heads": heads.state_dict(),
                    "opt": opt.state_dict(),
                    "step": step,
                    "log": log,
                },
                ckpt,
            )
    save_file({k: v.contiguous() for k, v in vit.state_dict().items()}, str(out / "tower.safetensors"))
    result = {"args": vars(args), "log": log, "heldout_auc": log[-1] if log else None}
    result["frozen_probe"] = probe_report(out / "tower.safetensors", args.seed, args.probe_scenes, args.workers)
    print(json.dumps(result["frozen_probe"]), flush=True)
    (out / "probe.json").write_text(json.dumps(result, indent=2))
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="runs/tower")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--pool", type=int, default=120_000, help="fresh scenes rendered for training")
    ap.add_argument("--heldout", type=int, default=1000)
    ap.add_argument("--steps", type=int, default=5000)
    ap.add_argument("--batch", type=int, default=48)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--warmup", type=int, default=500)
    ap.add_argument("--wd", type=float, default=0.05)
    ap.add_argument("--dense", type=int, default=1, help="1: also train the patch tokens on the object under them")
    ap.add_argument("--eval-every", type=int, default=500)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--workers", type=int, default=2, help="processes rendering the pool")
    ap.add_argument("--probe-scenes", type=int, default=2000, help="demo-world scenes of the frozen probe")
    ap.add_argument("--probe", metavar="WEIGHTS", help="only print the frozen-probe AUCs of WEIGHTS vs a random tower")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if args.probe:
        print(json.dumps(probe_report(args.probe, args.seed, args.probe_scenes, args.workers)))
    else:
        train(args)


if __name__ == "__main__":
    main()
