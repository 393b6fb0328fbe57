"""A tiny Llama-style decoder (RMSNorm, rotary attention with grouped KV heads and a KV cache,
SwiGLU MLP), randomly initialized, quantized with ``tilus.nn.quantize_model`` and checked against
its float self; then greedy decoding, timed per token.

On a GPU the model runs in fp16 and the quantized layers call the Tilus kernel (through the
``tilus::quant_matmul`` custom op); while the CUDA backend is not built they fall back to the
CPU-style path (dequantize + matmul) with a note. On a CPU the quantized layers run that fallback.

    python examples/llm_decode.py [--types uint4 int8 float4_e2m1] [--tokens 16]
"""
from __future__ import annotations

import argparse
import math
import time

import torch
from torch import nn
import torch.nn.functional as F

import tilus
from tilus.errors import TilusError


class Config:
    vocab = 512
    dim = 128
    layers = 2
    heads = 4
    kv_heads = 2
    hidden = 384            # SwiGLU width; dim and hidden divisible by the group size
    max_len = 64
    rope_theta = 10000.0


class RMSNorm(nn.Module):
    def __init__(self, dim, eps=1e-5):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x):
        xf = x.float()
        return (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)).type_as(x) \
            * self.weight


def rope(x, pos, theta):
    """Rotary embedding of x [B, H, T, D] at positions pos [T]."""
    d = x.shape[-1]
    freqs = 1.0 / theta ** (torch.arange(0, d, 2, device=x.device).float() / d)
    ang = pos.float()[:, None] * freqs[None, :]
    cos, sin = ang.cos().to(x.dtype), ang.sin().to(x.dtype)
    x1, x2 = x[..., 0::2], x[..., 1::2]
    return torch.stack((x1 * cos - x2 * sin, x1 * sin + x2 * cos), dim=-1).flatten(-2)


class Attention(nn.Module):
    def __init__(self, c: Config):
        super().__init__()
        self.c = c
        self.hd = c.dim // c.heads
        self.q_proj = nn.Linear(c.dim, c.heads * self.hd, bias=False)
        self.k_proj = nn.Linear(c.dim, c.kv_heads * self.hd, bias=False)
        self.v_proj = nn.Linear(c.dim, c.kv_heads * self.hd, bias=False)
        self.o_proj = nn.Linear(c.heads * self.hd, c.dim, bias=False)

    def forward(self, x, pos, cache):
        b, t, _ = x.shape
        q = self.q_proj(x).view(b, t, self.c.heads, self.hd).transpose(1, 2)
        k = self.k_proj(x).view(b, t, self.c.kv_heads, self.hd).transpose(1, 2)
        v = self.v_proj(x).view(b, t, self.c.kv_heads, self.hd).transpose(1, 2)
        q, k = rope(q, pos, self.c.rope_theta), rope(k, pos, self.c.rope_theta)
        if cache is not None:
            if "k" in cache:
                k = torch.cat([cache["k"], k], dim=2)
                v = torch.cat([cache["v"], v], dim=2)
            cache["k"], cache["v"] = k, v
        rep = self.c.heads // self.c.kv_heads
        k, v = k.repeat_interleave(rep, dim=1), v.repeat_interleave(rep, dim=1)
        out = F.scaled_dot_product_attention(q, k, v, is_causal=cache is None or t > 1)
        return self.o_proj(out.transpose(1, 2).reshape(b, t, -1))


class MLP(nn.Module):
    def __init__(self, c: Config):
        super().__init__()
        self.gate_proj = nn.Linear(c.dim, c.hidden, bias=False)
        self.up_proj = nn.Linear(c.dim, c.hidden, bias=False)
        self.down_proj = nn.Linear(c.hidden, c.dim, bias=False)

    def forward(self, x):
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class Block(nn.Module):
    def __init__(self, c: Config):
        super().__init__()
        self.attn_norm, self.attn = RMSNorm(c.dim), Attention(c)
        self.mlp_norm, self.mlp = RMSNorm(c.dim), MLP(c)

    def forward(self, x, pos, cache):
        x = x + self.attn(self.attn_norm(x), pos, cache)
        return x + self.mlp(self.mlp_norm(x))


class TinyLlama(nn.Module):
    def __init__(self, c: Config = Config()):
        super().__init__()
        self.c = c
        self.embed = nn.Embedding(c.vocab, c.dim)
        self.layers = nn.ModuleList(Block(c) for _ in range(c.layers))
        self.norm = RMSNorm(c.dim)
        self.lm_head = nn.Linear(c.dim, c.vocab, bias=False)
        for p in self.parameters():       # small weights keep activations tame at any depth
            if p.dim() == 2:
                nn.init.normal_(p, std=1.0 / math.sqrt(p.shape[-1]))

    def forward(self, tokens, start=0, caches=None):
        x = self.embed(tokens)
        pos = torch.arange(start, start + tokens.shape[1], device=tokens.device)
        for i, layer in enumerate(self.layers):
            x = layer(x, pos, None if caches is None else caches[i])
        return self.lm_head(self.norm(x))


@torch.no_grad()
def generate(model, prompt, steps):
    """Greedy decoding with a KV cache; returns (tokens, seconds per decoded token)."""
    caches = [dict() for _ in model.layers]
    logits = model(prompt, 0, caches)
    tokens = [int(logits[0, -1].argmax())]
    sync = torch.cuda.synchronize if prompt.is_cuda else (lambda: None)
    sync()
    t0 = time.perf_counter()
    for i in range(steps - 1):
        nxt = torch.tensor([[tokens[-1]]], device=prompt.device)
        logits = model(nxt, prompt.shape[1] + i, caches)
        tokens.append(int(logits[0, -1].argmax()))
    sync()
    return tokens, (time.perf_counter() - t0) / max(1, steps - 1)


@torch.no_grad()
def compare(ref_model, q_model, tokens):
    """Relative logit error (max |diff| / max |ref|) and top-1 agreement on a teacher-forced
    sequence."""
    ref = ref_model(tokens).float()
    out = q_model(tokens).float()
    rel = float((out - ref).abs().max() / ref.abs().max())
    agree = float((out.argmax(-1) == ref.argmax(-1)).float().mean())
    return rel, agree


# relative logit error bounds per weight type at group size 64 (random weights: no outliers)
# (errors compound through 14 quantized layers: ~5x one layer's relative weight noise)
BOUNDS = {"int8": 0.05, "uint8": 0.05, "uint4": 0.34, "int4": 0.5, "float4_e2m1": 0.6,
          "float8_e4m3": 0.2, "float6_e3m2": 0.3, "uint3": 0.9}


def run(types=("int8", "uint4", "float4_e2m1"), steps=12, group_size=64, seed=0, verbose=True):
    torch.manual_seed(seed)
    cuda = torch.cuda.is_available()
    dev = "cuda" if cuda else "cpu"
    dt = torch.float16 if cuda else torch.float32
    base = TinyLlama().eval()
    ref = TinyLlama().eval()
    ref.load_state_dict(base.state_dict())
    ref = ref.to(dev, dt)
    prompt = torch.randint(0, Config.vocab, (1, 8), device=dev)
    seq = torch.randint(0, Config.vocab, (1, 24), device=dev)
    generate(ref, prompt, 2)                                         # warm-up
    ref_tokens, ref_tpt = generate(ref, prompt, steps)
    report = {"reference": {"dtype": str(dt), "ms_per_token": ref_tpt * 1e3}}
    if verbose:
        print(f"llm_decode: TinyLlama dim {Config.dim}, {Config.layers} layers, vocab "
              f"{Config.vocab} on {dev} ({dt}); reference {ref_tpt * 1e3:.2f} ms/token")
    for wtype in types:
        q = TinyLlama().eval()
        q.load_state_dict(base.state_dict())
        tilus.nn.quantize_model(q, dtype=wtype, group_size=group_size, skip=["lm_head"])
        q = q.to(dev, dt if cuda else torch.float32)
        note = ""
        try:
            rel, agree = compare(ref, q, seq)
            generate(q, prompt, 2)                                   # warm-up
            tokens, tpt = generate(q, prompt, steps)
        except TilusError as e:          # the compiled kernel failed on this machine: say so, fall back
            note = f" (Tilus kernel unavailable: {str(e).splitlines()[0][:80]}...; CPU fallback)"
            q, ref_cpu = q.cpu().float(), ref.cpu().float()
            rel, agree = compare(ref_cpu, q, seq.cpu())
            tokens, tpt = generate(q, prompt.cpu(), steps)
        bound = BOUNDS.get(wtype, 1.0)
        assert rel <= bound, f"{wtype}: relative logit error {rel:.3f} > {bound}"
        same = sum(a == b for a, b in zip(tokens, ref_tokens))
        report[wtype] = {"rel_logit_error": rel, "top1_agreement": agree,
                         "ms_per_token": tpt * 1e3, "same_greedy_tokens": same}
        if verbose:
            print(f"  {wtype:12s} {len(q.tilus_quantized)} layers quantized, logits rel. error "
                  f"{rel:.4f} (bound {bound}), top-1 agreement {agree:.0%}, greedy tokens same "
                  f"{same}/{steps}, {tpt * 1e3:.2f} ms/token{note}")
    return report


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--types", nargs="+", default=["int8", "uint4", "float4_e2m1"])
    p.add_argument("--tokens", type=int, default=12)
    p.add_argument("--group-size", type=int, default=64)
    args = p.parse_args(argv)
    run(args.types, args.tokens, args.group_size)


if __name__ == "__main__":
    main()
