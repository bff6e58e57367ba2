#!/usr/bin/python3
"""side_by_side.py — pxc against its PyTorch peer, same model, same batch,
same machine, in one run.

For each configuration (small, mid, paper) it runs, alternately and each in
its own fresh process, `pxc bench` and bench/torch_bench.py, REPEATS times
each, takes the median of each side's images/s and peak RSS over the
repeats, and prints a table with the ratios pxc / PyTorch (images/s: above
1 means pxc is faster; peak RSS: below 1 means pxc uses less memory).
Alternating the two in one run keeps slow drift of a shared machine from
favouring either side.

The pxc side is

    pxc bench models/pixelcnnpp_cifar10.yaml --set height=.. --set width=..
        --set channels=.. --set nr_resnet=.. --set nr_filters=.. --set nr_mix=..
        --set dropout=0.5 --batch B --steps N --json

which must print one JSON object with at least images_per_s,
peak_rss_bytes and step_ms_median. If the pxc binary or its bench command
is missing, or its output is not that JSON, the script says so and still
measures PyTorch.

usage: side_by_side.py [--configs small,mid,paper] [--steps N] [--warmup W]
                       [--repeats R] [--pxc PATH] [--spec YAML] [--json-out FILE]
"""
import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
from bench_configs import CONFIGS  # noqa: E402  (name: H, W, C, R, F, nr_mix, batch)

PYTHON = "/usr/bin/python3"      # Debian's, with python3-torch


def find_pxc(given):
    if given:
        return given if os.path.isfile(given) and os.access(given, os.X_OK) else None
    for cand in (os.path.join(ROOT, "build", "pxc"),):
        if os.path.isfile(cand) and os.access(cand, os.X_OK):
            return cand
    return shutil.which("pxc")


def last_json(text):
    """The last line of text that parses as a JSON object, or None."""
    for line in reversed(text.strip().splitlines()):
        line = line.strip()
        if line.startswith("{"):
            try:
                obj = json.loads(line)
            except ValueError:
                continue
            if isinstance(obj, dict):
                return obj
    try:
        obj = json.loads(text)
        return obj if isinstance(obj, dict) else None
    except ValueError:
        return None


def run(cmd, timeout):
    """(json dict or None, error message or None)."""
    try:
        p = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    except FileNotFoundError as e:
        return None, str(e)
    except subprocess.TimeoutExpired:
        return None, "timed out after %d s" % timeout
    obj = last_json(p.stdout)
    if p.returncode != 0 or obj is None:
        err = (p.stderr.strip() or p.stdout.strip()).splitlines()
        why = err[0] if err else "no output"
        if "unknown command" in why and "bench" in why:
            why += " (this pxc has no bench command yet)"
        elif p.returncode == 0:
            why = "no JSON object on stdout"
        return None, "exit status %d: %s" % (p.returncode, why)
    return obj, None


def pxc_cmd(pxc, spec, cfg, steps, warmup):
    H, W, C, R, Fn, M, batch = CONFIGS[cfg]
    sets = ["height=%d" % H, "width=%d" % W, "channels=%d" % C, "nr_resnet=%d" % R,
            "nr_filters=%d" % Fn, "nr_mix=%d" % M, "dropout=0.5"]
    cmd = [pxc, "bench", spec]
    for s in sets:
        cmd += ["--set", s]
    cmd += ["--batch", str(batch), "--steps", str(steps)]
    if warmup is not None:
        cmd += ["--warmup", str(warmup)]
    return cmd + ["--json"]


def torch_cmd(cfg, steps, warmup, extra):
    cmd = [PYTHON, os.path.join(HERE, "torch_bench.py"), "--config", cfg, "--steps", str(steps)]
    if warmup is not None:
        cmd += ["--warmup", str(warmup)]
    return cmd + extra


def fmt_mb(b):
    return "%.0f MB" % (b / 1e6) if b is not None else "-"


def median_of(results, key):
    vals = [r[key] for r in results if r and isinstance(r.get(key), (int, float))]
    return statistics.median(vals) if vals else None


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--configs", default="small,mid,paper")
    ap.add_argument("--steps", type=int, default=5, help="measured steps per process (>= 5 for the table)")
    ap.add_argument("--warmup", type=int, default=None,
                    help="warm-up steps (default: each side's own; passed to pxc as --warmup when given)")
    ap.add_argument("--repeats", type=int, default=1, help="processes per side and config, alternating")
    ap.add_argument("--pxc", default=None, help="pxc binary (default: build/pxc, then PATH)")
    ap.add_argument("--spec", default="models/pixelcnnpp_cifar10.yaml")
    ap.add_argument("--timeout", type=int, default=3600, help="seconds per process")
    ap.add_argument("--torch-args", default="", help="extra arguments for torch_bench.py, e.g. --channels-last")
    ap.add_argument("--json-out", default=None, help="also write every raw result here")
    args = ap.parse_args()
    configs = [c for c in args.configs.split(",") if c]
    for c in configs:
        if c not in CONFIGS:
            ap.error("unknown config '%s' (expected one of %s)" % (c, ", ".join(sorted(CONFIGS))))

    pxc = find_pxc(args.pxc)
    pxc_ok = pxc is not None
    if not pxc_ok:
        print("side_by_side: no pxc binary (looked for %s, build/pxc and pxc on PATH); "
              "measuring PyTorch only" % (args.pxc or "--pxc"), flush=True)
    elif not os.path.isfile(os.path.join(ROOT, args.spec)) and not os.path.isfile(args.spec):
        print("side_by_side: spec %s not found; measuring PyTorch only" % args.spec, flush=True)
        pxc_ok = False

    raw = {}
    rows = []
    for cfg in configs:
        res = {"pxc": [], "pytorch": []}
        for rep in range(args.repeats):
            # alternate which side goes first, so neither always runs on a warmer machine
            order = ["pxc", "pytorch"] if rep % 2 == 0 else ["pytorch", "pxc"]
            for side in order:
                if side == "pxc":
                    if not pxc_ok:
                        continue
                    cmd = pxc_cmd(pxc, args.spec, cfg, args.steps, args.warmup)
                else:
                    cmd = torch_cmd(cfg, args.steps, args.warmup, args.torch_args.split())
                print("[%s %d/%d] %s" % (cfg, rep + 1, args.repeats, " ".join(cmd)), flush=True)
                obj, err = run(cmd, args.timeout)
                if err:
                    print("    %s failed: %s" % (side, err), flush=True)
                    if side == "pxc":
                        print("    (pxc bench missing or broken; continuing with PyTorch only)", flush=True)
                        pxc_ok = False
                    continue
                print("    %s: %.1f images/s, median step %.1f ms, peak RSS %s" % (
                    side, obj.get("images_per_s", float("nan")), obj.get("step_ms_median", float("nan")),
                    fmt_mb(obj.get("peak_rss_bytes"))), flush=True)
                res[side].append(obj)
        raw[cfg] = res
        rows.append((cfg,
                     median_of(res["pxc"], "images_per_s"), median_of(res["pytorch"], "images_per_s"),
                     median_of(res["pxc"], "peak_rss_bytes"), median_of(res["pytorch"], "peak_rss_bytes"),
                     median_of(res["pytorch"], "train_gflop_per_s")))

    def ratio(a, b):
        return "%.2fx" % (a / b) if a is not None and b else "-"

    def num(v, f="%.1f"):
        return f % v if v is not None else "-"

    print()
    print("steps per process: %d, repeats: %d (medians over repeats)" % (args.steps, args.repeats))
    hdr = "| config | pxc img/s | PyTorch img/s | img/s pxc/PyTorch | pxc peak RSS | PyTorch peak RSS | RSS pxc/PyTorch | PyTorch GFLOP/s |"
    print(hdr)
    print("|---" * (hdr.count("|") - 1) + "|")
    for cfg, pi, ti, pr, tr, tg in rows:
        print("| %s | %s | %s | %s | %s | %s | %s | %s |" % (
            cfg, num(pi), num(ti), ratio(pi, ti), fmt_mb(pr), fmt_mb(tr), ratio(pr, tr), num(tg)))
    # pxc against the machine: its training FLOP/s, the sgemm peak it measured
    # in the same process, and where its step time goes (pxc bench's split)
    kinds = ["gemm", "conv", "packing", "elementwise", "weight norm", "loss", "optimiser", "unattributed"]
    print()
    hdr = "| config | pxc GFLOP/s | sgemm peak | fraction | " + " | ".join(kinds) + " |"
    print(hdr)
    print("|---" * (hdr.count("|") - 1) + "|")
    for cfg in configs:
        runs = [r for r in raw[cfg]["pxc"] if r]
        if not runs:
            continue
        r = min(runs, key=lambda o: abs(o.get("images_per_s", 0) - median_of(runs, "images_per_s")))
        sp = r.get("split_ms_per_step") or {}
        tot = sp.get("step_mean") or 0
        cells = ["%.0f ms (%.0f%%)" % (sp[k], 100 * sp[k] / tot) if k in sp and tot else "-" for k in kinds]
        print("| %s | %s | %s | %s | %s |" % (
            cfg, num(r.get("training_gflops")), num(r.get("sgemm_peak_gflops")),
            "%.0f%%" % (100 * r["fraction_of_sgemm_peak"]) if "fraction_of_sgemm_peak" in r else "-",
            " | ".join(cells)))
    if args.json_out:
        with open(args.json_out, "w") as f:
            json.dump(raw, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
