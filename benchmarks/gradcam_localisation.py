"""Does ITM Grad-CAM point at the object a text names? A tiny BLIP pretrained on the synthetic world, then its
Grad-CAM of "a COLOUR SHAPE" on held-out images, measured inside that object's box (from the scene graph).

    python benchmarks/gradcam_localisation.py --out runs/gradcam_loc [--steps 400] [--images 3000]

Per pair: heat density inside the box / density outside (1.0 = no localisation), and whether the box's share of
the heat exceeds its share of the area. Control: the same boxes with texts shuffled across pairs (a text naming
an object from another image). Pretraining resumes when rerun; the trained model is kept under OUT/run/model.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

import blip
from blip.cli.common import load_recipe
from blip.data.synth import generate
from blip.tasks.pretrain import pretrain

ROOT = Path(__file__).resolve().parents[1]


def box_mask(bbox: list[float], size: int) -> np.ndarray:
    """Pixels whose centres lie inside the box."""
    centres = np.arange(size) + 0.5
    x0, y0, x1, y1 = bbox
    inside_x = (centres >= x0) & (centres <= x1)
    inside_y = (centres >= y0) & (centres <= y1)
    return inside_y[:, None] & inside_x[None, :]


def pairs_of(scenes: list[dict], limit: int) -> list[tuple[str, str, list[float], list[list[float]]]]:
    """(image, "a COLOUR SHAPE", box, the other objects' boxes) for each test object whose colour and shape are
    unique in its image, in images with at least two objects (so the rest holds something else to look at)."""
    out = []
    for s in scenes:
        if s["split"] != "test" or len(s["objects"]) < 2:
            continue
        for obj in s["objects"]:
            same = [o for o in s["objects"] if o["colour"] == obj["colour"] and o["shape"] == obj["shape"]]
            if len(same) == 1:
                others = [o["bbox"] for o in s["objects"] if o is not obj]
                out.append((s["image"], f"a {obj['colour']} {obj['shape']}", obj["bbox"], others))
    return out[:limit]


def measure(model: blip.Blip, root: Path, pairs: list[tuple]) -> dict[str, float]:
    """Heat in the box against the rest of the image, and against the image's other objects' boxes."""
    ratios, wins, beats_others = [], [], []
    for image, text, bbox, others in pairs:
        cam = model.gradcam(str(root / image), text)
        size = model.cfg.vision.image_size
        heat = cam.heatmap((size, size), "mean")  # the image is resized to this square before the ViT
        # bbox is in the stored image's pixels; the stored image is `size` square in the synthetic world.
        inside = box_mask(bbox, size)
        density_in = heat[inside].mean()
        density_out = heat[~inside].mean()
        ratios.append(density_in / max(density_out, 1e-12))
        wins.append(heat[inside].sum() / max(heat.sum(), 1e-12) > inside.mean())
        beats_others.append(all(density_in > heat[box_mask(b, size)].mean() for b in others))
    return {
        "pairs": len(pairs),
        "median_density_ratio": round(float(np.median(ratios)), 3),
        "share_of_pairs_box_hotter_than_every_other_object": round(float(np.mean(beats_others)), 3),
        "mean_density_ratio": round(float(np.mean(ratios)), 3),
        "share_of_pairs_box_hotter": round(float(np.mean(wins)), 3),
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--images", type=int, default=3000)
    ap.add_argument("--steps", type=int, default=400)
    ap.add_argument("--pairs", type=int, default=200)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default="runs/gradcam_loc")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="recipe override")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    synth = out / "synth"
    if not (synth / "manifest.json").exists():
        generate(synth, num_images=args.images, seed=args.seed, noise=0.0)
    recipe = load_recipe(str(ROOT / "configs/pretrain_tiny_synth.yaml"), args.set)
    recipe["data"] = [{"reader": "pretrain_json", "path": str(synth / "pretrain.json"), "image_root": str(synth)}]
    recipe["tokenizer"] = str(synth / "tokenizer") if (synth / "tokenizer").exists() else "from_data"
    recipe["train"].update(
        out=str(out / "run"), max_steps=args.steps, epochs=100, seed=args.seed, progress=False, checkpoint_every=100
    )
    start = time.perf_counter()
    final = pretrain(recipe, resume=any((out / "run").glob("checkpoint-*.pt")))
    train_s = time.perf_counter() - start
    model = blip.load(final)
    scenes = json.loads((synth / "scenes.json").read_text())
    pairs = pairs_of(scenes, args.pairs)
    rng = np.random.default_rng(args.seed)
    texts = [t for _, t, _, _ in pairs]
    shuffled = [texts[j] for j in rng.permutation(len(texts))]
    control = [(im, t, box, others) for (im, _, box, others), t in zip(pairs, shuffled)]
    start = time.perf_counter()
    result = {
        "train_seconds": round(train_s, 1),
        "steps": args.steps,
        "layer": model.gradcam(str(synth / pairs[0][0]), texts[0]).layer,
        "grid": model.cfg.vision.image_size // model.cfg.vision.patch_size,
        "named_object": measure(model, synth, pairs),
        "shuffled_text_control": measure(model, synth, control),
    }
    result["gradcam_seconds"] = round(time.perf_counter() - start, 1)
    result["same_text_as_control"] = round(float(np.mean([a == b for a, b in zip(texts, shuffled)])), 3)
    print(json.dumps(result, indent=1))
    (out / "result.json").write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
