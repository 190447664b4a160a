#!/usr/bin/env python3
"""Reference values for graft's ResNet / VGG parity test (tests/torchvision_parity.rs).

torchvision's own ResNet-18, ResNet-50, VGG-11 and VGG-16 (built with `num_classes=10`, no
pretrained weights) are given deterministic weights from a portable rule, run on a fixed input
in float64, and a summary of their outputs is written to a small JSON file. graft's test builds
the same weights with the same rule, under the names and shapes this file lists (torchvision's
state dict, in order), and compares.

Weight rule. The state dict's floating-point tensors are numbered k = 0, 1, 2, ... in state-dict
order (the `num_batches_tracked` counters are skipped). Element i (row-major) of tensor k, with
integer arithmetic then float64 operations in this order:

    u = ((i * 7919 + k * 104729) % 2003) / 2003 - 0.5          # in [-0.5, 0.5)
    weight with >= 2 dims:   u * sqrt(24 / fan_in)              # fan_in = product of dims 1..
    name ends .running_var:  u + 1.0                            # in [0.5, 1.5)
    name ends .running_mean: u * 0.25
    other 1-dim .weight:     u * 0.5 + 1.0                      # batch-norm scales
    other 1-dim .bias:       u * 0.25                           # batch-norm, conv and linear biases

Input rule. A float64 batch [2, 3, SIDE, SIDE]; element j (row-major):

    x = (((j * 7907 + 17) % 1009) / 1009 - 0.5) * 4.0          # in [-2, 2)

Every operation is one IEEE-754 float64 operation (sqrt included), so any language computes the
same bits. Runs: every model in evaluation mode (`eval_f64`); the ResNets also in training mode
(`train_f64`: batch normalisation with the batch's own statistics; VGG without batch norm has
nothing but dropout to differ in training, and graft does not apply dropout). Recorded per
image: all 10 logits, the pooled features' sum, sum of squares and FEATURE_SAMPLES values evenly
spaced (every `features_stride`-th, from 0).
The float32 run of the same model is recorded as its largest logit difference from float64.

PyTorch and torchvision are needed only to run this script, never by graft. Example:

  python3 scripts/torchvision-golden.py --out tests/golden/torchvision/backbones.json
"""

import argparse
import json
import math
import os
import re

import torch
import torchvision
from torchvision import models

SIDE = 64
BATCH = 2
CLASSES = 10
FEATURE_SAMPLES = 32
CHECK_POSITIONS = [0, 1, 1000, 12345]


def rule_values(k, name, shape):
    """Tensor k's float64 values by the weight rule."""
    n = math.prod(shape)
    i = torch.arange(n, dtype=torch.int64)
    u = ((i * 7919 + k * 104729) % 2003).to(torch.float64) / 2003.0 - 0.5
    if len(shape) >= 2:
        v = u * math.sqrt(24.0 / math.prod(shape[1:]))
    elif name.endswith(".running_var"):
        v = u + 1.0
    elif name.endswith(".running_mean"):
        v = u * 0.25
    elif name.endswith(".weight"):
        v = u * 0.5 + 1.0
    elif name.endswith(".bias"):
        v = u * 0.25
    else:
        raise SystemExit(f"no rule for {name}")
    return v.reshape(shape)


def rule_value_scalar(k, name, shape, i):
    """One value by the rule in plain Python floats (checks the tensor version)."""
    u = ((i * 7919 + k * 104729) % 2003) / 2003.0 - 0.5
    if len(shape) >= 2:
        return u * math.sqrt(24.0 / math.prod(shape[1:]))
    if name.endswith(".running_var"):
        return u + 1.0
    if name.endswith(".running_mean"):
        return u * 0.25
    if name.endswith(".weight"):
        return u * 0.5 + 1.0
    return u * 0.25


def input_batch():
    n = BATCH * 3 * SIDE * SIDE
    j = torch.arange(n, dtype=torch.int64)
    x = (((j * 7907 + 17) % 1009).to(torch.float64) / 1009.0 - 0.5) * 4.0
    return x.reshape(BATCH, 3, SIDE, SIDE)


def features_and_logits(name, model, x):
    """Pooled features (what goes into the classifier) and logits."""
    if name.startswith("resnet"):
        m = model
        h = m.maxpool(m.relu(m.bn1(m.conv1(x))))
        h = m.layer4(m.layer3(m.layer2(m.layer1(h))))
        f = torch.flatten(m.avgpool(h), 1)
        return f, m.fc(f)
    f = torch.flatten(model.avgpool(model.features(x)), 1)
    return f, model.classifier(f)


def run(name, state, x, dtype, train):
    # Converted before loading: load_state_dict copies into the parameters' own dtype.
    model = getattr(models, name)(num_classes=CLASSES).to(dtype)
    model.load_state_dict(state)
    model.train(train)
    if train:
        # Only batch normalisation may differ from evaluation: no dropout anywhere.
        for mod in model.modules():
            if isinstance(mod, torch.nn.Dropout):
                mod.eval()
    with torch.no_grad():
        f, logits = features_and_logits(name, model, x.to(dtype))
        # Cross-check the split forward against torchvision's own.
        full = model(x.to(dtype)) if not train else logits
    assert torch.equal(full, logits), name
    return f.double(), logits.double()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    torch.set_num_threads(1)
    x = input_batch()
    out_models = []
    for name in ("resnet18", "resnet50", "vgg11", "vgg16"):
        template = getattr(models, name)(num_classes=CLASSES).state_dict()
        state, manifest, checks = {}, [], []
        k = 0
        total = 0.0
        for key, t in template.items():
            if key.endswith("num_batches_tracked"):
                state[key] = torch.zeros_like(t)
                continue
            shape = list(t.shape)
            v = rule_values(k, key, shape)
            flat = v.flatten()
            for i in CHECK_POSITIONS:
                if i < flat.numel():
                    s = rule_value_scalar(k, key, shape, i)
                    assert s == flat[i].item(), (key, i)
            if k % 7 == 0:
                i = CHECK_POSITIONS[k % len(CHECK_POSITIONS)] % flat.numel()
                checks.append([key, i, flat[i].item()])
            total += flat.sum().item()
            state[key] = v
            manifest.append(key + " " + "x".join(str(d) for d in shape))
            k += 1
        entry = {"name": name, "num_classes": CLASSES, "tensors": manifest, "weight_values_at": checks, "weight_sum": total}
        modes = [("eval", False)] + ([("train", True)] if name.startswith("resnet") else [])
        noise = {}
        for mode, train in modes:
            f64, l64 = run(name, {k2: v.double() if v.is_floating_point() else v for k2, v in state.items()}, x, torch.float64, train)
            f32, l32 = run(name, {k2: v.float() if v.is_floating_point() else v for k2, v in state.items()}, x, torch.float32, train)
            noise[mode] = (l32 - l64).abs().max().item()
            stride = -(-f64.shape[1] // FEATURE_SAMPLES)
            if stride % 7 == 0:
                # Not a multiple of VGG's 7x7 pooled cells, so the samples visit all 49 of them.
                stride += 1
            entry["features_stride"] = stride
            entry[f"{mode}_f64"] = [
                {
                    "logits": l64[n].tolist(),
                    "features_len": f64.shape[1],
                    "features_sum": f64[n].sum().item(),
                    "features_sum_sq": (f64[n] ** 2).sum().item(),
                    "features_sampled": f64[n, ::stride].tolist(),
                }
                for n in range(BATCH)
            ]
        entry["max_abs_logit_diff_f32_vs_f64"] = noise
        out_models.append(entry)
        print(name, "params", sum(math.prod(template[t.split()[0]].shape) for t in manifest), "logits[0]", entry["eval_f64"][0]["logits"][:4], "f32 noise", noise)

    doc = {
        "what": "torchvision ResNet / VGG outputs on rule-made weights and input (scripts/torchvision-golden.py documents the rules and fields)",
        "torch_version": torch.__version__,
        "torchvision_version": torchvision.__version__,
        "input": {"shape": [BATCH, 3, SIDE, SIDE], "rule": "(((j * 7907 + 17) % 1009) / 1009 - 0.5) * 4"},
        "weight_rule": "u = ((i * 7919 + k * 104729) % 2003) / 2003 - 0.5; >=2 dims: u * sqrt(24 / fan_in); running_var: u + 1; running_mean: u * 0.25; 1-dim weight: u * 0.5 + 1; 1-dim bias: u * 0.25",
        "tensors": "torchvision's state dict in order, `name DxDx...`, without the num_batches_tracked counters",
        "features_sampled": "every features_stride-th pooled feature, from 0",
        "models": out_models,
    }
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    text = json.dumps(doc, indent=1)
    # One line per short list keeps the file short and readable; the tensor lists stay one per line.
    text = re.sub(r"\[[^\[\]{}]*\]", lambda m: " ".join(m.group(0).split()) if len(m.group(0)) < 2000 else m.group(0), text)
    with open(args.out, "w") as f:
        f.write(text + "\n")


if __name__ == "__main__":
    main()
