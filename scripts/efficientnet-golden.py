#!/usr/bin/env python3
"""Reference values for graft's EfficientNet-Lite0 parity test (tests/efficientnet_parity.rs).

An independent PyTorch implementation of EfficientNet-Lite0, written from the architecture
(not from graft's code): stem 3x3 stride 2 to 32 channels, 16 MBConv blocks in the seven
EfficientNet-B0 stages without squeeze-and-excitation, 1x1 head to 1280 channels, ReLU6
activations, convolutions padded as TensorFlow's SAME (explicit F.pad, extra pixel at the
bottom / right, then an unpadded convolution), batch norm eps 1e-3, global average pooling and
the linear classifier. The checkpoint's state dict is read by its own (lukemelas
`efficientnet_pytorch`) names and every tensor must be used (`num_batches_tracked` aside).

Inputs are real images read from the raw asset files (no graft code): MNIST-5k CSV rows and
Fashion-MNIST test items, resized with F.interpolate(mode="bilinear", align_corners=False,
antialias=False) to --resize, centre-cropped to --crop, grey replicated to three channels,
scaled to 0-1 and normalised with ImageNet's mean / std, all in float32 (what graft's
`Preprocess::imagenet(crop)` does). The float32 input is the input of every run; the float64
runs widen it.

Recorded per image (`image`: dataset and index, `label`): the input's sum, sum of squares, a few
values and the sha256 of its little-endian float32 bytes; for the float64 runs in evaluation mode
(running statistics, `eval_f64`) and training mode (statistics of the whole batch, `train_f64`):
the top-10 classes and logits, the logits at every 50th class, the sum and sum of squares of all
1,000 logits, and the pooled features' sum. The same network is also run in float32 and its
largest logit difference from float64 recorded (the size of float32 rounding noise).

PyTorch is needed only to run this script, never by graft. Example:

  python3 scripts/efficientnet-golden.py \\
      --checkpoint ~/.cache/graft/models/efficientnet-lite0/efficientnet-lite0-57934424.pth \\
      --mnist ~/.cache/graft/datasets/mnist-5k/mnist_5k.csv.gz \\
      --fashion ~/.cache/graft/datasets/fashion-mnist \\
      --out tests/golden/efficientnet/lite0.json
"""

import argparse
import gzip
import hashlib
import json
import os
import re
import struct

import torch
import torch.nn.functional as F

# EfficientNet-B0 stages: (repeats, kernel, stride, expansion, input channels, output channels).
STAGES = [
    (1, 3, 1, 1, 32, 16),
    (2, 3, 2, 6, 16, 24),
    (2, 5, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112),
    (4, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),
]
BN_EPS = 1e-3
IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]
MNIST_ROWS = [0, 4999]
FASHION_TEST_ITEMS = [0, 1]
SAMPLE_STRIDE = 50


class Params:
    """The state dict, handing out each tensor once, by name."""

    def __init__(self, state, dtype):
        self.state = state
        self.dtype = dtype
        self.used = set()

    def __call__(self, name):
        self.used.add(name)
        return self.state[name].to(self.dtype)

    def check_all_used(self):
        left = sorted(k for k in self.state if k not in self.used and not k.endswith("num_batches_tracked"))
        if left:
            raise SystemExit(f"{len(left)} checkpoint tensors unused: {left[:5]}")


def same_pad_conv(x, weight, stride, groups):
    """TensorFlow SAME padding (extra pixel bottom / right), then an unpadded convolution."""
    k_h, k_w = weight.shape[2], weight.shape[3]
    pads = []
    for size, k in ((x.shape[3], k_w), (x.shape[2], k_h)):
        out = -(-size // stride)
        total = max((out - 1) * stride + k - size, 0)
        pads += [total // 2, total - total // 2]
    return F.conv2d(F.pad(x, pads), weight, stride=stride, groups=groups)


def conv_bn(p, x, conv, bn, stride, groups, act, train):
    x = same_pad_conv(x, p(f"{conv}.weight"), stride, groups)
    mean, var = p(f"{bn}.running_mean"), p(f"{bn}.running_var")
    if train:
        # Batch statistics (biased variance); the running statistics are left alone.
        mean, var = None, None
    x = F.batch_norm(x, mean, var, p(f"{bn}.weight"), p(f"{bn}.bias"), training=train, eps=BN_EPS)
    return F.relu6(x) if act else x


def lite0(p, x, train):
    """Pooled features [N, 1280] and logits [N, 1000]."""
    x = conv_bn(p, x, "_conv_stem", "_bn0", 2, 1, True, train)
    i = 0
    for repeats, k, stride, expand, c_in, c_out in STAGES:
        for r in range(repeats):
            inp, s = (c_in, stride) if r == 0 else (c_out, 1)
            b = f"_blocks.{i}"
            h = x
            if expand != 1:
                h = conv_bn(p, h, f"{b}._expand_conv", f"{b}._bn0", 1, 1, True, train)
            h = conv_bn(p, h, f"{b}._depthwise_conv", f"{b}._bn1", s, inp * expand, True, train)
            h = conv_bn(p, h, f"{b}._project_conv", f"{b}._bn2", 1, 1, False, train)
            assert p.state[f"{b}._depthwise_conv.weight"].shape[2] == k
            x = h + x if (s == 1 and inp == c_out) else h
            i += 1
    x = conv_bn(p, x, "_conv_head", "_bn1", 1, 1, True, train)
    features = x.mean(dim=(2, 3))
    logits = F.linear(features, p("_fc.weight"), p("_fc.bias"))
    return features, logits


def mnist_rows(path, rows):
    with gzip.open(path, "rt") as f:
        lines = f.read().splitlines()
    out = []
    for r in rows:
        values = [int(v) for v in lines[r].split(",")]
        assert len(values) == 785
        out.append(({"dataset": "mnist-5k", "index": r}, values[784], values[:784]))
    return out


def fashion_items(folder, items):
    with gzip.open(os.path.join(folder, "t10k-images-idx3-ubyte.gz"), "rb") as f:
        data = f.read()
    with gzip.open(os.path.join(folder, "t10k-labels-idx1-ubyte.gz"), "rb") as f:
        labels = f.read()
    magic, n, h, w = struct.unpack(">IIII", data[:16])
    assert magic == 0x803 and (h, w) == (28, 28)
    out = []
    for i in items:
        assert i < n
        body = data[16 + i * h * w : 16 + (i + 1) * h * w]
        out.append(({"dataset": "fashion-mnist-test", "index": i}, labels[8 + i], list(body)))
    return out


def preprocess(images, resize, crop):
    """float32 [N, 3, crop, crop], as graft's Preprocess with ImageNet normalisation."""
    x = torch.tensor([px for _, _, px in images], dtype=torch.float32).reshape(len(images), 1, 28, 28)
    x = F.interpolate(x, size=(resize, resize), mode="bilinear", align_corners=False, antialias=False)
    o = (resize - crop) // 2
    x = x[:, :, o : o + crop, o : o + crop]
    x = (x / 255.0).expand(-1, 3, -1, -1)
    mean = torch.tensor(IMAGENET_MEAN, dtype=torch.float32).reshape(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, dtype=torch.float32).reshape(1, 3, 1, 1)
    return ((x - mean) / std).contiguous()


def value_positions(crop):
    """Flat indices into one [3, crop, crop] input: a corner and points near the centre of each channel."""
    c = crop // 2
    return [0, c * crop + c, crop * crop + (c - 10) * crop + c + 5, 2 * crop * crop + (c + 15) * crop + c - 20]


def summary(logits, features):
    top = torch.topk(logits, 10)
    return {
        "top10_classes": top.indices.tolist(),
        "top10_logits": top.values.tolist(),
        "sampled_logits": logits[::SAMPLE_STRIDE].tolist(),
        "logits_sum": logits.sum().item(),
        "logits_sum_sq": (logits * logits).sum().item(),
        "features_sum": features.sum().item(),
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", required=True, help="efficientnet-lite0 .pth (legacy torch.save state dict)")
    ap.add_argument("--mnist", required=True, help="mnist_5k.csv.gz")
    ap.add_argument("--fashion", required=True, help="folder with t10k-images-idx3-ubyte.gz / t10k-labels-idx1-ubyte.gz")
    ap.add_argument("--crop", type=int, default=224, help="input side (resize = crop * 8 / 7)")
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    torch.manual_seed(0)
    torch.set_num_threads(1)

    with open(args.checkpoint, "rb") as f:
        sha = hashlib.sha256(f.read()).hexdigest()
    state = torch.load(args.checkpoint, map_location="cpu", weights_only=True)

    images = mnist_rows(args.mnist, MNIST_ROWS) + fashion_items(args.fashion, FASHION_TEST_ITEMS)
    resize = args.crop * 8 // 7
    x32 = preprocess(images, resize, args.crop)

    runs = {}
    for dtype_name, dtype in (("f64", torch.float64), ("f32", torch.float32)):
        for mode, train in (("eval", False), ("train", True)):
            p = Params(state, dtype)
            with torch.no_grad():
                features, logits = lite0(p, x32.to(dtype), train)
            p.check_all_used()
            runs[(dtype_name, mode)] = (features.double(), logits.double())

    out_images = []
    for n, (source, label, _) in enumerate(images):
        xi = x32[n]
        flat = xi.flatten()
        entry = {
            "image": source,
            "label": label,
            "input": {
                "sum": xi.double().sum().item(),
                "sum_sq": (xi.double() ** 2).sum().item(),
                "sha256_f32_le": hashlib.sha256(flat.numpy().astype("<f4").tobytes()).hexdigest(),
                "values_at": {str(k): flat[k].item() for k in value_positions(args.crop)},
            },
        }
        for mode in ("eval", "train"):
            features, logits = runs[("f64", mode)]
            entry[f"{mode}_f64"] = summary(logits[n], features[n])
        out_images.append(entry)

    noise = {}
    for mode in ("eval", "train"):
        d = (runs[("f32", mode)][1] - runs[("f64", mode)][1]).abs().max().item()
        noise[mode] = d
    doc = {
        "what": "EfficientNet-Lite0 ImageNet logits from an independent PyTorch implementation (scripts/efficientnet-golden.py)",
        "torch_version": torch.__version__,
        "checkpoint_sha256": sha,
        "protocol": {
            "crop": args.crop,
            "resize": resize,
            "mean": IMAGENET_MEAN,
            "std": IMAGENET_STD,
            "batch": "all images in one batch, in the order listed; train mode normalises with that batch's statistics",
            "sampled_logits": f"logits of classes 0, {SAMPLE_STRIDE}, {2 * SAMPLE_STRIDE}, ..., 950",
        },
        "max_abs_logit_diff_f32_vs_f64": noise,
        "images": out_images,
    }
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    text = json.dumps(doc, indent=1)
    # One line per list of numbers keeps the file short and readable.
    text = re.sub(r"\[[^\[\]{}]*\]", lambda m: " ".join(m.group(0).split()), text)
    with open(args.out, "w") as f:
        f.write(text + "\n")
    for e in out_images:
        print(e["image"], "label", e["label"], "top5", e["eval_f64"]["top10_classes"][:5])
    print("f32 vs f64 max abs logit diff:", noise)


if __name__ == "__main__":
    main()
