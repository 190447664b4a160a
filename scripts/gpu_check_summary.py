#!/usr/bin/env python3
"""Markdown summary of the results.jsonl that scripts/gpu-check.sh writes.

Usage: python3 scripts/gpu_check_summary.py results.jsonl

Sections: parity (graft selftest), LoRA loss curves CPU vs device, inference and training
throughput of graft beside PyTorch + PEFT, and every failed or skipped step.
"""

import json
import sys

# Largest accepted max |delta| / |first loss| between the CPU and device f32 loss curves.
CURVE_LIMIT = 1e-3


def fmt(v, spec=".1f"):
    if v is None:
        return "–"
    if isinstance(v, float):
        return format(v, spec)
    return str(v)


def table(header, rows):
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(fmt(c) for c in row) + " |" for row in rows]
    return out


def load(path):
    recs = []
    for line in open(path):
        line = line.strip()
        if line:
            recs.append(json.loads(line))
    return recs


def parity(recs):
    rows = []
    for r in recs:
        if not r["check"].startswith("selftest") or "runs" not in r.get("result", {}):
            continue
        for run in r["result"]["runs"]:
            pair = f"{run['device']} {run['dtype']} vs {run['reference_device']} {run['reference_dtype']}"
            for c in run["checks"]:
                note = ""
                if c["name"] == "logits":
                    note = f"argmax agreement {c['detail'].get('argmax_agreement', 0):.3f}"
                elif c["name"] == "lora_grads":
                    d = c["detail"]
                    note = (f"relative L2 of {d.get('tensors')} tensors; worst {d.get('worst_tensor')} "
                            f"{d.get('worst_tensor_rel', 0):.2e} (limit {d.get('tensor_limit', 0):.0e}), "
                            f"min cosine {d.get('min_cosine', 0):.5f}")
                rows.append([pair, c["name"], format(c["rel"], ".2e"), format(c["limit"], ".0e"),
                             "pass" if c["pass"] else "**FAIL**", note])
    if not rows:
        return ["No parity results."]
    return table(["sides", "check", "relative difference", "limit", "result", "detail"], rows) + [
        "", "Relative difference: max |Δ| / max |reference| (lora_grads: ‖Δ‖₂ / ‖reference‖₂ of all gradients)."]


def curves(recs):
    by = {r["check"]: r.get("result", {}) for r in recs}
    cpu, dev = by.get("curve_cpu", {}).get("losses"), by.get("curve_device", {}).get("losses")
    if not cpu or not dev:
        return ["No loss curves to compare."]
    if len(cpu) != len(dev):
        return [f"**FAIL**: curves of different lengths ({len(cpu)} vs {len(dev)})."]
    worst = max(abs(a - b) for a, b in zip(cpu, dev))
    rel = worst / abs(cpu[0]) if cpu[0] else worst
    verdict = "pass" if rel <= CURVE_LIMIT else "**FAIL**"
    return [
        f"LoRA, f32, {by['curve_cpu'].get('seq')}×{by['curve_cpu'].get('batch')}: "
        f"max |Δloss| {worst:.2e} ({rel:.2e} of the first loss; limit {CURVE_LIMIT:.0e}): {verdict}",
        "",
        *table(["step", "CPU loss", f"device ({by['curve_device'].get('device', '?')}) loss"],
               [[i + 1, format(a, ".5f"), format(b, ".5f")] for i, (a, b) in enumerate(zip(cpu, dev))]),
    ]


def mem(rec):
    """Device memory of a graft step: the nvidia-smi peak (whole GPU), else peak RSS."""
    if rec.get("gpu_mem_used_peak_mb") is not None:
        return rec["gpu_mem_used_peak_mb"]
    return rec.get("result", {}).get("peak_rss_mb")


def torch_recs(recs, precision):
    return [r["result"] for r in recs if r["check"] == f"torch_{precision}" and "error" not in r.get("result", {})]


def find(rs, **kw):
    for r in rs:
        if all(r.get(k) == v for k, v in kw.items()):
            return r
    return None


def throughput(recs):
    out = []
    tb = {p: torch_recs(recs, p) for p in ("bf16", "amp", "f32")}
    tprec = "bf16" if tb["bf16"] else "f32"
    t = tb[tprec]
    gpu = any(r.get("gpu_mem_used_peak_mb") is not None for r in recs)
    mem_name = "GPU MB (nvidia-smi peak, whole GPU)" if gpu else "peak RSS MB"
    tmem = "cuda_max_allocated_mb" if gpu else "peak_rss_mb"

    rows = []
    for r in recs:
        res = r.get("result", {})
        if r["check"].startswith("generate_") and "decode_tokens_per_s" in res:
            rows.append([f"graft {res.get('dtype')}", res.get("prefill_tokens_per_s"), res.get("decode_tokens_per_s"), mem(r)])
    for prec, rs in tb.items():
        g = find(rs, bench="generate")
        if g:
            rows.append([f"PyTorch {prec}", g["prefill_tokens_per_s"], g["decode_tokens_per_s"], g.get(tmem)])
    if rows:
        out += ["### Generation (batch 1, greedy)", ""]
        out += table(["impl", "prefill tok/s", "decode tok/s", mem_name if gpu else "peak RSS MB"], rows) + [""]

    rows = []
    for r in recs:
        res = r.get("result", {})
        if r["check"].startswith("forward_") and "tokens_per_s" in res:
            tf = find(t, bench="forward", seq=res.get("seq"), batch=res.get("batch"))
            rows.append([f"{res.get('seq')}×{res.get('batch')}", f"graft {res.get('dtype')}", res["tokens_per_s"], mem(r),
                         tf["tokens_per_s"] if tf else None])
    if rows:
        out += ["### Forward (no gradients)", ""]
        out += table(["seq×batch", "graft", "graft tok/s", mem_name, f"PyTorch {tprec} tok/s"], rows) + [""]

    rows = []
    for r in recs:
        res = r.get("result", {})
        if not r["check"].startswith("train_") or "tokens_per_s" not in res:
            continue
        mode, seq, batch = res.get("mode"), res.get("seq"), res.get("batch")
        tt = find(t, bench="train", mode=mode, seq=seq, batch=batch)
        ta = find(tb["amp"], bench="train", mode=mode, seq=seq, batch=batch)
        ratio = res["tokens_per_s"] / tt["tokens_per_s"] if tt else None
        rows.append([mode, f"{seq}×{batch}", res["tokens_per_s"], mem(r),
                     tt["tokens_per_s"] if tt else None, tt.get(tmem) if tt else None,
                     ta["tokens_per_s"] if ta else None, ta.get(tmem) if ta else None,
                     format(ratio, ".2f") if ratio else None])
    for rs, prec in ((t, tprec),):
        for tr in rs:
            if tr.get("bench") == "train" and not any(row[0] == tr["mode"] and row[1] == f"{tr['seq']}×{tr['batch']}" for row in rows):
                rows.append([tr["mode"], f"{tr['seq']}×{tr['batch']}", None, None, tr["tokens_per_s"], tr.get(tmem), None, None, None])
    if rows:
        tm = "max_allocated MB" if gpu else "peak RSS MB"
        out += ["### Training steps (graft bf16 on the device; 10 timed after 3 warm-up)" if gpu else "### Training steps", ""]
        out += table(["mode", "seq×batch", "graft tok/s", mem_name, f"PyTorch {tprec} tok/s", f"PyTorch {tprec} {tm}",
                      "PyTorch amp tok/s", f"PyTorch amp {tm}", "graft / PyTorch"], rows)
    return out or ["No throughput results."]


def problems(recs):
    rows = []
    for r in recs:
        if r["status"] in ("ok",) and "error" not in r.get("result", {}):
            continue
        res = r.get("result", {})
        why = r.get("note") or res.get("error") or ""
        if isinstance(res.get("stderr_tail"), list) and res["stderr_tail"]:
            why += " — " + res["stderr_tail"][-1]
        if not why and "runs" in res:
            why = "; ".join(f"{run['dtype']} {c['name']} {c['rel']:.2e} > {c['limit']:.0e}"
                            for run in res["runs"] for c in run["checks"] if not c["pass"])
        rows.append([r["check"], r["status"], why.replace("|", "/")[:300]])
    return table(["step", "status", "why"], rows) if rows else ["None."]


def main():
    recs = load(sys.argv[1])
    head = {r["check"]: r for r in recs}
    lines = ["# graft GPU check", ""]
    if "machine" in head:
        lines.append(f"GPU: {head['machine'].get('gpu', '?')}")
    if "binary" in head:
        lines.append(f"graft: {head['binary'].get('version', head['binary'].get('note', '?'))}")
    # A step that printed several records (the PyTorch runs) repeats its time in each.
    total = sum({r["check"]: r.get("secs", 0) for r in recs}.values())
    lines += [f"Steps took {total:.0f}s in all.", "", "## Parity: device vs CPU (graft selftest, random weights)", ""]
    lines += parity(recs)
    lines += ["", "## LoRA loss curves: CPU vs device (graft bench train, f32)", ""]
    lines += curves(recs)
    lines += ["", "## Throughput: graft and PyTorch + PEFT (random weights, SmolLM2-135M shapes)", ""]
    lines += throughput(recs)
    lines += ["", "## Failed or skipped steps", ""]
    lines += problems(recs)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
