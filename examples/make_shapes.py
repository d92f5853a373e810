"""Write a small demo image folder: one sub-folder per class of coloured shapes, as PNG files.

    python examples/make_shapes.py data/shapes --per-class 100 --size 32

Each class is one shape in one colour family (red circles, green squares, blue triangles,
yellow crosses), drawn at a random position, size and shade on a noisy background, so a model
has something real but quick to learn.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

CLASSES = {"circle": (220, 40, 40), "square": (40, 200, 60), "triangle": (50, 80, 230),
           "cross": (230, 210, 40)}


def draw(shape: str, colour, size: int, rng: np.random.Generator) -> Image.Image:
    background = rng.integers(0, 70, (size, size, 3), dtype=np.uint8)
    image = Image.fromarray(background, "RGB")
    pen = ImageDraw.Draw(image)
    radius = rng.uniform(0.2, 0.35) * size
    cx, cy = rng.uniform(radius, size - radius, 2)
    fill = tuple(int(np.clip(c + rng.integers(-30, 31), 0, 255)) for c in colour)
    box = [cx - radius, cy - radius, cx + radius, cy + radius]
    if shape == "circle":
        pen.ellipse(box, fill=fill)
    elif shape == "square":
        pen.rectangle(box, fill=fill)
    elif shape == "triangle":
        pen.polygon(
            [(cx, cy - radius), (cx - radius, cy + radius), (cx + radius, cy + radius)], fill=fill
        )
    else:
        width = max(2, int(radius / 2))
        pen.line([(cx - radius, cy), (cx + radius, cy)], fill=fill, width=width)
        pen.line([(cx, cy - radius), (cx, cy + radius)], fill=fill, width=width)
    return image


def make_shapes(root: Path, per_class: int = 100, size: int = 32, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    for shape, colour in CLASSES.items():
        folder = root / shape
        folder.mkdir(parents=True, exist_ok=True)
        for index in range(per_class):
            draw(shape, colour, size, rng).save(folder / f"{shape}_{index:04d}.png")
    return root


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", type=Path, help="folder to create (one sub-folder per class)")
    parser.add_argument("--per-class", type=int, default=100)
    parser.add_argument("--size", type=int, default=32, help="image height and width in pixels")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    make_shapes(args.root, args.per_class, args.size, args.seed)
    print(f"wrote {args.per_class * len(CLASSES)} images in {len(CLASSES)} classes to {args.root}")
