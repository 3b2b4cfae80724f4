"""python benchmarks/train_throughput.py ../shared/data/pokemon [--arch mobilenet_v3_large] [--size 224] [--batches 6] [--micro-batch 32 16 8]

Training img/s, side by side in one run, same arch, image size and batch:
  original-style: decode + resize with PIL per sample every epoch, no workers, NCHW
  ours:           decode + resize once into a uint8 cache, augment uint8 tensors, channels_last
                  (optionally --freeze N stages when pretrained)
Steps are timed after one warm-up batch; the cache build is reported separately (paid once).
"""

import argparse
import sys
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader
from torchvision.transforms import v2 as T

sys.path.insert(0, str(Path(__file__).parent))
from _machine import machine  # noqa: E402

from pokemon_classifier.annotations import read_annotations  # noqa: E402
from pokemon_classifier.data import ImageDataset, TensorDataset8, build_cache  # noqa: E402
from pokemon_classifier.models import build_model, freeze_stages, preprocessing  # noqa: E402
from pokemon_classifier.presets import train_transform  # noqa: E402
from pokemon_classifier.train import EpochOptions, train_one_epoch  # noqa: E402


def steps(model, loader, n, channels_last, micro=None):
    """img/s of train.py's own train_one_epoch over n batches, after one warm-up batch."""
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], 1e-3)
    run = (model, loader, torch.nn.CrossEntropyLoss(), opt, torch.device("cpu"))
    train_one_epoch(*run, EpochOptions(channels_last=channels_last, progress=False, max_batches=1, micro_batch=micro))
    opts = EpochOptions(channels_last=channels_last, progress=False, max_batches=n, micro_batch=micro)
    return train_one_epoch(*run, opts)["img_per_s"]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("data", nargs="?", default="../shared/data/pokemon")
    ap.add_argument("--arch", default="mobilenet_v3_large")
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--batches", type=int, default=6)
    ap.add_argument("--freeze", type=int, default=0)
    ap.add_argument("--pretrained", action="store_true")
    ap.add_argument("--skip-original", action="store_true")
    ap.add_argument("--micro-batch", type=int, nargs="+", default=[16],
                    help="one or more micro-batch sizes to time (train.py's CPU default is 16)")
    args = ap.parse_args()
    torch.manual_seed(0)
    df = read_annotations(args.data).sample(frac=1, random_state=0).reset_index(drop=True)
    pre = preprocessing(args.arch, args.size)
    mode = T.InterpolationMode.BICUBIC if pre["interpolation"] == "bicubic" else T.InterpolationMode.BILINEAR
    print(f"{args.arch} at {args.size}px, batch {args.batch}, {args.batches} timed batches; {machine()}")
    if not args.skip_original:
        orig_tf = T.Compose([T.Resize((args.size, args.size), interpolation=mode), T.RandomHorizontalFlip(),
                             T.PILToTensor(), T.ToDtype(torch.float32, scale=True), T.Normalize(pre["mean"], pre["std"])])
        ds = ImageDataset(args.data, orig_tf, df.head(args.batch * (args.batches + 1)))
        model = build_model(args.arch, pretrained=args.pretrained)
        r0 = steps(model, DataLoader(ds, args.batch, shuffle=False, num_workers=0), args.batches, False)
        print(f"original-style (PIL decode+resize per sample, NCHW): {r0:.1f} img/s", flush=True)
    t = time.perf_counter()
    imgs = build_cache(args.data, df, pre, progress=False)
    print(f"cache: {len(df)} images decoded+resized once in {time.perf_counter() - t:.0f} s (reused by every epoch/run)")
    ds = TensorDataset8(imgs, df["pokemon_id"] - 1, train_transform(pre, "light"))
    for micro in args.micro_batch:
        torch.manual_seed(0)
        model = build_model(args.arch, pretrained=args.pretrained)
        freeze_stages(model, args.arch, args.freeze)
        model = model.to(memory_format=torch.channels_last)
        r1 = steps(model, DataLoader(ds, args.batch, shuffle=True, num_workers=0), args.batches, True, micro)
        print(f"ours (uint8 cache, uint8 augment, channels_last, micro-batch {micro}"
              f"{', freeze ' + str(args.freeze) if args.freeze else ''}): {r1:.1f} img/s"
              + ("" if args.skip_original else f", {r1 / r0:.1f}x the original-style"), flush=True)


if __name__ == "__main__":
    main()
