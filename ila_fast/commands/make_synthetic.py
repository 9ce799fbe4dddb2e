"""``ila-fast make-synthetic --out DIR``: a small dataset of real videos that only motion separates."""
from __future__ import annotations

from pathlib import Path

from ila_fast.arguments import add_force_argument, int_range, nonnegative_int, positive_int, size_wxh

CODECS = ("h264", "mjpeg", "mpeg4", "vp9")  # ila_fast.data.synthetic.CODECS (a test keeps them equal)


def add_arguments(parser) -> None:
    parser.add_argument("--out", required=True, metavar="DIR", help="output folder (the data root)")
    parser.add_argument("--codec", choices=CODECS, default="h264",
                        help="h264 (.mp4), vp9 (.webm: DALI's CPU decoder reads it), mjpeg, mpeg4")
    parser.add_argument("--train-per-class", type=positive_int, default=12, help="training videos per class")
    parser.add_argument("--val-per-class", type=nonnegative_int, default=4, help="validation videos per class")
    parser.add_argument("--frames", type=int_range(2), default=32,
                        help="frames per video (>= 2: the classes differ only by motion)")
    parser.add_argument("--size", type=size_wxh, default="128x96", help="WIDTHxHEIGHT")
    parser.add_argument("--seed", type=nonnegative_int, default=0, help="random seed")
    add_force_argument(parser)


def run(args) -> int:
    from ila_fast.errors import OutputExists

    out = Path(args.out)
    if (out / "train.txt").exists() and not args.force:
        raise OutputExists(f"{out}: already holds a dataset (train.txt); pass --force to overwrite it, "
                           "or choose another folder")
    from ila_fast.data.synthetic import CLASSES, make_synthetic

    paths = make_synthetic(out, codec=args.codec, train_per_class=args.train_per_class,
                           val_per_class=args.val_per_class, frames=args.frames, size=args.size, seed=args.seed)
    n = len(CLASSES)
    print(f"wrote {n * (args.train_per_class + args.val_per_class)} {args.codec} videos ({n} classes) to "
          f"{paths['root']}:\n  data.root = \"{paths['root']}\"\n  data.train_list = \"{paths['train']}\"\n"
          f"  data.val_list = \"{paths['val']}\"\n  data.labels = \"{paths['labels']}\"")
    return 0
