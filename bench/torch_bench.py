#!/usr/bin/python3
"""torch_bench.py — training-step benchmark of the PyTorch peer
(bench/torch_pixelcnnpp.py), the number pxc's `pxc bench` is compared with.

One step = forward (dropout 0.5, element-wise) + discretized logistic
mixture loss (sum of nats over the batch) + backward + the reference Adam
update (lr decayed every step), in float32 on the CPU with
torch.set_num_threads(THREADS). The parameters get the data-dependent init
on the first batch (not timed); the images are uniform random 8-bit values
drawn once with a fixed seed (the cost does not depend on the pixel values),
the same batch every step. OPENBLAS_NUM_THREADS defaults to 1 (see below). Warm-up steps are run and discarded, then every
measured step is timed alone with time.perf_counter().

Prints one JSON object:
  step_ms_median, step_ms (every measured step), images_per_s
  (= batch / median step), fwd_gflop_per_image (2 x the multiply-adds of
  the convs, deconvs and nins, from the architecture), train_gflop_per_s
  (= 3 x forward FLOPs/image x images/s), peak_rss_bytes (getrusage
  ru_maxrss of this process, interpreter and libtorch included),
  rss_after_import_bytes (the same figure before the model exists), params,
  the configuration, and the first and last loss in bits/dim.

usage: torch_bench.py [--config small|mid|paper] [--batch B] [--steps N]
                      [--warmup W] [--threads T] [--dropout P] [--channels-last]
"""
import argparse
import json
import math
import os
import resource
import statistics
import sys
import time

# PyTorch runs its kernels on its own OpenMP threads; Debian's libtorch also
# calls OpenBLAS (pthreads build) for some ops (the transposed convs' GEMMs),
# and letting OpenBLAS start threads of its own on top oversubscribes the
# cores (measured: ~35% slower steps, erratic). One BLAS thread per caller.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import torch  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import torch_pixelcnnpp as pcnn  # noqa: E402
from bench_configs import CONFIGS  # noqa: E402


def rss_bytes():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024   # Linux: KiB


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--config", choices=sorted(CONFIGS), default="small")
    ap.add_argument("--batch", type=int, default=None, help="images per step (default: the config's)")
    ap.add_argument("--steps", type=int, default=5, help="measured steps (>= 5 for a reported figure)")
    ap.add_argument("--warmup", type=int, default=2, help="discarded steps before measuring")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--dropout", type=float, default=0.5)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--channels-last", action="store_true",
                    help="NHWC memory format for the convolutions (default NCHW, measured faster here)")
    args = ap.parse_args()
    if args.steps < 1 or args.warmup < 0:
        ap.error("--steps must be >= 1 and --warmup >= 0")

    rss_import = rss_bytes()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    H, W, C, R, Fn, M, batch = CONFIGS[args.config]
    if args.batch is not None:
        if args.batch < 1:
            ap.error("--batch must be >= 1")
        batch = args.batch

    specs = pcnn.param_specs(C, R, Fn, M)
    params = pcnn.init_params(specs)
    nparams = sum(p.numel() for p in params.values())
    x_u8 = torch.randint(0, 256, (batch, H, W, C), dtype=torch.uint8)
    x = (x_u8.float() - 127.5) / 127.5                                  # [N,H,W,C]
    pcnn.data_dependent_init(params, specs, x, R)
    opt = pcnn.Adam(params.values())
    plist = list(params.values())

    def step():
        for p in plist:
            p.grad = None
        l = pcnn.forward(params, x, R, dropout=args.dropout, training=True,
                         channels_last=args.channels_last)                   # [N,H,W,K]
        loss = pcnn.mixture_nll_pixel(l, x).sum()
        loss.backward()
        opt.step()
        return loss.item()

    bpd = lambda loss: loss / (math.log(2) * batch * H * W * C)
    losses = []
    for _ in range(args.warmup):
        losses.append(step())
    times = []
    for _ in range(args.steps):
        t0 = time.perf_counter()
        losses.append(step())
        times.append(time.perf_counter() - t0)

    med = statistics.median(times)
    fwd_flops = 2 * pcnn.forward_macs_per_image(H, W, C, R, Fn, M)
    ips = batch / med
    out = {
        "impl": "pytorch",
        "torch_version": torch.__version__,
        "config": args.config,
        "H": H, "W": W, "C": C, "nr_resnet": R, "nr_filters": Fn, "nr_mix": M,
        "batch": batch, "warmup": args.warmup, "steps": args.steps,
        "threads": torch.get_num_threads(), "dropout": args.dropout,
        "memory_format": "channels_last" if args.channels_last else "nchw",
        "openblas_threads": os.environ.get("OPENBLAS_NUM_THREADS"),
        "params": nparams,
        "step_ms_median": med * 1e3,
        "step_ms": [round(t * 1e3, 3) for t in times],
        "images_per_s": ips,
        "fwd_gflop_per_image": fwd_flops / 1e9,
        "train_gflop_per_s": 3 * fwd_flops * ips / 1e9,
        "peak_rss_bytes": rss_bytes(),
        "rss_after_import_bytes": rss_import,
        "loss_bpd_first": bpd(losses[0]),
        "loss_bpd_last": bpd(losses[-1]),
    }
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
