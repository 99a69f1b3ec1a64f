#!/usr/bin/env python3
"""PyTorch's time for a unit-scaled linear layer's forward + backward, the comparison for the
linear_fwd_bwd rows of bench_gemm (benchmarks/bench_gemm.cpp). run.sh runs both in one session.

The layer, as in unitscale's ops/linear.hpp, without bias, x [tokens, in], W [out, in]:

    y  = alpha  * x @ W.T        alpha  = in ** -0.5
    dx = beta_x * g @ W          beta_x = in ** -0.5      (constrained to the output scale)
    dW = beta_w * g.T @ x        beta_w = tokens ** -0.5

Two ways of running it, each in float32 and bfloat16:

    addmm     the three GEMMs as Tensor.addmm_(a, b, beta=0, alpha=scale) into buffers made
              once: the scales folded into the GEMMs, nothing allocated per step (what unitscale
              does, and the fair figure to compare with)
    autograd  y = (x @ W.T) * alpha through a torch.autograd.Function whose backward computes the
              scaled dx and dW: how a unit-scaled layer is usually written in PyTorch (outputs
              allocated per step, the scale a separate elementwise pass)

bfloat16 runs take bfloat16 inputs and give bfloat16 outputs (PyTorch's convention; the products
are accumulated in float32). FLOPs are 3 * 2 * tokens * in * out per step. Times are wall-clock
medians over --repeats steps after --warmup untimed ones.
"""

import argparse
import os
import statistics
import sys
import time

try:
    import torch
    from torch_context import print_torch_context
except ImportError:
    sys.exit(
        "linear_torch.py: PyTorch is not installed for " + sys.executable + "; see "
        "benchmarks/compare/README.md (python -m venv /opt/venv-compare && "
        "/opt/venv-compare/bin/pip install torch, or apt-get install python3-torch)"
    )


class ScaledLinear(torch.autograd.Function):
    """y = alpha * x @ W.T with unit-scaling's separate backward scales."""

    @staticmethod
    def forward(ctx, x, w, alpha, beta_x, beta_w):
        ctx.save_for_backward(x, w)
        ctx.beta_x, ctx.beta_w = beta_x, beta_w
        return (x @ w.t()) * alpha

    @staticmethod
    def backward(ctx, g):
        x, w = ctx.saved_tensors
        return (g @ w) * ctx.beta_x, (g.t() @ x) * ctx.beta_w, None, None, None


def make_steps(tokens, d_in, d_out, dtype):
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(tokens, d_in, generator=gen).to(dtype)
    w = torch.randn(d_out, d_in, generator=gen).to(dtype)
    g = torch.randn(tokens, d_out, generator=gen).to(dtype)
    alpha = beta_x = d_in ** -0.5
    beta_w = tokens ** -0.5

    y = torch.empty(tokens, d_out, dtype=dtype)
    dx = torch.empty(tokens, d_in, dtype=dtype)
    dw = torch.empty(d_out, d_in, dtype=dtype)
    wt, gt = w.t(), g.t()  # views: the transposes are read in place

    def addmm():
        y.addmm_(x, wt, beta=0, alpha=alpha)
        dx.addmm_(g, w, beta=0, alpha=beta_x)
        dw.addmm_(gt, x, beta=0, alpha=beta_w)

    xa = x.clone().requires_grad_(True)
    wa = w.clone().requires_grad_(True)

    def autograd():
        xa.grad = None
        wa.grad = None
        out = ScaledLinear.apply(xa, wa, alpha, beta_x, beta_w)
        out.backward(g)

    return {"addmm": addmm, "autograd": autograd}


def median_seconds(step, warmup, repeats):
    for _ in range(warmup):
        step()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return statistics.median(times), min(times)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tokens", type=int, default=1024)
    parser.add_argument("--in-features", type=int, default=1024)
    parser.add_argument("--out-features", type=int, default=1024)
    parser.add_argument(
        "--threads",
        type=int,
        default=int(os.environ.get("OMP_NUM_THREADS", "2") or 2),
        help="torch.set_num_threads (default: OMP_NUM_THREADS, else 2), to match bench_gemm",
    )
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--dtypes", default="float32,bfloat16")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    print_torch_context()

    t, i, o = args.tokens, args.in_features, args.out_features
    flops = 3 * 2 * t * i * o
    shape = f"tokens:{t}/in:{i}/out:{o}"
    for dtype_name in args.dtypes.split(","):
        dtype = getattr(torch, dtype_name)
        short = {"float32": "f32", "bfloat16": "bf16"}.get(dtype_name, dtype_name)
        for variant, step in make_steps(t, i, o, dtype).items():
            median, best = median_seconds(step, args.warmup, args.repeats)
            name = f"linear_fwd_bwd/torch_{short}_{variant}/{shape}"
            print(f"{name:<66} median {median * 1e3:9.3f} ms  (min {best * 1e3:8.3f} ms)  "
                  f"GFLOPS={flops / median * 1e-9:.2f}/s")


if __name__ == "__main__":
    main()
