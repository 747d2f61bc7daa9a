#!/usr/bin/env python3
"""Train coil's built-in default model: a ~3M-parameter Mamba-2 on Tiny Shakespeare.

Developers run this (never CI). It is deterministic for a given seed, thread count and the pinned
versions in scripts/fixtures/requirements-hf.txt, and takes about an hour on a 2-core x86-64 machine.

    .venv/bin/python scripts/train/train_default.py --out build/shakespeare
    npx coil convert build/shakespeare/hf -o build/shakespeare/f16.gguf --outtype f16

What it does, in order:
1. Splits tests/fixtures/text/tinyshakespeare.txt: the first 90% of its bytes (cut at the next line break)
   train, the rest is held out and written to tests/fixtures/text/tinyshakespeare-heldout.txt (unless
   --no-write-heldout) so `coil perplexity` and this script score the very same text.
2. Trains a byte-level BPE tokenizer (GPT-2 pre-tokenizer, 2048 entries) on the training part only.
3. Trains Mamba2ForCausalLM (d_model 256, 6 layers, d_state 64, head_dim 32, tied embeddings) on random
   256-token windows of the training tokens with AdamW and a cosine schedule, evaluating the held-out loss
   every --eval-every steps (the loss curve goes to train_log.json).
4. Rounds the weights to float16 (what the shipped GGUF holds) and saves a normal HF checkpoint with
   tokenizer.json under OUT/hf. Then it computes the held-out perplexity of that checkpoint, in float32,
   with llama.cpp's method (consecutive windows of --ctx tokens, each from a fresh state, scoring the second
   half of each window) and writes OUT/hf_perplexity.json.
"""
import argparse, json, math, os, sys, time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import Mamba2Config, Mamba2ForCausalLM, PreTrainedTokenizerFast

REPO = Path(__file__).resolve().parents[2]
CORPUS = REPO / "tests/fixtures/text/tinyshakespeare.txt"
HELDOUT = REPO / "tests/fixtures/text/tinyshakespeare-heldout.txt"
EOS = "<|endoftext|>"


def split_corpus(text: str):
    cut = int(len(text.encode("utf-8")) * 0.9)
    # The corpus is ASCII, so byte and character offsets agree; cut after the next line break.
    assert len(text) == len(text.encode("utf-8"))
    nl = text.index("\n", cut) + 1
    return text[:nl], text[nl:]


def train_tokenizer(train_text: str, vocab_size: int) -> Tokenizer:
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=2,
        special_tokens=[EOS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    # Train on lines so the BPE statistics do not depend on how the text is chunked.
    tok.train_from_iterator(train_text.splitlines(keepends=True), trainer=trainer)
    return tok


def perplexity(model, ids: list, ctx: int):
    """llama.cpp's perplexity: windows [k*ctx, (k+1)*ctx), fresh state each, score tokens ctx/2+1 .. ctx-1
    from the logits at positions ctx/2 .. ctx-2 (no BOS: this vocabulary does not add one)."""
    n_windows = len(ids) // ctx
    first = ctx // 2
    nll, count = 0.0, 0
    model.eval()
    with torch.no_grad():
        for w in range(n_windows):
            x = torch.tensor([ids[w * ctx:(w + 1) * ctx]])
            logits = model(input_ids=x).logits[0].double()
            logp = torch.log_softmax(logits, dim=-1)
            for j in range(first, ctx - 1):
                nll -= logp[j, x[0, j + 1]].item()
                count += 1
    return math.exp(nll / count), count, n_windows


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=str(REPO / "build/shakespeare"))
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--steps", type=int, default=2000)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--seq", type=int, default=256)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--warmup", type=int, default=100)
    ap.add_argument("--vocab", type=int, default=2048)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--eval-every", type=int, default=100)
    ap.add_argument("--ctx", type=int, default=512, help="window length of the final perplexity")
    ap.add_argument("--no-write-heldout", action="store_true")
    args = ap.parse_args()

    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    torch.use_deterministic_algorithms(True)
    out = Path(args.out)
    (out / "hf").mkdir(parents=True, exist_ok=True)

    text = CORPUS.read_text(encoding="utf-8")
    train_text, held_text = split_corpus(text)
    if not args.no_write_heldout:
        HELDOUT.write_text(held_text, encoding="utf-8")
    print(f"corpus {len(text)} bytes: train {len(train_text)}, held out {len(held_text)}", flush=True)

    tok = train_tokenizer(train_text, args.vocab)
    train_ids = tok.encode(train_text).ids
    held_ids = tok.encode(held_text).ids
    V = tok.get_vocab_size()
    print(f"tokenizer: {V} entries; train {len(train_ids)} tokens, held out {len(held_ids)}", flush=True)

    cfg = Mamba2Config(
        vocab_size=V, hidden_size=256, num_hidden_layers=6, state_size=64, expand=2, head_dim=32,
        num_heads=16, n_groups=1, conv_kernel=4, chunk_size=64, tie_word_embeddings=True,
        bos_token_id=tok.token_to_id(EOS), eos_token_id=tok.token_to_id(EOS), pad_token_id=tok.token_to_id(EOS),
        use_cache=False,
    )
    model = Mamba2ForCausalLM(cfg)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"model: {n_params} parameters", flush=True)

    decay, no_decay = [], []
    for name, p in model.named_parameters():
        (no_decay if p.ndim < 2 or name.endswith(("A_log", "D", "dt_bias")) else decay).append(p)
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": no_decay, "weight_decay": 0.0}],
                            lr=args.lr, betas=(0.9, 0.95))

    def lr_at(step):
        if step < args.warmup:
            return args.lr * (step + 1) / args.warmup
        t = (step - args.warmup) / max(1, args.steps - args.warmup)
        return args.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * t)))

    data = torch.tensor(train_ids)
    held = torch.tensor(held_ids)
    gen = torch.Generator().manual_seed(args.seed)

    def held_loss():
        model.eval()
        n = (len(held) - 1) // args.seq
        total, count = 0.0, 0
        with torch.no_grad():
            for i in range(0, n, args.batch):
                xs = torch.stack([held[k * args.seq:(k + 1) * args.seq + 1] for k in range(i, min(n, i + args.batch))])
                loss = model(input_ids=xs[:, :-1], labels=xs[:, :-1]).loss
                total += loss.item() * xs.shape[0]
                count += xs.shape[0]
        model.train()
        return total / count

    log = {"seed": args.seed, "steps": args.steps, "batch": args.batch, "seq": args.seq, "lr": args.lr,
           "vocab": V, "parameters": n_params, "train_tokens": len(train_ids), "heldout_tokens": len(held_ids),
           "threads": args.threads, "torch": torch.__version__, "curve": []}
    t0 = time.time()
    model.train()
    running = None
    for step in range(args.steps):
        for g in opt.param_groups:
            g["lr"] = lr_at(step)
        starts = torch.randint(0, len(data) - args.seq - 1, (args.batch,), generator=gen)
        x = torch.stack([data[s:s + args.seq] for s in starts.tolist()])
        loss = model(input_ids=x, labels=x).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        running = loss.item() if running is None else 0.95 * running + 0.05 * loss.item()
        if (step + 1) % args.eval_every == 0 or step + 1 == args.steps:
            hl = held_loss()
            el = time.time() - t0
            log["curve"].append({"step": step + 1, "train_loss": round(running, 4), "heldout_loss": round(hl, 4),
                                 "seconds": round(el, 1)})
            print(f"step {step + 1}/{args.steps}  train {running:.4f}  held-out {hl:.4f}  {el:.0f}s", flush=True)
    log["train_seconds"] = round(time.time() - t0, 1)

    # Round to float16: the checkpoint holds exactly what an F16 GGUF holds, and every figure below is
    # computed from those weights.
    model = model.to(torch.float16)
    model.config.dtype = "float16"
    model.save_pretrained(out / "hf", safe_serialization=True)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=EOS, eos_token=EOS, pad_token=EOS)
    fast.save_pretrained(out / "hf")
    model = model.to(torch.float32)

    ppl, scored, windows = perplexity(model, held_ids, args.ctx)
    ref = {"perplexity": ppl, "tokens": scored, "windows": windows, "ctx": args.ctx,
           "text": "tests/fixtures/text/tinyshakespeare-heldout.txt", "weights": "float16 checkpoint, computed in float32"}
    (out / "hf_perplexity.json").write_text(json.dumps(ref, indent=1) + "\n")
    log["heldout_perplexity"] = ref
    (out / "train_log.json").write_text(json.dumps(log, indent=1) + "\n")
    print(json.dumps(ref), flush=True)


if __name__ == "__main__":
    main()
