"""torch_pixelcnnpp.py — pxc's side-by-side PyTorch peer: PixelCNN++ written
directly in PyTorch (CPU), used to verify the reference vectors and as the
baseline pxc's training speed and memory are measured against.

It follows /work/shared/PIXELCNNPP.md and reference/model/README.md exactly:
weight-normalised conv / deconv / nin (norm per OUTPUT channel, deconv too),
down and down-right shifted convs and deconvs with the causal padding and
cropping, concat_elu, gated resnets with the optional `a` input and class
conditioning, the up/down U-net with its skip stacks, the discretized
logistic mixture loss (C = 1 and C = 3), element-wise inverted dropout and
the reference Adam (eps inside the square root, lr decayed every step).

The interface speaks NHWC (images [N,H,W,C], output l [N,H,W,K]) with the
parameter names and axis orders of reference/model/README.md, so weights
load straight from its safetensors files; internally activations are NCHW,
PyTorch's native convolution layout. This is not part of pxc: it is a
measuring stick and shares no code with it.
"""
import math

import torch
import torch.nn.functional as F


# ---- parameters -------------------------------------------------------------

def nr_outputs(C, nr_mix):
    """K, the channels of l: 10 per component for 3 channels, 3 for 1."""
    return (10 if C == 3 else 3) * nr_mix


def param_specs(C, R, Fn, nr_mix, classes=0):
    """The parameters in file order: list of (name, shape, kind, init_scale).

    kind is 'conv' (v [kh,kw,in,out]), 'deconv' (v [kh,kw,out,in]),
    'nin' (v [in,out]), 'g', 'b' or 'hw' ([classes, 2F])."""
    specs = []

    def wn(name, kind, vshape, nout, init_scale=1.0):
        specs.append((name + ".v", tuple(vshape), kind, init_scale))
        specs.append((name + ".g", (nout,), "g", init_scale))
        specs.append((name + ".b", (nout,), "b", init_scale))

    def cond(prefix):
        if classes > 0:
            specs.append((prefix + ".cond.hw", (classes, 2 * Fn), "hw", 1.0))

    K = nr_outputs(C, nr_mix)
    wn("init.u", "conv", (2, 3, C + 1, Fn), Fn)
    wn("init.ul_above", "conv", (1, 3, C + 1, Fn), Fn)
    wn("init.ul_left", "conv", (2, 1, C + 1, Fn), Fn)
    for s in range(3):
        for i in range(R):
            p = "up.%d.u.%d" % (s, i)
            wn(p + ".conv1", "conv", (2, 3, 2 * Fn, Fn), Fn)
            wn(p + ".conv2", "conv", (2, 3, 2 * Fn, 2 * Fn), 2 * Fn, 0.1)
            cond(p)
            p = "up.%d.ul.%d" % (s, i)
            wn(p + ".conv1", "conv", (2, 2, 2 * Fn, Fn), Fn)
            wn(p + ".nin", "nin", (2 * Fn, Fn), Fn)
            wn(p + ".conv2", "conv", (2, 2, 2 * Fn, 2 * Fn), 2 * Fn, 0.1)
            cond(p)
        if s < 2:
            wn("up.%d.u_down" % s, "conv", (2, 3, Fn, Fn), Fn)
            wn("up.%d.ul_down" % s, "conv", (2, 2, Fn, Fn), Fn)
    for s in range(3):
        for i in range(R if s == 0 else R + 1):
            p = "down.%d.u.%d" % (s, i)
            wn(p + ".conv1", "conv", (2, 3, 2 * Fn, Fn), Fn)
            wn(p + ".nin", "nin", (2 * Fn, Fn), Fn)
            wn(p + ".conv2", "conv", (2, 3, 2 * Fn, 2 * Fn), 2 * Fn, 0.1)
            cond(p)
            p = "down.%d.ul.%d" % (s, i)
            wn(p + ".conv1", "conv", (2, 2, 2 * Fn, Fn), Fn)
            wn(p + ".nin", "nin", (4 * Fn, Fn), Fn)
            wn(p + ".conv2", "conv", (2, 2, 2 * Fn, 2 * Fn), 2 * Fn, 0.1)
            cond(p)
        if s < 2:
            wn("down.%d.u_up" % s, "deconv", (2, 3, Fn, Fn), Fn)
            wn("down.%d.ul_up" % s, "deconv", (2, 2, Fn, Fn), Fn)
    wn("out", "nin", (Fn, K), K)
    return specs


def forward_macs_per_image(H, W, C, R, Fn, nr_mix):
    """Multiply-adds of the convs, deconvs and nins for one image, forward.

    A conv costs out_h*out_w*kh*kw*in*out; a stride-2 deconv costs
    in_h*in_w*kh*kw*in*out (every input pixel scatters a kh x kw patch,
    cropped parts included); a nin h*w*in*out. The class-conditioning rows
    and elementwise work are not counted."""
    K = nr_outputs(C, nr_mix)
    macs = 0

    def conv(h, w, kh, kw, cin, cout):
        return h * w * kh * kw * cin * cout

    macs += conv(H, W, 2, 3, C + 1, Fn) + conv(H, W, 1, 3, C + 1, Fn) + conv(H, W, 2, 1, C + 1, Fn)
    for s in range(3):
        h, w = H >> s, W >> s
        per_u = conv(h, w, 2, 3, 2 * Fn, Fn) + conv(h, w, 2, 3, 2 * Fn, 2 * Fn)
        per_ul = conv(h, w, 2, 2, 2 * Fn, Fn) + h * w * 2 * Fn * Fn + conv(h, w, 2, 2, 2 * Fn, 2 * Fn)
        macs += R * (per_u + per_ul)
        if s < 2:
            macs += conv(h // 2, w // 2, 2, 3, Fn, Fn) + conv(h // 2, w // 2, 2, 2, Fn, Fn)
    for s in range(3):
        h, w = H >> (2 - s), W >> (2 - s)
        n = R if s == 0 else R + 1
        per_u = conv(h, w, 2, 3, 2 * Fn, Fn) + h * w * 2 * Fn * Fn + conv(h, w, 2, 3, 2 * Fn, 2 * Fn)
        per_ul = conv(h, w, 2, 2, 2 * Fn, Fn) + h * w * 4 * Fn * Fn + conv(h, w, 2, 2, 2 * Fn, 2 * Fn)
        macs += n * (per_u + per_ul)
        if s < 2:
            macs += conv(h, w, 2, 3, Fn, Fn) + conv(h, w, 2, 2, Fn, Fn)   # deconvs, input size
    macs += H * W * Fn * K
    return macs


def init_params(specs, dtype=torch.float32, generator=None):
    """Fresh parameters: v ~ N(0, 0.05^2), g = 1, b = 0, hw ~ N(0, 0.05^2).

    Returns a dict name -> leaf tensor with requires_grad, in file order.
    Call data_dependent_init afterwards for the reference initialisation."""
    params = {}
    for name, shape, kind, _ in specs:
        if kind == "g":
            t = torch.ones(shape, dtype=dtype)
        elif kind == "b":
            t = torch.zeros(shape, dtype=dtype)
        else:
            t = torch.randn(shape, dtype=dtype, generator=generator) * 0.05
        params[name] = t.requires_grad_(True)
    return params


# ---- building blocks (NCHW inside) -----------------------------------------

class Net:
    """One PixelCNN++ forward pass over a parameter dict.

    init_mode: data-dependent weight-norm init — every layer first runs with
    g = 1, b = 0, then g, b are set in place from the output's per-channel
    mean and variance and the layer's output recomputed before the next
    layer sees it."""

    def __init__(self, params, dropout=0.0, training=False, init_mode=False, scales=None,
                 channels_last=False):
        self.p = params
        self.fmt = torch.channels_last if channels_last else torch.contiguous_format
        self.dropout = dropout
        self.training = training
        self.init_mode = init_mode
        self.scales = scales or {}

    # weight normalisation: w = g * v / ||v||, the norm per output channel
    def _wn_conv_weight(self, name):
        v = self.p[name + ".v"]                                  # [kh,kw,in,out]
        g = self.p[name + ".g"]                                  # [out]
        w = v * (g / v.square().sum(dim=(0, 1, 2)).sqrt())
        return w.permute(3, 2, 0, 1).contiguous(memory_format=self.fmt)   # [out,in,kh,kw]

    def _wn_deconv_weight(self, name):
        v = self.p[name + ".v"]                                  # [kh,kw,out,in]
        g = self.p[name + ".g"]                                  # [out]
        norm = v.square().sum(dim=(0, 1, 3)).sqrt()              # per output channel
        w = v * (g / norm)[None, None, :, None]
        return w.permute(3, 2, 0, 1).contiguous(memory_format=self.fmt)   # [in,out,kh,kw]

    def _wn_nin_weight(self, name):
        v = self.p[name + ".v"]                                  # [in,out]
        g = self.p[name + ".g"]
        w = v * (g / v.square().sum(dim=0).sqrt())
        return w.t()[:, :, None, None].contiguous(memory_format=self.fmt)  # [out,in,1,1]

    def _layer(self, name, run):
        """run() computes the layer without its bias; this adds b (after the
        data-dependent init of g and b in init mode)."""
        b = self.p[name + ".b"]
        if self.init_mode:
            with torch.no_grad():
                self.p[name + ".g"].fill_(1.0)
                b.zero_()
                y = run()
                m = y.mean(dim=(0, 2, 3))
                var = y.var(dim=(0, 2, 3), unbiased=False)
                scale = self.scales.get(name, 1.0)
                gnew = scale / torch.sqrt(var + 1e-10)
                self.p[name + ".g"].copy_(gnew)
                b.copy_(-m * gnew)
        return run() + b[None, :, None, None]

    def conv(self, x, name, kh, kw, shift, stride=1):
        """x: [N,c,h,w] -> [N,out,h/stride,w/stride], causal padding."""
        if shift == "down":
            pad = ((kw - 1) // 2, (kw - 1) // 2, kh - 1, 0)     # left, right, top, bottom
        else:
            pad = (kw - 1, 0, kh - 1, 0)
        xp = F.pad(x, pad).contiguous(memory_format=self.fmt)
        return self._layer(name, lambda: F.conv2d(xp, self._wn_conv_weight(name), stride=stride))

    def deconv(self, x, name, kh, kw, shift):
        """x: [N,c,h,w] -> [N,out,2h,2w]: stride-2 transposed VALID conv, cropped."""
        h, w = x.shape[2], x.shape[3]
        q0 = (kw - 1) // 2 if shift == "down" else 0

        def run():
            y = F.conv_transpose2d(x, self._wn_deconv_weight(name), stride=2)   # [N,out,2h+kh-2,2w+kw-2]
            return y[:, :, :2 * h, q0:q0 + 2 * w]
        return self._layer(name, run)

    def nin(self, x, name):
        return self._layer(name, lambda: F.conv2d(x, self._wn_nin_weight(name)))

    # ---- network ---------------------------------------------------------

    def gated_resnet(self, x, name, kind, a=None, labels=None):
        """x + p * sigmoid(q); kind 'u' uses down-shifted [2,3] convs, 'ul'
        down-right-shifted [2,2]."""
        kh, kw, shift = (2, 3, "down") if kind == "u" else (2, 2, "down_right")
        Fn = x.shape[1]
        c1 = self.conv(concat_elu(x), name + ".conv1", kh, kw, shift)
        if a is not None:
            c1 = c1 + self.nin(concat_elu(a), name + ".nin")
        c1 = concat_elu(c1)
        if self.training and self.dropout > 0:
            c1 = F.dropout(c1, p=self.dropout, training=True)    # element-wise, inverted
        c2 = self.conv(c1, name + ".conv2", kh, kw, shift)
        if labels is not None:
            c2 = c2 + self.p[name + ".cond.hw"][labels][:, :, None, None]
        p, q = c2[:, :Fn], c2[:, Fn:]
        return x + p * torch.sigmoid(q)

    def __call__(self, x, R, labels=None):
        """x: [N,H,W,C] in [-1,1] -> l: [N,H,W,K] (raw mixture parameters)."""
        x = x.permute(0, 3, 1, 2)
        x1 = torch.cat([x, torch.ones_like(x[:, :1])], dim=1).contiguous(memory_format=self.fmt)
        u = down_shift(self.conv(x1, "init.u", 2, 3, "down"))
        ul = (down_shift(self.conv(x1, "init.ul_above", 1, 3, "down"))
              + right_shift(self.conv(x1, "init.ul_left", 2, 1, "down_right")))
        U, L = [u], [ul]
        for s in range(3):
            for i in range(R):
                u = self.gated_resnet(u, "up.%d.u.%d" % (s, i), "u", labels=labels)
                U.append(u)
                ul = self.gated_resnet(ul, "up.%d.ul.%d" % (s, i), "ul", a=u, labels=labels)
                L.append(ul)
            if s < 2:
                u = self.conv(u, "up.%d.u_down" % s, 2, 3, "down", stride=2)
                U.append(u)
                ul = self.conv(ul, "up.%d.ul_down" % s, 2, 2, "down_right", stride=2)
                L.append(ul)
        u, ul = U.pop(), L.pop()
        for s in range(3):
            for i in range(R if s == 0 else R + 1):
                u = self.gated_resnet(u, "down.%d.u.%d" % (s, i), "u", a=U.pop(), labels=labels)
                ul = self.gated_resnet(ul, "down.%d.ul.%d" % (s, i), "ul",
                                       a=torch.cat([u, L.pop()], dim=1), labels=labels)
            if s < 2:
                u = self.deconv(u, "down.%d.u_up" % s, 2, 3, "down")
                ul = self.deconv(ul, "down.%d.ul_up" % s, 2, 2, "down_right")
        assert not U and not L, "every pushed tensor is popped exactly once"
        l = self.nin(F.elu(ul), "out")
        return l.permute(0, 2, 3, 1)


def concat_elu(t):
    return F.elu(torch.cat([t, -t], dim=1))


def down_shift(t):
    """[N,c,h,w]: row 0 zeros, row r takes row r-1."""
    return F.pad(t[:, :, :-1, :], (0, 0, 1, 0))


def right_shift(t):
    """[N,c,h,w]: column 0 zeros, column q takes column q-1."""
    return F.pad(t[:, :, :, :-1], (1, 0, 0, 0))


def init_scales(specs):
    return {name[:-2]: sc for name, _, kind, sc in specs if kind == "g"}


def forward(params, x, R, labels=None, dropout=0.0, training=False, channels_last=False):
    """l [N,H,W,K] for images x [N,H,W,C] (labels [N] int64 or None)."""
    return Net(params, dropout, training, channels_last=channels_last)(x, R, labels)


def data_dependent_init(params, specs, x, R, labels=None):
    """The reference data-dependent init on one batch x (no dropout)."""
    Net(params, 0.0, False, init_mode=True, scales=init_scales(specs))(x, R, labels)


# ---- discretized logistic mixture ------------------------------------------

def _log_prob_channel(xc, mean, log_scale):
    """log P of sub-pixel xc [..,1] under each component (mean, log_scale [..,M])."""
    s = torch.clamp(log_scale, min=-7.0)
    cen = xc - mean
    inv = torch.exp(-s)
    plus = inv * (cen + 1.0 / 255.0)
    minus = inv * (cen - 1.0 / 255.0)
    mid = inv * cen
    log_cdf_plus = plus - F.softplus(plus)                   # k = 0
    log_one_minus_cdf_min = -F.softplus(minus)               # k = 255
    d = torch.sigmoid(plus) - torch.sigmoid(minus)
    log_d = torch.log(torch.clamp(d, min=1e-12))
    log_pdf_mid = mid - s - 2.0 * F.softplus(mid) - math.log(127.5)
    inner = torch.where(d > 1e-5, log_d, log_pdf_mid)
    return torch.where(xc < -0.999, log_cdf_plus,
                       torch.where(xc > 0.999, log_one_minus_cdf_min, inner))


def mixture_nll_pixel(l, x):
    """−log p per pixel [N,H,W] for l [N,H,W,K] and x [N,H,W,C], C = 1 or 3."""
    C = x.shape[-1]
    if C == 3:
        M = l.shape[-1] // 10
        logits = l[..., :M]
        rest = l[..., M:].reshape(*l.shape[:-1], 3, 3 * M)   # [..,colour,3M]
        means = rest[..., :M]
        log_scales = rest[..., M:2 * M]
        coeffs = torch.tanh(rest[..., 2 * M:3 * M])
        xr, xg, xb = x[..., 0:1], x[..., 1:2], x[..., 2:3]
        mr = means[..., 0, :]
        mg = means[..., 1, :] + coeffs[..., 0, :] * xr
        mb = means[..., 2, :] + coeffs[..., 1, :] * xr + coeffs[..., 2, :] * xg
        lp = (_log_prob_channel(xr, mr, log_scales[..., 0, :])
              + _log_prob_channel(xg, mg, log_scales[..., 1, :])
              + _log_prob_channel(xb, mb, log_scales[..., 2, :]))
    elif C == 1:
        M = l.shape[-1] // 3
        logits = l[..., :M]
        lp = _log_prob_channel(x, l[..., M:2 * M], l[..., 2 * M:3 * M])
    else:
        raise ValueError("mixture loss needs 1 or 3 channels, got %d" % C)
    return -torch.logsumexp(torch.log_softmax(logits, dim=-1) + lp, dim=-1)


# ---- optimiser --------------------------------------------------------------

class Adam:
    """The reference Adam: step = m_hat / sqrt(v_hat + eps) (eps inside the
    root), beta1 0.95, beta2 0.9995; lr multiplied by `decay` before every
    step (step t uses lr0 * decay^t)."""

    def __init__(self, params, lr=1e-3, decay=0.999995, b1=0.95, b2=0.9995, eps=1e-8):
        self.params = list(params)
        self.lr, self.decay, self.b1, self.b2, self.eps = lr, decay, b1, b2, eps
        self.m = [torch.zeros_like(p) for p in self.params]
        self.v = [torch.zeros_like(p) for p in self.params]
        self.t = 0

    @torch.no_grad()
    def step(self):
        self.t += 1
        self.lr *= self.decay
        grads = [p.grad for p in self.params]
        torch._foreach_mul_(self.m, self.b1)
        torch._foreach_add_(self.m, grads, alpha=1.0 - self.b1)
        torch._foreach_mul_(self.v, self.b2)
        torch._foreach_addcmul_(self.v, grads, grads, value=1.0 - self.b2)
        bc1 = 1.0 - self.b1 ** self.t
        bc2 = 1.0 - self.b2 ** self.t
        # p -= lr * (m / bc1) / sqrt(v / bc2 + eps)
        denom = torch._foreach_div(self.v, bc2)
        torch._foreach_add_(denom, self.eps)
        torch._foreach_sqrt_(denom)
        torch._foreach_addcdiv_(self.params, self.m, denom, value=-self.lr / bc1)
