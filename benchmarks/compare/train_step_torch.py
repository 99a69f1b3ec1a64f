#!/usr/bin/env python3
"""PyTorch's tokens/s for one training step of the byte-level decoder that bench_train times
(benchmarks/bench_train.cpp, the train_step/* rows). run.sh runs both in one session.

The model, written here in plain torch (no torch.nn.Transformer, no torch.compile), FP32:

    ids [B, S] -> Embedding(256, d)
      -> L x pre-norm block:
           x = x + out(SDPA(split_heads(qkv(rms(x))), is_causal=True))     qkv: d -> 3d, no bias
           x = x + down(silu(gate(rms(x))) * up(rms(x)))                   up, gate: d -> 2d
      -> rms(x) -> readout Linear(d, 256, no bias) -> cross_entropy (mean over B*S tokens)
    rms(x) = x * rsqrt(mean(x^2, -1) + 1e-5)   (RMSNorm without affine)

No positional encoding (NoPE), d/32 heads of 32, attention scale 1/sqrt(32) (SDPA's default).
Parameters: 256*d + L*10*d^2 + 256*d, as bench_train's decoder (its norms have no weights either).

A step is zero_grad (set_to_none), forward, backward and AdamW's step (lr 1e-3, weight decay
1e-4), as torch.optim.AdamW with --optimizer fused (the default: one fused kernel per parameter
group on CPU, the fastest of the three here) or foreach (multi-tensor ops) or forloop. The forward
row runs the loss under torch.no_grad().

Each width runs in its own Python process (a subprocess of this one, unless --in-process), so its
peak RSS (resource.getrusage ru_maxrss) is that width's. rss_growth is that peak minus the RSS
after torch was imported, before the model was built: the figure to compare with bench_train's
rss_growth_MiB (PyTorch's own libraries make its absolute RSS far larger than ours). Times are
wall-clock: --warmup untimed steps, then steps until --min-time seconds and at least --min-steps
steps; tokens/s is B*S / the median step time. FLOP/s use bench_train's cost model,
6*N_mm*T + 12*L*S*d*T per step with N_mm = 10*L*d^2 + 256*d and T = B*S.
"""

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time

try:
    import torch
    import torch.nn.functional as F
    from torch_context import print_torch_context
except ImportError:
    sys.exit(
        "train_step_torch.py: PyTorch is not installed for " + sys.executable + "; see "
        "benchmarks/compare/README.md (python3 -m venv /work/venv-compare && "
        "/work/venv-compare/bin/pip install torch numpy)"
    )

VOCAB = 256
EPS = 1e-5


def rms(x):
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + EPS)


class Block(torch.nn.Module):
    def __init__(self, width, heads, expansion):
        super().__init__()
        self.heads = heads
        self.qkv = torch.nn.Linear(width, 3 * width, bias=False)
        self.out = torch.nn.Linear(width, width, bias=False)
        self.up = torch.nn.Linear(width, expansion * width, bias=False)
        self.gate = torch.nn.Linear(width, expansion * width, bias=False)
        self.down = torch.nn.Linear(expansion * width, width, bias=False)

    def forward(self, x):
        b, s, d = x.shape
        q, k, v = self.qkv(rms(x)).view(b, s, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        a = F.scaled_dot_product_attention(q, k, v, is_causal=True)  # [B, H, S, d_head]
        x = x + self.out(a.transpose(1, 2).reshape(b, s, d))
        h = rms(x)
        return x + self.down(F.silu(self.gate(h)) * self.up(h))


class Decoder(torch.nn.Module):
    def __init__(self, width, depth, heads, expansion):
        super().__init__()
        self.embedding = torch.nn.Embedding(VOCAB, width)
        self.layers = torch.nn.ModuleList(Block(width, heads, expansion) for _ in range(depth))
        self.readout = torch.nn.Linear(width, VOCAB, bias=False)

    def forward(self, ids, targets):
        x = self.embedding(ids)
        for layer in self.layers:
            x = layer(x)
        logits = self.readout(rms(x))
        return F.cross_entropy(logits.view(-1, VOCAB), targets.view(-1))


def status_kib(key):
    """A field of /proc/self/status in KiB ("VmRSS", "VmHWM"), or 0."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def reset_peak_rss():
    """Resets VmHWM to the current RSS (Linux >= 4.0); False where not allowed."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def model_flops(width, depth, seq, tokens):
    n_mm = 10 * depth * width * width + VOCAB * width
    return 6 * n_mm * tokens + 12 * depth * seq * width * tokens


def time_steps(step, warmup, min_time, min_steps):
    for _ in range(warmup):
        step()
    times = []
    begin = time.perf_counter()
    while len(times) < min_steps or time.perf_counter() - begin < min_time:
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return times


def run_width(args, width):
    """Both rows of one width in this process; returns a dict (printed as JSON by a child)."""
    torch.set_num_threads(args.threads)
    baseline = status_kib("VmRSS")  # torch imported, nothing built
    torch.manual_seed(1)
    heads = width // args.head_dim
    model = Decoder(width, args.depth, heads, 2)
    params = sum(p.numel() for p in model.parameters())
    gen = torch.Generator().manual_seed(1)
    ids = torch.randint(0, VOCAB, (args.batch, args.seq), generator=gen)
    targets = torch.randint(0, VOCAB, (args.batch, args.seq), generator=gen)
    kwargs = {"fused": True} if args.optimizer == "fused" else {
        "foreach": args.optimizer == "foreach"}
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=1e-4, **kwargs)

    def train_step():
        opt.zero_grad(set_to_none=True)
        loss = model(ids, targets)
        loss.backward()
        opt.step()

    tokens = args.batch * args.seq
    train_times = time_steps(train_step, args.warmup, args.min_time, args.min_steps)
    train_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux

    resettable = reset_peak_rss()
    fwd_baseline = status_kib("VmRSS")

    def forward():
        with torch.no_grad():
            model(ids, targets)

    fwd_times = time_steps(forward, args.warmup, args.min_time, args.min_steps)
    fwd_peak = status_kib("VmHWM") if resettable else 0
    with torch.no_grad():
        loss = float(model(ids, targets))
    return {
        "width": width,
        "heads": heads,
        "params": params,
        "train_median_s": statistics.median(train_times),
        "train_min_s": min(train_times),
        "train_steps": len(train_times),
        "train_tokens_per_s": tokens / statistics.median(train_times),
        "train_gflops": model_flops(width, args.depth, args.seq, tokens)
        / statistics.median(train_times) * 1e-9,
        "train_peak_rss_mib": train_peak / 1024,
        "train_rss_growth_mib": (train_peak - baseline) / 1024,
        "fwd_median_s": statistics.median(fwd_times),
        "fwd_tokens_per_s": tokens / statistics.median(fwd_times),
        # With the peak reset, the forward row's growth over the RSS it started from (the trained
        # model and optimizer already resident); 0 where the reset is not allowed.
        "fwd_rss_growth_mib": (fwd_peak - fwd_baseline) / 1024 if resettable else 0.0,
        "loss": loss,
    }


def print_header(args):
    print_torch_context()
    print(f"model: vocab {VOCAB}, depth {args.depth}, heads width/{args.head_dim}, SwiGLU x2, "
          f"RMSNorm (no affine), NoPE causal SDPA; batch {args.batch} x {args.seq}; float32; "
          f"AdamW ({args.optimizer})")


def print_row(args, r):
    w = r["width"]
    print(f"train_step/torch_{args.optimizer}/width:{w:<5} median {r['train_median_s'] * 1e3:9.2f} ms"
          f" (min {r['train_min_s'] * 1e3:9.2f}, {r['train_steps']} steps)"
          f"  tokens/s={r['train_tokens_per_s']:9.0f}  GFLOP/s={r['train_gflops']:6.1f}"
          f"  peak_rss_MiB={r['train_peak_rss_mib']:7.1f}"
          f"  rss_growth_MiB={r['train_rss_growth_mib']:7.1f}  params={r['params']}")
    print(f"forward/torch_no_grad/width:{w:<5}   median {r['fwd_median_s'] * 1e3:9.2f} ms"
          f"  tokens/s={r['fwd_tokens_per_s']:9.0f}"
          f"  rss_growth_MiB={r['fwd_rss_growth_mib']:7.1f}", flush=True)


def main():
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n")[0] + " " + __doc__.split("\n")[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="\n".join(__doc__.split("\n")[2:]))
    parser.add_argument("--widths", default="64,256,1024", help="comma-separated (default: %(default)s)")
    parser.add_argument("--depth", type=int, default=4)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--head-dim", type=int, default=32)
    parser.add_argument(
        "--threads", type=int, default=int(os.environ.get("OMP_NUM_THREADS", "2") or 2),
        help="torch.set_num_threads (default: OMP_NUM_THREADS, else 2), to match bench_train")
    parser.add_argument("--optimizer", choices=("fused", "foreach", "forloop"), default="fused",
                        help="torch.optim.AdamW implementation (default: %(default)s)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps (default: %(default)s)")
    parser.add_argument("--min-time", type=float, default=2.0,
                        help="seconds of timed steps per row, at least (default: %(default)s)")
    parser.add_argument("--min-steps", type=int, default=3,
                        help="timed steps per row, at least (default: %(default)s)")
    parser.add_argument("--in-process", action="store_true",
                        help="run every width in this process (the peak RSS is then the largest "
                             "so far, not per width)")
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    widths = [int(w) for w in args.widths.split(",") if w]
    for w in widths:
        if w % args.head_dim:
            parser.error(f"width {w} is not a multiple of --head-dim {args.head_dim}")

    if args.child is not None:
        print(json.dumps(run_width(args, args.child)), flush=True)
        return

    torch.set_num_threads(args.threads)
    print_header(args)
    results = []
    for w in widths:
        if args.in_process:
            r = run_width(args, w)
        else:
            cmd = [sys.executable, os.path.abspath(__file__), "--child", str(w)]
            for flag in ("depth", "batch", "seq", "head_dim", "threads", "optimizer", "warmup",
                         "min_time", "min_steps"):
                cmd += ["--" + flag.replace("_", "-"), str(getattr(args, flag))]
            out = subprocess.run(cmd, check=True, stdout=subprocess.PIPE, text=True).stdout
            r = json.loads(out.strip().splitlines()[-1])
        print_row(args, r)
        results.append(r)

    print(f"\nSummary: tokens/s (median step), B={args.batch} S={args.seq} depth {args.depth}, "
          f"float32, AdamW {args.optimizer}, {args.threads} threads")
    print(f"{'width':<6} {'params':>10} {'torch_step':>12} {'torch_fwd':>12} {'GFLOP/s':>9} "
          f"{'peak_rss_MiB':>13} {'rss_grow_MiB':>13}")
    for r in results:
        print(f"{r['width']:<6} {r['params'] * 1e-6:9.2f}M {r['train_tokens_per_s']:12.0f} "
              f"{r['fwd_tokens_per_s']:12.0f} {r['train_gflops']:9.1f} "
              f"{r['train_peak_rss_mib']:13.1f} {r['train_rss_growth_mib']:13.1f}")


if __name__ == "__main__":
    main()
