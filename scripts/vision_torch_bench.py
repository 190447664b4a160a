#!/usr/bin/env python3
"""PyTorch reference for `graft bench vision-train`: the same training step on the same
architecture, shapes and optimizer, timed the same way.

EfficientNet-Lite0 (stem 3x3 stride 2 to 32 channels, the 16 MBConv blocks of EfficientNet-B0's
seven stages without squeeze-and-excitation, 1x1 head to 1280 channels, ReLU6, TensorFlow SAME
padding by F.pad, batch norm eps 1e-3) with a linear head of 10 classes on the pooled features.
One fixed batch of random images and labels; each step is forward, cross-entropy, backward and
torch.optim.AdamW (lr 1e-3, weight decay 1e-2) over every parameter. `full` keeps batch norm in
evaluation mode (frozen statistics, as graft's fine-tuning); `scratch` trains it (batch
statistics, running statistics updated). Eager mode, float32, `--threads` intra-op threads.

Prints one JSON line: images_per_s (batch / median step seconds), step_s, loss_first,
loss_last, peak_rss_mb (ru_maxrss of the process), torch version. PyTorch is needed only for
this script, never by graft. Example:

  python3 scripts/vision_torch_bench.py --mode full --image 64 --batch 32 --steps 10 --warmup 2
"""

import argparse
import json
import resource
import statistics
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

STAGES = [  # repeats, kernel, stride, expand, in, out
    (1, 3, 1, 1, 32, 16),
    (2, 3, 2, 6, 16, 24),
    (2, 5, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112),
    (4, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),
]


class ConvBn(nn.Module):
    def __init__(self, c_in, c_out, k, stride, groups, act):
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, k, stride=stride, groups=groups, bias=False)
        self.bn = nn.BatchNorm2d(c_out, eps=1e-3, momentum=0.1)
        self.stride, self.k, self.act = stride, k, act

    def forward(self, x):
        pads = []
        for size in (x.shape[3], x.shape[2]):
            out = -(-size // self.stride)
            total = max((out - 1) * self.stride + self.k - size, 0)
            pads += [total // 2, total - total // 2]
        x = self.bn(self.conv(F.pad(x, pads)))
        return F.relu6(x) if self.act else x


class MbConv(nn.Module):
    def __init__(self, c_in, c_out, k, stride, expand):
        super().__init__()
        hidden = c_in * expand
        self.expand = ConvBn(c_in, hidden, 1, 1, 1, True) if expand != 1 else None
        self.depthwise = ConvBn(hidden, hidden, k, stride, hidden, True)
        self.project = ConvBn(hidden, c_out, 1, 1, 1, False)
        self.residual = stride == 1 and c_in == c_out

    def forward(self, x):
        h = self.expand(x) if self.expand is not None else x
        h = self.project(self.depthwise(h))
        return h + x if self.residual else h


class Lite0Classifier(nn.Module):
    def __init__(self, classes):
        super().__init__()
        self.stem = ConvBn(3, 32, 3, 2, 1, True)
        blocks = []
        for repeats, k, stride, expand, c_in, c_out in STAGES:
            for r in range(repeats):
                blocks.append(MbConv(c_in if r == 0 else c_out, c_out, k, stride if r == 0 else 1, expand))
        self.blocks = nn.Sequential(*blocks)
        self.head = ConvBn(320, 1280, 1, 1, 1, True)
        self.fc = nn.Linear(1280, classes)

    def forward(self, x):
        return self.fc(self.head(self.blocks(self.stem(x))).mean(dim=(2, 3)))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mode", choices=["full", "scratch"], default="full")
    ap.add_argument("--image", type=int, default=64)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = Lite0Classifier(10)
    model.train(args.mode == "scratch")
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=1e-2)
    x = torch.rand(args.batch, 3, args.image, args.image) * 4 - 2
    y = torch.randint(0, 10, (args.batch,))
    losses, times = [], []
    for i in range(args.warmup + args.steps):
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        losses.append(loss.item())
        if i >= args.warmup:
            times.append(time.perf_counter() - t0)
    step_s = statistics.median(times)
    print(json.dumps({
        "bench": "vision-train", "reference": "pytorch", "mode": args.mode, "image": args.image,
        "batch": args.batch, "steps": args.steps, "threads": args.threads, "step_s": step_s,
        "images_per_s": args.batch / step_s, "loss_first": losses[0], "loss_last": losses[-1],
        "trainable_params": sum(p.numel() for p in model.parameters()),
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "torch": torch.__version__,
    }))


if __name__ == "__main__":
    main()
