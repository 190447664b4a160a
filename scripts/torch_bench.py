#!/usr/bin/env python3
"""PyTorch + PEFT baseline for graft's throughput numbers, on random weights.

Builds a transformers LlamaForCausalLM with exactly the shapes of graft's default model
(SmolLM2-135M: 30 layers, hidden 576, 9 query / 3 key-value heads, vocabulary 49,152, tied
embeddings) and random weights, so it needs no model file: the counterpart of
`graft bench ... --random-init`. Workloads, measured the way `graft bench` measures them:

  lora      LoRA r 8, alpha 16, dropout 0 on q,k,v,o,gate,up,down (PEFT); AdamW lr 2e-4
  full      every weight trains; AdamW lr 2e-5
  forward   one no-grad forward (logits for every position)
  generate  greedy generation at batch 1, 32-token prompt, 128 new tokens (EOS never stops it)

A training step is forward + loss (labels = inputs, shifted inside) + backward + optimizer step
+ zero_grad; --warmup untimed steps, then --steps timed ones; tokens/s = seq x batch x steps /
time of the timed steps. On CUDA each timed region ends with torch.cuda.synchronize(), and the
peak of torch.cuda.max_memory_allocated() (and max_memory_reserved()) after loading the model is
reported. Precision: bf16 = weights and activations in bf16 (as `graft --dtype bf16`); amp =
fp32 weights with bf16 autocast (mixed precision); f32.

One JSON object per workload is printed on stdout and appended to --out.

Example:
  python3 scripts/torch_bench.py --device cuda --precision bf16 --modes lora,full \\
      --configs 512x8,1024x4 --out results.jsonl
"""

import argparse
import contextlib
import gc
import json
import os
import platform
import sys
import time

LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def log(msg):
    print(f"torch_bench: {msg}", file=sys.stderr, flush=True)


def peak_rss_mb():
    """VmHWM of this process in MB (Linux), or None."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    return None


def reset_peak_rss():
    """Resets VmHWM to the current RSS (Linux), so the peak is measured from after loading, as
    graft bench measures it."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass


def smollm2_config(transformers, attn):
    """The default model's shapes and numerics, as graft's smollm2_135m_config()."""
    return transformers.LlamaConfig(
        attn_implementation=attn,
        vocab_size=49152,
        hidden_size=576,
        intermediate_size=1536,
        num_hidden_layers=30,
        num_attention_heads=9,
        num_key_value_heads=3,
        head_dim=64,
        rope_theta=100000.0,
        rms_norm_eps=1e-5,
        max_position_embeddings=8192,
        tie_word_embeddings=True,
        bos_token_id=1,
        eos_token_id=2,
        hidden_act="silu",
        attention_bias=False,
        mlp_bias=False,
    )


class Runner:
    def __init__(self, args):
        import torch
        import transformers

        self.torch = torch
        self.transformers = transformers
        self.args = args
        self.device = torch.device(args.device)
        self.cuda = self.device.type == "cuda"
        if args.threads:
            torch.set_num_threads(args.threads)
        # Full f32 matmuls unless asked otherwise (graft's f32 does not use TF32 either).
        torch.backends.cuda.matmul.allow_tf32 = False

    @property
    def weight_dtype(self):
        return self.torch.bfloat16 if self.args.precision == "bf16" else self.torch.float32

    def autocast(self):
        if self.args.precision == "amp":
            return self.torch.autocast(device_type=self.device.type, dtype=self.torch.bfloat16)
        return contextlib.nullcontext()

    def sync(self):
        if self.cuda:
            self.torch.cuda.synchronize()

    def model(self):
        torch = self.torch
        torch.manual_seed(self.args.seed)
        cfg = smollm2_config(self.transformers, self.args.attn)
        m = self.transformers.LlamaForCausalLM(cfg)
        return m.to(device=self.device, dtype=self.weight_dtype)

    def ids(self, seq, batch, seed_offset=0):
        g = self.torch.Generator().manual_seed(self.args.seed + 1000 + seed_offset)
        x = self.torch.randint(0, 49152, (batch, seq), generator=g)
        return x.to(self.device)

    def reset_peak(self):
        if self.cuda:
            self.sync()
            self.torch.cuda.reset_peak_memory_stats()
        else:
            reset_peak_rss()

    def memory(self):
        out = {"peak_rss_mb": peak_rss_mb()}
        if self.cuda:
            out["cuda_max_allocated_mb"] = round(self.torch.cuda.max_memory_allocated() / 2**20, 1)
            out["cuda_max_reserved_mb"] = round(self.torch.cuda.max_memory_reserved() / 2**20, 1)
        return out

    def release(self):
        gc.collect()
        if self.cuda:
            self.torch.cuda.empty_cache()

    def train(self, mode, seq, batch):
        torch, args = self.torch, self.args
        model = self.model()
        model.config.use_cache = False
        if mode == "lora":
            import peft

            lcfg = peft.LoraConfig(r=8, lora_alpha=16, lora_dropout=0.0, bias="none",
                                   target_modules=LORA_TARGETS, task_type="CAUSAL_LM")
            model = peft.get_peft_model(model, lcfg)
            lr = args.lora_lr
        else:
            lr = args.full_lr
        model.train()
        params = [p for p in model.parameters() if p.requires_grad]
        opt = torch.optim.AdamW(params, lr=lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0)
        trainable = sum(p.numel() for p in params)
        x = self.ids(seq, batch)
        self.reset_peak()
        losses, times = [], []
        for step in range(args.warmup + args.steps):
            self.sync()
            t0 = time.perf_counter()
            with self.autocast():
                loss = model(input_ids=x, labels=x).loss
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            self.sync()
            dt = time.perf_counter() - t0
            losses.append(float(loss.detach().float()))
            if step >= args.warmup:
                times.append(dt)
            log(f"{mode} {seq}x{batch} step {step + 1}: loss {losses[-1]:.4f}, {dt * 1e3:.0f} ms")
        rec = {
            "bench": "train",
            "mode": mode,
            "seq": seq,
            "batch": batch,
            "steps": args.steps,
            "warmup_steps": args.warmup,
            "tokens_per_s": seq * batch * args.steps / sum(times),
            "step_ms": [round(t * 1e3, 2) for t in times],
            "losses": losses,
            "trainable_params": trainable,
            "lr": lr,
        }
        rec.update(self.memory())
        del model, opt, params, loss
        self.release()
        return rec

    def forward(self, seq, batch):
        torch, args = self.torch, self.args
        model = self.model().eval()
        x = self.ids(seq, batch)
        self.reset_peak()
        times = []
        with torch.no_grad():
            for run in range(args.warmup + args.runs):
                self.sync()
                t0 = time.perf_counter()
                with self.autocast():
                    model(input_ids=x, use_cache=False)
                self.sync()
                if run >= args.warmup:
                    times.append(time.perf_counter() - t0)
        times.sort()
        rec = {"bench": "forward", "seq": seq, "batch": batch, "runs": args.runs,
               "tokens_per_s": seq * batch / times[len(times) // 2],
               "run_ms": [round(t * 1e3, 2) for t in times]}
        rec.update(self.memory())
        del model
        self.release()
        return rec

    def generate(self):
        torch, args = self.torch, self.args
        model = self.model().eval()
        prompt = self.ids(args.gen_prompt, 1)
        new = args.gen_new
        # Every run makes exactly `new` tokens: EOS cannot end it early.
        gen_cfg = dict(do_sample=False, max_new_tokens=new, min_new_tokens=new, pad_token_id=0, use_cache=True)
        self.reset_peak()
        prefill, total = [], []
        with torch.no_grad():
            for run in range(args.warmup + args.runs):
                self.sync()
                t0 = time.perf_counter()
                with self.autocast():
                    model(input_ids=prompt, use_cache=True)
                self.sync()
                t1 = time.perf_counter()
                with self.autocast():
                    out = model.generate(prompt, **gen_cfg)
                self.sync()
                t2 = time.perf_counter()
                if out.shape[1] != args.gen_prompt + new:
                    raise RuntimeError(f"generate made {out.shape[1] - args.gen_prompt} tokens, not {new}")
                if run >= args.warmup:
                    prefill.append(t1 - t0)
                    total.append(t2 - t1)
        med = lambda v: sorted(v)[len(v) // 2]
        p, g = med(prefill), med(total)
        rec = {"bench": "generate", "prompt_tokens": args.gen_prompt, "new_tokens": new, "runs": args.runs,
               "prefill_tokens_per_s": args.gen_prompt / p,
               # generate() includes its own prefill; decode time = generate time - prefill time.
               "decode_tokens_per_s": (new - 1) / max(g - p, 1e-9)}
        rec.update(self.memory())
        del model
        self.release()
        return rec


def parse_configs(text):
    out = []
    for item in text.split(","):
        seq, _, batch = item.strip().partition("x")
        if not seq.isdigit() or not batch.isdigit():
            raise SystemExit(f"--configs: `{item}` is not SEQxBATCH (e.g. 512x8)")
        out.append((int(seq), int(batch)))
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda", help="cuda, cuda:N or cpu (default cuda)")
    ap.add_argument("--precision", choices=["bf16", "amp", "f32"], default="bf16")
    ap.add_argument("--modes", default="lora,full", help="comma list of lora,full,forward,generate")
    ap.add_argument("--configs", default="512x8,1024x4", help="comma list of SEQxBATCH (train and forward)")
    ap.add_argument("--steps", type=int, default=10, help="timed training steps")
    ap.add_argument("--warmup", type=int, default=3, help="untimed steps / runs first")
    ap.add_argument("--runs", type=int, default=5, help="timed forward / generate runs (median reported)")
    ap.add_argument("--gen-prompt", type=int, default=32)
    ap.add_argument("--gen-new", type=int, default=128)
    ap.add_argument("--lora-lr", type=float, default=2e-4)
    ap.add_argument("--full-lr", type=float, default=2e-5)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch's default)")
    ap.add_argument("--attn", default="sdpa", help="transformers attn_implementation (default sdpa)")
    ap.add_argument("--out", default=None, help="JSONL file to append the records to")
    args = ap.parse_args()

    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    bad = [m for m in modes if m not in ("lora", "full", "forward", "generate")]
    if bad:
        raise SystemExit(f"--modes: unknown {bad}; use lora, full, forward, generate")
    configs = parse_configs(args.configs)
    runner = Runner(args)
    torch, transformers = runner.torch, runner.transformers
    facts = {
        "impl": "pytorch+peft",
        "device": args.device,
        "precision": args.precision,
        "model": "random-init (SmolLM2-135M shapes)",
        "attn": args.attn,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "python": platform.python_version(),
    }
    try:
        import peft

        facts["peft"] = peft.__version__
    except ImportError:
        facts["peft"] = None
    if runner.cuda:
        facts["gpu"] = torch.cuda.get_device_name(runner.device)
    else:
        facts["threads"] = torch.get_num_threads()

    jobs = []
    for mode in modes:
        if mode in ("lora", "full", "forward"):
            jobs += [(mode, s, b) for s, b in configs]
        else:
            jobs.append((mode, None, None))
    failures = 0
    for mode, seq, batch in jobs:
        try:
            if mode in ("lora", "full"):
                rec = runner.train(mode, seq, batch)
            elif mode == "forward":
                rec = runner.forward(seq, batch)
            else:
                rec = runner.generate()
        except Exception as e:  # one failed workload (e.g. out of memory) must not hide the others
            failures += 1
            rec = {"bench": mode, "seq": seq, "batch": batch, "error": f"{type(e).__name__}: {e}"}
            log(f"{mode} {seq}x{batch} failed: {rec['error']}")
            runner.release()
        rec.update(facts)
        line = json.dumps(rec)
        print(line, flush=True)
        if args.out:
            with open(args.out, "a") as f:
                f.write(line + "\n")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
