#!/usr/bin/python3
"""verify_torch_peer.py — checks bench/torch_pixelcnnpp.py against the
whole-model reference vectors before it is trusted as pxc's benchmark peer.

For every case in <reference>/model/manifest.json: load the float32 weights
(safetensors parsed here with json + numpy), run the network and the loss
in float64 on the float32 images, backpropagate the summed loss, and compare
l, nll_pixel, nll_image, loss, grad_l and every parameter gradient with the
case files to the README's float64 tolerance

    |got - expected| <= 1e-7 * |expected| + 1e-9 * max|expected tensor|

element by element. Also checks the Adam update, element-wise dropout and
the data-dependent init against values computed here. Also checks that parameter names, order and shapes are
exactly those of the file. The loss-only cases of <reference>/loss (edge
bins, the -7 clamp, the low-probability branch) are checked the same way.
Prints the maximum errors; exit status 0 only if
every case passes.

usage: verify_torch_peer.py [--reference DIR]
       (default: $PXC_REFERENCE_DIR, else ../shared/reference from the
        project root)
"""
import argparse
import json
import os
import struct
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import torch_pixelcnnpp as pcnn  # noqa: E402

REL, ABS = 1e-7, 1e-9


def read_safetensors(path):
    """Ordered list of (name, float32 ndarray) in the file's header order."""
    with open(path, "rb") as f:
        raw = f.read()
    (hlen,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + hlen].decode("utf-8"),
                        object_pairs_hook=lambda kv: kv)        # keep key order
    data = raw[8 + hlen:]
    out = []
    for name, meta in header:
        if name == "__metadata__":
            continue
        meta = dict(meta)
        if meta["dtype"] != "F32":
            raise ValueError("%s: tensor %s is %s, expected F32" % (path, name, meta["dtype"]))
        b, e = meta["data_offsets"]
        shape = tuple(meta["shape"])
        arr = np.frombuffer(data[b:e], dtype="<f4")
        if arr.size != int(np.prod(shape, dtype=np.int64)):
            raise ValueError("%s: tensor %s has %d values for shape %s" % (path, name, arr.size, shape))
        out.append((name, arr.reshape(shape)))
    return out


def read_bin(path, dtype, shape):
    arr = np.fromfile(path, dtype=dtype)
    if arr.size != int(np.prod(shape)):
        raise ValueError("%s: %d values, expected shape %s" % (path, arr.size, shape))
    return arr.reshape(shape)


def compare(got, exp):
    """(ok, max |err|, max |err| / max |exp|) under the float64 tolerance."""
    got = np.asarray(got, dtype=np.float64)
    exp = np.asarray(exp, dtype=np.float64)
    err = np.abs(got - exp)
    scale = float(np.max(np.abs(exp))) if exp.size else 0.0
    ok = bool(np.all(err <= REL * np.abs(exp) + ABS * scale))
    maxerr = float(np.max(err)) if err.size else 0.0
    return ok, maxerr, (maxerr / scale if scale > 0 else maxerr)


def verify_case(ref_dir, case):
    name = case["name"]
    d = os.path.join(ref_dir, "model", name)
    with open(os.path.join(d, "config.json")) as f:
        cfg = json.load(f)
    N, H, W, C = cfg["N"], cfg["H"], cfg["W"], cfg["C"]
    R, Fn, M, classes, K = cfg["nr_resnet"], cfg["nr_filters"], cfg["nr_mix"], cfg["classes"], cfg["K"]
    failures = []

    specs = pcnn.param_specs(C, R, Fn, M, classes)
    weights = read_safetensors(os.path.join(d, "weights.safetensors"))
    grads = read_safetensors(os.path.join(d, "grads.safetensors"))
    want = [(n, s) for n, s, _, _ in specs]
    have = [(n, tuple(a.shape)) for n, a in weights]
    if want != have:
        for i, (a, b) in enumerate(zip(want, have)):
            if a != b:
                failures.append("parameter %d: peer has %s %s, file has %s %s" % (i, a[0], a[1], b[0], b[1]))
                break
        if len(want) != len(have):
            failures.append("peer has %d tensors, file has %d" % (len(want), len(have)))
        return failures, {}
    if [n for n, _ in grads] != [n for n, _ in weights]:
        failures.append("grads.safetensors names differ from weights.safetensors")
        return failures, {}
    nparams = sum(a.size for _, a in weights)
    if nparams != case["params"]:
        failures.append("peer has %d parameters, manifest says %d" % (nparams, case["params"]))

    params = {n: torch.from_numpy(a.astype(np.float64)).requires_grad_(True) for n, a in weights}
    x = torch.from_numpy(read_bin(os.path.join(d, "x.bin"), "<f4", (N, H, W, C)).astype(np.float64))
    labels = None
    if classes > 0:
        labels = torch.from_numpy(read_bin(os.path.join(d, "labels.bin"), "<i4", (N,)).astype(np.int64))

    l = pcnn.forward(params, x, R, labels)
    l.retain_grad()
    nll_pixel = pcnn.mixture_nll_pixel(l, x)
    nll_image = nll_pixel.sum(dim=(1, 2))
    loss = nll_image.sum()
    loss.backward()

    errs = {}

    def check(label, got, exp):
        ok, e, r = compare(got, exp)
        errs[label] = (e, r)
        if not ok:
            failures.append("%s: max |err| %.3g (%.3g of max |expected|) over tolerance" % (label, e, r))

    check("l", l.detach().numpy(), read_bin(os.path.join(d, "l.bin"), "<f4", (N, H, W, K)))
    check("nll_pixel", nll_pixel.detach().numpy(), read_bin(os.path.join(d, "nll_pixel.bin"), "<f4", (N, H, W)))
    check("nll_image", nll_image.detach().numpy(), read_bin(os.path.join(d, "nll_image.bin"), "<f4", (N,)))
    check("loss", loss.detach().numpy().reshape(1), read_bin(os.path.join(d, "loss.bin"), "<f4", (1,)))
    check("grad_l", l.grad.numpy(), read_bin(os.path.join(d, "grad_l.bin"), "<f4", (N, H, W, K)))
    with torch.no_grad():                       # the speed option computes the same l
        l_cl = pcnn.forward(params, x, R, labels, channels_last=True)
    check("l (channels_last)", l_cl.numpy(), read_bin(os.path.join(d, "l.bin"), "<f4", (N, H, W, K)))
    # full-precision values from the manifest (not rounded to float32)
    errs["loss_vs_manifest_rel"] = (abs(loss.item() - case["loss_nats"]) / abs(case["loss_nats"]), 0.0)
    worst = ("", 0.0, 0.0)
    nbad = 0
    for n, g_exp in grads:
        g = params[n].grad
        g = np.zeros(g_exp.shape) if g is None else g.numpy()
        ok, e, r = compare(g, g_exp)
        if not ok:
            nbad += 1
            failures.append("grad %s: max |err| %.3g (%.3g of max |expected|) over tolerance" % (n, e, r))
        if r >= worst[2]:
            worst = (n, e, r)
    errs["grad (worst tensor %s)" % worst[0]] = (worst[1], worst[2])
    return failures, errs


def verify_loss_case(ref_dir, case):
    """The mixture loss alone on a loss/ case (edge bins, clamp, pdf branch)."""
    d = os.path.join(ref_dir, "loss", case["name"])
    N, H, W, C, K = case["N"], case["H"], case["W"], case["C"], case["K"]
    x = torch.from_numpy(read_bin(os.path.join(d, "x.bin"), "<f4", (N, H, W, C)).astype(np.float64))
    l = torch.from_numpy(read_bin(os.path.join(d, "l.bin"), "<f4", (N, H, W, K)).astype(np.float64))
    l.requires_grad_(True)
    nll_pixel = pcnn.mixture_nll_pixel(l, x)
    loss = nll_pixel.sum()
    loss.backward()
    failures, errs = [], {}
    for label, got, exp in (
            ("nll_pixel", nll_pixel.detach().numpy(), read_bin(os.path.join(d, "nll_pixel.bin"), "<f4", (N, H, W))),
            ("loss", loss.detach().numpy().reshape(1), read_bin(os.path.join(d, "loss.bin"), "<f4", (1,))),
            ("grad_l", l.grad.numpy(), read_bin(os.path.join(d, "grad_l.bin"), "<f4", (N, H, W, K)))):
        ok, e, r = compare(got, exp)
        errs[label] = (e, r)
        if not ok:
            failures.append("%s: max |err| %.3g (%.3g of max |expected|) over tolerance" % (label, e, r))
    errs["loss_vs_manifest_rel"] = (abs(loss.item() - case["loss_nats"]) / abs(case["loss_nats"]), 0.0)
    return failures, errs


def verify_training_pieces():
    """What the reference vectors do not cover (they use dropout 0 and no
    optimiser): the Adam update, element-wise dropout, data-dependent init.
    Expected values are computed here independently in numpy / by hand."""
    failures, errs = [], {}
    # Adam: three steps with known gradients against a numpy transcription
    # of the update (eps inside the root, lr decayed before every step).
    rng = np.random.default_rng(7)
    p0 = rng.standard_normal(5)
    gs = [rng.standard_normal(5) for _ in range(3)]
    p = torch.tensor(p0, requires_grad=True)
    opt = pcnn.Adam([p])
    for g in gs:
        p.grad = torch.tensor(g)
        opt.step()
    q, m, v, lr = p0.copy(), np.zeros(5), np.zeros(5), 1e-3
    for t, g in enumerate(gs, start=1):
        lr *= 0.999995
        m = 0.95 * m + 0.05 * g
        v = 0.9995 * v + 0.0005 * g * g
        q -= lr * (m / (1 - 0.95 ** t)) / np.sqrt(v / (1 - 0.9995 ** t) + 1e-8)
    e = float(np.max(np.abs(p.detach().numpy() - q)))
    errs["adam 3 steps vs numpy"] = (e, None)
    if e > 1e-15:
        failures.append("Adam update differs from the reference formula by %.3g" % e)
    # first step: m_hat = g, v_hat = g^2, so the step is lr*decay*g/sqrt(g^2+eps)
    p = torch.tensor([0.0, 0.0], dtype=torch.float64, requires_grad=True)
    opt = pcnn.Adam([p])
    p.grad = torch.tensor([1e-4, -3.0], dtype=torch.float64)
    opt.step()
    want = -1e-3 * 0.999995 * np.array([1e-4 / np.sqrt(1e-8 + 1e-8), -3.0 / np.sqrt(9.0 + 1e-8)])
    e = float(np.max(np.abs(p.detach().numpy() - want)))
    errs["adam first step vs hand value"] = (e, None)
    if e > 1e-18:
        failures.append("Adam first step %s, expected %s" % (p.detach().numpy(), want))
    # dropout: element-wise (not whole channels), inverted (kept values x2)
    t = torch.ones(4, 16, 8, 8, dtype=torch.float64)
    y = torch.nn.functional.dropout(t, p=0.5, training=True)
    kept = (y != 0)
    frac_mixed = float(((kept.float().mean(dim=(2, 3)) > 0) & (kept.float().mean(dim=(2, 3)) < 1)).float().mean())
    vals = set(np.unique(y.numpy()).tolist())
    if vals != {0.0, 2.0} or frac_mixed < 0.99:
        failures.append("dropout is not element-wise inverted (values %s, mixed channels %.2f)" % (vals, frac_mixed))
    # data-dependent init: on its batch, the last layer's output l has per
    # channel mean 0 and variance 1 (g, b set, then the layer recomputed)
    torch.manual_seed(3)
    specs = pcnn.param_specs(3, 1, 8, 2, 0)
    params = pcnn.init_params(specs, dtype=torch.float64)
    x = torch.rand(4, 8, 8, 3, dtype=torch.float64) * 2 - 1
    pcnn.data_dependent_init(params, specs, x, 1)
    with torch.no_grad():
        l = pcnn.forward(params, x, 1)
    mean_err = float(l.mean(dim=(0, 1, 2)).abs().max())
    var_err = float((l.var(dim=(0, 1, 2), unbiased=False) - 1).abs().max())
    errs["ddi: max |mean(l)|"] = (mean_err, None)
    errs["ddi: max |var(l) - 1|"] = (var_err, None)
    if mean_err > 1e-9 or var_err > 1e-6:
        failures.append("data-dependent init: l mean %.3g, var - 1 %.3g" % (mean_err, var_err))
    g2 = params["up.0.u.0.conv2.g"].detach()
    if not bool(torch.all(g2 != 1.0)):
        failures.append("data-dependent init left conv2.g at 1")
    return failures, errs


def report(kind, name, failures, errs):
    print("%s %s %s" % ("PASS" if not failures else "FAIL", kind, name))
    for k, (e, r) in errs.items():
        if r is None:
            print("    %-40s max |err| %.3g" % (k, e))
        elif k == "loss_vs_manifest_rel":
            print("    %-40s rel err %.3g" % ("loss vs manifest loss_nats (float64)", e))
        else:
            print("    %-40s max |err| %.3g  (%.3g of max |expected|)" % (k, e, r))
    for msg in failures:
        print("    error: " + msg)
    return not failures


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    default = os.environ.get("PXC_REFERENCE_DIR", os.path.join(root, "..", "shared", "reference"))
    if not os.path.isdir(default):
        default = "/work/shared/reference"
    ap.add_argument("--reference", default=default)
    args = ap.parse_args()
    torch.set_num_threads(2)

    manifests = {}
    for kind in ("loss", "model"):
        man_path = os.path.join(args.reference, kind, "manifest.json")
        try:
            with open(man_path) as f:
                manifests[kind] = json.load(f)
        except OSError as e:
            print("verify_torch_peer: cannot read %s: %s (set PXC_REFERENCE_DIR or --reference)" % (man_path, e))
            return 2
    all_ok = True
    print("tolerance: |err| <= %g*|expected| + %g*max|expected tensor|" % (REL, ABS))
    for case in manifests["loss"]["cases"]:
        all_ok &= report("loss", case["name"], *verify_loss_case(args.reference, case))
    for case in manifests["model"]["cases"]:
        all_ok &= report("model", case["name"], *verify_case(args.reference, case))
    all_ok &= report("training", "adam / dropout / data-dependent init", *verify_training_pieces())
    print("all cases pass" if all_ok else "verification FAILED")
    return 0 if all_ok else 1


if __name__ == "__main__":
    sys.exit(main())
