#!/usr/bin/env python3
"""llama.cpp reference for `graft bench generate`: the same GGUF, prompt and greedy loop.

Measured the way graft measures it: the prompt is the first --prompt-tokens tokens of --text
(tokenized without special tokens), prefill tokens/s = prompt tokens / (prompt forward + first
greedy choice), decode tokens/s = (new - 1) / time of the remaining single-token forwards and
greedy choices, EOS masked so every run makes all --new-tokens tokens; --warmup untimed runs,
then --runs timed ones, medians reported. Needs llama-cpp-python (0.3.36 was built from source:
`CMAKE_ARGS="-DGGML_NATIVE=ON" pip install llama-cpp-python==0.3.36`).

With --greedy-jsonl (graft's tests/golden/greedy.jsonl: prompt_ids and the dense reference's
new_ids), it also reports for each prompt how many greedy tokens agree with the reference.

One JSON object is printed on stdout (and appended to --out).

Example:
  python3 scripts/llamacpp_bench.py --gguf SmolLM2-135M-Instruct.Q4_1.gguf --text corpus.txt --threads 2
"""

import argparse
import json
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from torch_bench import peak_rss_mb, reset_peak_rss  # noqa: E402  (light: torch loads lazily)


class Greedy:
    """Greedy decoding on a llama_cpp.Llama with one EOS id masked."""

    def __init__(self, llm, eos):
        import numpy as np

        self.np = np
        self.llm = llm
        self.eos = eos
        self.n_vocab = llm.n_vocab()

    def next_id(self, tokens):
        self.llm.eval(tokens)
        logits = self.np.ctypeslib.as_array(self.llm._ctx.get_logits(), shape=(self.n_vocab,)).copy()
        if self.eos is not None:
            logits[self.eos] = -self.np.inf
        return int(logits.argmax())

    def run(self, prompt, new):
        """Returns (new ids, prefill seconds, decode seconds)."""
        self.llm.reset()
        t0 = time.perf_counter()
        tok = self.next_id(prompt)
        t1 = time.perf_counter()
        out = [tok]
        for _ in range(new - 1):
            tok = self.next_id([tok])
            out.append(tok)
        t2 = time.perf_counter()
        return out, t1 - t0, t2 - t1


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--gguf", required=True)
    ap.add_argument("--text", required=True, help="the text whose first tokens are the prompt")
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--prompt-tokens", type=int, default=32)
    ap.add_argument("--new-tokens", type=int, default=128)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--greedy-jsonl", default=None)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()

    import llama_cpp

    t = time.perf_counter()
    llm = llama_cpp.Llama(
        model_path=args.gguf,
        n_ctx=max(512, args.prompt_tokens + args.new_tokens + 8),
        n_batch=512,
        n_threads=args.threads,
        n_threads_batch=args.threads,
        logits_all=False,
        verbose=False,
    )
    load_secs = time.perf_counter() - t
    eos = llm.token_eos()
    greedy = Greedy(llm, eos)
    with open(args.text, encoding="utf-8") as f:
        text = f.read()
    ids = llm.tokenize(text.encode("utf-8"), add_bos=False, special=False)
    prompt = [ids[i % len(ids)] for i in range(args.prompt_tokens)]

    agreement = []
    if args.greedy_jsonl:
        with open(args.greedy_jsonl, encoding="utf-8") as f:
            for line in f:
                if not line.strip():
                    continue
                case = json.loads(line)
                want = case["new_ids"]
                got, _, _ = greedy.run(case["prompt_ids"], len(want))
                same = 0
                for a, b in zip(got, want):
                    if a != b:
                        break
                    same += 1
                agreement.append({"prompt": case.get("prompt"), "agree": same, "of": len(want)})

    reset_peak_rss()
    prefill, decode = [], []
    for i in range(args.warmup + args.runs):
        _, tp, td = greedy.run(prompt, args.new_tokens)
        if i >= args.warmup:
            prefill.append(args.prompt_tokens / tp)
            decode.append((args.new_tokens - 1) / td)
    record = {
        "impl": "llama.cpp",
        "llama_cpp_python": llama_cpp.__version__,
        "model": os.path.basename(args.gguf),
        "threads": args.threads,
        "prompt_tokens": args.prompt_tokens,
        "new_tokens": args.new_tokens,
        "prefill_tokens_per_s": statistics.median(prefill),
        "decode_tokens_per_s": statistics.median(decode),
        "runs": [{"prefill_tokens_per_s": p, "decode_tokens_per_s": d} for p, d in zip(prefill, decode)],
        "load_secs": load_secs,
        "peak_rss_mb": peak_rss_mb(),
    }
    if agreement:
        record["greedy_agreement"] = agreement
    line = json.dumps(record)
    print(line)
    if args.out:
        with open(args.out, "a", encoding="utf-8") as f:
            f.write(line + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
