#!/usr/bin/env python3
"""make_fixtures.py: PyTorch fixtures that the C reference (airbench/reference.c) is checked
against by tests/test_reference.c.

Run from anywhere (paths are relative to this file's repository):
    python3 dev/make_fixtures.py [net|whiten|muon|augment|jitter|bn_group|selective_tta|silu|filter ...]
    (default: all)

It builds the airbench network (../shared/spec/recipe.md) functionally in PyTorch on the CPU,
at tiny widths, and writes small binary files under tests/fixtures/:

  net_d2.bin   depth 2 (ConvGroup of two convs, the 94/95 network), widths (8, 16, 16),
               airbench94's optimizer numbers at batch 8
  net_d3.bin   depth 3 (three convs and a residual, the 96 network), widths (8, 12, 16),
               airbench96's optimizer numbers at batch 8
  muon_d2.bin  one airbench94-muon optimizer step (steps 0 and 30 of 200) from a given state
               and given gradients, and Newton-Schulz outputs in fp32 and bf16
  whiten.bin   40 correlated normalized images and their 24 whitening filters
  augment.bin  synthetic uint8 images and the training batches the loader must produce
  augment_jitter.bin  the same with brightness and contrast jitter (the 2025 record's
               amplitudes, with and without cutout, and wide ones)
  bn_group_d2.bin  one training step whose BatchNorm works per group of 4 of the 8 images:
               as two separate workers, summed loss, the first worker's running stats
  selective_tta.bin  eval logits where only the least sure images get TTA (uniform and
               airbench view weights)
  silu_d2.bin  net_d2.bin's network and steps with SiLU after the ConvGroups' BNs (the 2025
               record recipe's activation; the whitening conv's stays GELU)
  filter.bin   data filtering (airbench96_faster.py): a depth-2 proxy's per-example losses
               on a batch of 16, the 8 it keeps (the highest), its step on their summed
               loss (backward through BN over all 16), the depth-3 network's step on the 8
               alone, and loader rows of a continuous batch that spans two data epochs

Precision: every tensor the C code is given (parameters, inputs, gradients, state) is first
rounded to float32, then all of the math here runs in float64 on those values; results are
stored as float32. Exceptions, on purpose: the Newton-Schulz fixtures run in float32 and in
bfloat16 (the recipe's precision), and the augmentation fixtures do the normalization and
the jitter in float32 exactly as data/augment.h does.

File format (little-endian): "ABFX", uint32 version (1), uint32 tensor count; then per tensor:
uint32 name length, the name's bytes (no NUL), uint32 ndim, int32 dims[ndim], float32 data
(product of dims values; ndim 0 is a scalar). Integers (labels, seeds, sizes) are stored as
float32 (all are exactly representable).

Deterministic: fixed torch seeds, no threads-dependent reductions that matter at this size.
PyTorch is a development tool here only; nothing in the product depends on it.
"""
import math
import os
import struct
import sys

import numpy as np
import torch
import torch.nn.functional as F

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT_DIR = os.path.join(ROOT, "tests", "fixtures")
MAX_FILE_BYTES = 1 << 20

F64 = torch.float64
F32 = torch.float32

WHITEN_WIDTH = 24
N_CLASSES = 10

# recipe.md / airbench/recipe.h numbers used here.
RECIPES = {
    # name: lr_h, wd_h, momentum, bias_scaler, bn_keep, logit_scale, smoothing, bn_eps
    "airbench94": dict(lr_h=11.5, wd_h=0.0153, momentum=0.85, bias_scaler=64.0, keep=0.6,
                       scale=1.0 / 9.0, smoothing=0.2, eps=1e-12, translate=2, cutout=0),
    "airbench96": dict(lr_h=9.0, wd_h=0.012, momentum=0.85, bias_scaler=64.0, keep=0.9,
                       scale=1.0 / 9.0, smoothing=0.2, eps=1e-12, translate=4, cutout=12),
}
MUON = dict(lr=0.24, momentum=0.6, ns_steps=3, sgd_momentum=0.85, bias_lr=0.053,
            head_lr=0.67, wd=2e-6 * 2000)
NS_COEFFS = (3.4445, -4.7750, 2.0315)
NS_EPS = 1e-7
WHITEN_EPS = 5e-4
# recipe.h's activation choices (net.h's Activation order): the ConvGroups' activation.
ACTIVATIONS = {"gelu": F.gelu, "silu": F.silu}


# ---------------------------------------------------------------------------------------
# the file format

class FixtureWriter:
    def __init__(self, name):
        self.name = name
        self.tensors = []
        self.names = set()

    def add(self, name, value):
        if name in self.names:
            raise ValueError(f"{self.name}: duplicate tensor {name}")
        if isinstance(value, torch.Tensor):
            array = value.detach().to(torch.float64).cpu().numpy()
        else:
            array = np.asarray(value, dtype=np.float64)
        self.names.add(name)
        self.tensors.append((name, array.astype("<f4")))

    def write(self):
        os.makedirs(OUT_DIR, exist_ok=True)
        parts = [b"ABFX", struct.pack("<II", 1, len(self.tensors))]
        for name, array in self.tensors:
            encoded = name.encode("ascii")
            parts.append(struct.pack("<I", len(encoded)))
            parts.append(encoded)
            parts.append(struct.pack("<I", array.ndim))
            parts.append(struct.pack(f"<{array.ndim}i", *array.shape))
            parts.append(np.ascontiguousarray(array).tobytes())
        data = b"".join(parts)
        if len(data) > MAX_FILE_BYTES:
            raise RuntimeError(f"{self.name} would be {len(data)} bytes, over the limit")
        path = os.path.join(OUT_DIR, self.name)
        with open(path, "wb") as f:
            f.write(data)
        print(f"wrote tests/fixtures/{self.name}: {len(self.tensors)} tensors, {len(data)} bytes")


def f32(t):
    """Round to float32 and come back to float64: the value the C code sees."""
    return t.to(F32).to(F64)


def rel_err(a, b):
    return float((a - b).norm() / b.norm())


# ---------------------------------------------------------------------------------------
# the network (net.h order and PyTorch layouts)

def tensor_names(depth):
    names = ["whiten_w", "whiten_b"]
    names += [f"conv.{g}.{j}" for g in range(3) for j in range(depth)]
    names += ["head"]
    names += [f"bn.{g}.{j}" for g in range(3) for j in range(depth)]
    return names


def conv_in(widths, g, j):
    if j > 0:
        return widths[g]
    return WHITEN_WIDTH if g == 0 else widths[g - 1]


def tensor_shape(name, widths, depth):
    if name == "whiten_w":
        return (WHITEN_WIDTH, 3, 2, 2)
    if name == "whiten_b":
        return (WHITEN_WIDTH,)
    if name == "head":
        return (N_CLASSES, widths[2])
    kind, g, j = name.split(".")
    g, j = int(g), int(j)
    if kind == "conv":
        return (widths[g], conv_in(widths, g, j), 3, 3)
    return (widths[g],)


def running_names(depth):
    return [f"{g}.{j}" for g in range(3) for j in range(depth)]


def random_params(gen, widths, depth):
    """Random (not net.h) initial parameters, rounded to float32: uniform(+-1/sqrt(fan_in))
    convs and head with no Dirac part (so that every weight matters in the forward pass),
    a random whitening weight, and small random biases so that every bias path is exercised."""
    params = {}
    for name in tensor_names(depth):
        shape = tensor_shape(name, widths, depth)
        u = torch.rand(shape, generator=gen, dtype=F64) * 2 - 1
        if name == "whiten_w":
            value = torch.randn(shape, generator=gen, dtype=F64) * 0.5
        elif name == "whiten_b":
            value = u * 0.2
        elif name == "head":
            value = u / math.sqrt(widths[2])
        elif name.startswith("conv"):
            value = u / math.sqrt(shape[1] * 9)
        else:
            value = u * 0.2
        params[name] = f32(value)
    return params


class Gaps:
    """Smallest top-1 minus top-2 gap of every max-pool site (site = the pool's position in the
    forward pass) over all forward passes seen. Where a gap is within float32 rounding, the C
    code (fp32) may pick the other element, and its gradients would then differ from these
    float64 ones by far more than rounding; the seed search below avoids such near-ties."""

    def __init__(self):
        self.smallest = {}
        self.site = 0

    def start(self):
        self.site = 0

    def see(self, x, k):
        n, c, h, w = x.shape
        x = x[:, :, : h // k * k, : w // k * k].detach()
        windows = x.reshape(n, c, h // k, k, w // k, k).permute(0, 1, 2, 4, 3, 5).reshape(-1, k * k)
        top = windows.topk(2, dim=1).values
        gap = float((top[:, 0] - top[:, 1]).min())
        self.smallest[self.site] = min(self.smallest.get(self.site, float("inf")), gap)
        self.site += 1


class PoolInputs:
    """Records the inputs of every max-pool site of one forward pass."""

    def __init__(self):
        self.inputs = []

    def start(self):
        pass

    def see(self, x, k):
        self.inputs.append(x.detach().to(F64))


def fp32_pool_errors(params, running, x, cfg):
    """Largest |fp32 - fp64| difference of each max-pool site's input in a training forward:
    the size of the rounding the C code's argmax decisions are exposed to."""
    records = []
    for dtype in (F64, F32):
        p = {k: v.detach().to(dtype) for k, v in params.items()}
        r = {k: v.clone().to(dtype) for k, v in running.items()}
        rec = PoolInputs()
        forward(p, r, x.to(dtype), True, cfg, rec)
        records.append(rec.inputs)
    return [float((a - b).abs().max()) for a, b in zip(*records)]


def forward(params, running, x, train, cfg, gaps=None):
    """The airbench network. running: dict "mean.g.j"/"var.g.j" -> tensor, updated in place
    in training mode with PyTorch's BatchNorm semantics (momentum = 1 - keep, unbiased
    variance for the running estimate, biased for normalization). cfg["activation"] (a key
    of ACTIVATIONS) follows each BN; the whitening conv's activation is always GELU."""
    depth, keep, eps = cfg["depth"], cfg["keep"], cfg["eps"]
    act = ACTIVATIONS[cfg["activation"]]

    if gaps is not None:
        gaps.start()

    def pool(h, k):
        if gaps is not None:
            gaps.see(h, k)
        return F.max_pool2d(h, k)

    def bn(h, g, j):
        return F.batch_norm(h, running[f"mean.{g}.{j}"], running[f"var.{g}.{j}"], weight=None,
                            bias=params[f"bn.{g}.{j}"], training=train, momentum=1 - keep, eps=eps)

    def conv(h, g, j):
        return F.conv2d(h, params[f"conv.{g}.{j}"], padding=1)

    h = F.gelu(F.conv2d(x, params["whiten_w"], params["whiten_b"]))  # exact (erf) GELU
    for g in range(3):
        h = act(bn(pool(conv(h, g, 0), 2), g, 0))
        if depth == 2:
            h = act(bn(conv(h, g, 1), g, 1))
        else:
            x0 = h
            h = act(bn(conv(h, g, 1), g, 1))
            h = act(bn(conv(h, g, 2), g, 2) + x0)
    h = pool(h, 3).flatten(1)
    return (h @ params["head"].T) * cfg["scale"]


def loss_fn(logits, labels, smoothing):
    return F.cross_entropy(logits, labels, label_smoothing=smoothing, reduction="sum")


def flip(x):
    return torch.flip(x, dims=[-1])


def tta_logits(params, running, x, level, cfg, gaps):
    def f(v):
        return forward(params, running, v, False, cfg, gaps)

    def mirror(v):
        return 0.5 * f(v) + 0.5 * f(flip(v))

    if level == 0:
        return f(x)
    if level == 1:
        return mirror(x)
    padded = F.pad(x, (1, 1, 1, 1), mode="reflect")
    s1 = padded[:, :, 0:32, 0:32]
    s2 = padded[:, :, 2:34, 2:34]
    return 0.5 * mirror(x) + 0.25 * mirror(s1) + 0.25 * mirror(s2)


def sgd_numbers(recipe, batch):
    """recipe.h's decoupled -> PyTorch values."""
    k = 1024.0 * (1.0 + 1.0 / (1.0 - recipe["momentum"]))
    lr = recipe["lr_h"] / k
    wd = recipe["wd_h"] * batch / k
    lr_bn = lr * recipe["bias_scaler"]
    return lr, wd, lr_bn


# ---------------------------------------------------------------------------------------
# a) .. f): the training steps, lookahead and TTA of one network

# Required max-pool gap in the training forward passes, in multiples of the largest fp32
# rounding error seen at that pool's input. (A flipped argmax in an eval-mode pass changes the
# logits only by the gap itself, so the TTA passes need no margin; in a training pass it
# reroutes a whole gradient entry.)
POOL_MARGIN = 10.0


def make_net_fixture(file_name, recipe_name, widths, depth, batch, tta_batch, seed, activation):
    """One attempt with one seed: returns the writer (not yet written), the worst ratio of a
    max-pool gap to the fp32 rounding at its site, and a summary line."""
    recipe = RECIPES[recipe_name]
    cfg = dict(depth=depth, keep=recipe["keep"], eps=recipe["eps"], scale=recipe["scale"],
               activation=activation)
    smoothing = recipe["smoothing"]
    gen = torch.Generator().manual_seed(seed)
    w = FixtureWriter(file_name)
    names = tensor_names(depth)
    rnames = running_names(depth)
    lr, wd, lr_bn = sgd_numbers(recipe, batch)
    s1, s2, lookahead = 0.6, 0.9, 0.3

    # a) config, initial state
    w.add("config.widths", widths)
    w.add("config.depth", depth)
    w.add("config.batch", batch)
    w.add("config.keep", cfg["keep"])
    w.add("config.scale", cfg["scale"])
    w.add("config.smoothing", smoothing)
    w.add("config.bn_eps", cfg["eps"])
    w.add("config.lr_h", recipe["lr_h"])
    w.add("config.wd_h", recipe["wd_h"])
    w.add("config.momentum", recipe["momentum"])
    w.add("config.bias_scaler", recipe["bias_scaler"])
    w.add("config.lr", lr)
    w.add("config.wd", wd)
    w.add("config.lr_bn", lr_bn)
    w.add("config.s1", s1)
    w.add("config.s2", s2)
    w.add("config.lookahead_decay", lookahead)
    w.add("config.recipe96", 1 if recipe_name == "airbench96" else 0)
    if activation != "gelu":  # absent means gelu: the GELU fixtures' files stay as they were
        w.add("config.activation", list(ACTIVATIONS).index(activation))

    init = random_params(gen, widths, depth)
    running = {}
    for r in rnames:
        g = int(r.split(".")[0])
        running[f"mean.{r}"] = torch.zeros(widths[g], dtype=F64)
        running[f"var.{r}"] = torch.ones(widths[g], dtype=F64)
    for name in names:
        w.add(f"param.{name}", init[name])
    for r in rnames:
        w.add(f"running_mean.{r}", running[f"mean.{r}"])
        w.add(f"running_var.{r}", running[f"var.{r}"])
    init_running = {k: v.clone() for k, v in running.items()}

    params = {name: init[name].clone().requires_grad_(name != "whiten_w") for name in names}
    other = [params[n] for n in names if n not in ("whiten_w",) and not n.startswith("bn.")]
    bn_biases = [params[n] for n in names if n.startswith("bn.")]
    opt = torch.optim.SGD([dict(params=bn_biases, lr=lr_bn, weight_decay=wd / lr_bn),
                           dict(params=other, lr=lr, weight_decay=wd / lr)],
                          momentum=recipe["momentum"], nesterov=True)
    base_lrs = [lr_bn, lr]
    gaps = Gaps()

    def dump_state(prefix):
        for name in names:
            w.add(f"{prefix}.param.{name}", params[name])
        for r in rnames:
            w.add(f"{prefix}.running_mean.{r}", running[f"mean.{r}"])
            w.add(f"{prefix}.running_var.{r}", running[f"var.{r}"])

    pool_errors = []

    def train_step(step_name, multiplier, whiten_bias):
        x = f32(torch.randn((batch, 3, 32, 32), generator=gen, dtype=F64))
        labels = torch.randint(0, N_CLASSES, (batch,), generator=gen)
        if not pool_errors:
            pool_errors.extend(fp32_pool_errors(params, running, x, cfg))
        params["whiten_b"].requires_grad_(whiten_bias)
        opt.zero_grad(set_to_none=True)
        logits = forward(params, running, x, True, cfg, gaps)
        loss = loss_fn(logits, labels, smoothing)
        loss.backward()
        w.add(f"{step_name}.x", x)
        w.add(f"{step_name}.labels", labels)
        w.add(f"{step_name}.multiplier", multiplier)
        w.add(f"{step_name}.whiten_bias_trainable", int(whiten_bias))
        w.add(f"{step_name}.logits", logits)
        w.add(f"{step_name}.loss", loss)
        w.add(f"{step_name}.n_correct", int((logits.argmax(1) == labels).sum()))
        for name in names:
            if params[name].grad is not None:
                w.add(f"{step_name}.grad.{name}", params[name].grad)
        # running stats after the forward (before the optimizer step, which leaves them alone)
        for r in rnames:
            w.add(f"{step_name}.running_mean.{r}", running[f"mean.{r}"])
            w.add(f"{step_name}.running_var.{r}", running[f"var.{r}"])
        for group, base in zip(opt.param_groups, base_lrs):
            group["lr"] = base * multiplier
        with torch.no_grad():
            opt.step()
        for name in names:
            w.add(f"{step_name}.after.param.{name}", params[name])
            buf = opt.state[params[name]].get("momentum_buffer") if params[name] in opt.state else None
            if buf is not None:
                w.add(f"{step_name}.after.momentum.{name}", buf)
        return float(loss.detach())

    # b), c) step 1: whitening bias trainable
    loss1 = train_step("step1", s1, True)
    # d) step 2: whitening bias frozen
    loss2 = train_step("step2", s2, False)

    ratio = min(gaps.smallest[site] / pool_errors[site] for site in gaps.smallest)
    if ratio < POOL_MARGIN:
        return None, ratio, ""

    # e) lookahead from the initial state
    with torch.no_grad():
        for name in names:
            ema = lookahead * init[name] + (1 - lookahead) * params[name]
            params[name].copy_(ema)
        for key in running:
            running[key].copy_(lookahead * init_running[key] + (1 - lookahead) * running[key])
    dump_state("lookahead")

    # f) TTA in eval mode
    x3 = f32(torch.randn((tta_batch, 3, 32, 32), generator=gen, dtype=F64))
    w.add("tta.x", x3)
    with torch.no_grad():
        for level in range(3):
            w.add(f"tta.logits.{level}", tta_logits(params, running, x3, level, cfg, None))
    gap_text = ", ".join(f"{gaps.smallest[site]:.2g}/{pool_errors[site]:.2g}" for site in sorted(gaps.smallest))
    summary = (f"  {recipe_name} numbers, {activation}, widths {widths}, depth {depth}, batch {batch}, "
               f"seed {seed}: "
               f"loss step1 {loss1:.6f}, step2 {loss2:.6f}; lr {lr:.6g}, wd {wd:.6g}, lr_bn {lr_bn:.6g}\n"
               f"  smallest max-pool gap / fp32 rounding per site: {gap_text}")
    return w, ratio, summary


def search_net_fixture(file_name, recipe_name, widths, depth, batch, tta_batch, first_seed, activation="gelu"):
    """The first seed from first_seed on whose max-pool decisions are all clear of fp32
    rounding by POOL_MARGIN (deterministic, so the files are reproducible)."""
    for seed in range(first_seed, first_seed + 500):
        w, ratio, summary = make_net_fixture(file_name, recipe_name, widths, depth, batch, tta_batch, seed,
                                             activation)
        if ratio >= POOL_MARGIN:
            w.write()
            print(summary)
            print(f"  (seed search: {seed - first_seed + 1} tries; worst gap = {ratio:.1f} x rounding)")
            return
    raise RuntimeError(f"{file_name}: no seed with clear max-pool decisions")


# ---------------------------------------------------------------------------------------
# g) whitening

def make_whiten_fixture(seed):
    gen = torch.Generator().manual_seed(seed)
    n = 40
    # a separable AR(1) field (lag-1 correlation 0.7 down, 0.2 across, so that no two
    # patch directions share an eigenvalue), channels mixed, plus a little white noise
    pad, rho_y, rho_x = 16, 0.7, 0.2
    noise = torch.randn((n, 3, 32 + pad, 32 + pad), generator=gen, dtype=F64)
    field = noise.clone()
    for t in range(1, 32 + pad):
        field[:, :, t, :] = rho_y * field[:, :, t - 1, :] + math.sqrt(1 - rho_y ** 2) * noise[:, :, t, :]
    rows = field.clone()
    for t in range(1, 32 + pad):
        field[:, :, :, t] = rho_x * field[:, :, :, t - 1] + math.sqrt(1 - rho_x ** 2) * rows[:, :, :, t]
    field = field[:, :, pad:, pad:]
    mix = torch.tensor([[1.0, 0.3, 0.1], [0.2, 1.0, 0.4], [0.1, 0.2, 1.0]], dtype=F64)
    images = torch.einsum("dc,nchw->ndhw", mix, field)
    images = images + 0.2 * torch.randn((n, 3, 32, 32), generator=gen, dtype=F64)
    images = (images - images.mean(dim=(0, 2, 3), keepdim=True)) / images.std(dim=(0, 2, 3), keepdim=True)
    images = f32(images)
    # every 2x2 patch as a 12-vector in (channel, row, col) order
    patches = images.unfold(2, 2, 1).unfold(3, 2, 1)           # n, 3, 31, 31, 2, 2
    patches = patches.permute(0, 2, 3, 1, 4, 5).reshape(-1, 12)
    cov = patches.T @ patches / patches.shape[0]
    eigvals, eigvecs = torch.linalg.eigh(cov)                   # ascending, vectors in columns
    eigvals = eigvals.flip(0)
    eigvecs = eigvecs.T.flip(0)                                 # row k: k-th largest
    filters = eigvecs / torch.sqrt(eigvals + WHITEN_EPS)[:, None]
    weights = torch.cat([filters, -filters]).reshape(WHITEN_WIDTH, 3, 2, 2)
    gaps = eigvals[:-1] - eigvals[1:]
    w = FixtureWriter("whiten.bin")
    w.add("images", images)
    w.add("eps", WHITEN_EPS)
    w.add("eigenvalues", eigvals)
    w.add("whiten_w", weights)
    w.write()
    print(f"  eigenvalues {eigvals[0]:.4g} .. {eigvals[-1]:.4g}, "
          f"smallest gap between neighbours {float(gaps.min()):.3g}")


# ---------------------------------------------------------------------------------------
# h) Muon

def newton_schulz(g, steps, dtype):
    """recipe.md's Newton-Schulz orthogonalization, all of it in dtype."""
    a, b, c = NS_COEFFS
    x = g.to(dtype)
    x = x / (x.norm() + NS_EPS)
    transpose = g.shape[0] > g.shape[1]
    if transpose:
        x = x.T
    for _ in range(steps):
        A = x @ x.T
        B = b * A + c * A @ A
        x = a * x + B @ x
    if transpose:
        x = x.T
    return x


def make_muon_fixture(seed):
    widths, depth = (8, 16, 16), 2
    gen = torch.Generator().manual_seed(seed)
    names = tensor_names(depth)
    w = FixtureWriter("muon_d2.bin")
    w.add("config.widths", widths)
    w.add("config.depth", depth)
    w.add("config.total_steps", 200)
    w.add("config.whiten_bias_steps", 75)
    w.add("config.muon_lr", MUON["lr"])
    w.add("config.muon_momentum", MUON["momentum"])
    w.add("config.sgd_momentum", MUON["sgd_momentum"])
    w.add("config.bias_lr", MUON["bias_lr"])
    w.add("config.head_lr", MUON["head_lr"])
    w.add("config.wd", MUON["wd"])

    params = random_params(gen, widths, depth)
    momentum, grads = {}, {}
    for name in names:
        shape = params[name].shape
        if name == "whiten_w":
            momentum[name] = torch.zeros(shape, dtype=F64)
            grads[name] = torch.zeros(shape, dtype=F64)
            continue
        momentum[name] = f32(torch.randn(shape, generator=gen, dtype=F64) * 0.05)
        grads[name] = f32(torch.randn(shape, generator=gen, dtype=F64) * 0.1)
    for name in names:
        w.add(f"param.{name}", params[name])
        w.add(f"momentum.{name}", momentum[name])
        w.add(f"grad.{name}", grads[name])

    ns_cases = {}
    for step in (0, 30):
        mult = 1.0 - step / 200
        wmult = 1.0 - step / 75
        p = {k: v.clone() for k, v in params.items()}
        m = {k: v.clone() for k, v in momentum.items()}
        for name in names:
            if name == "whiten_w":
                continue
            g = grads[name]
            if name.startswith("conv"):
                m[name] = MUON["momentum"] * m[name] + g
                geff = g + MUON["momentum"] * m[name]
                c_out = p[name].shape[0]
                p[name] = p[name] * (math.sqrt(c_out) / p[name].norm())
                g2 = geff.reshape(c_out, -1)
                update = newton_schulz(g2.to(F32), MUON["ns_steps"], F32).to(F64)
                p[name] = p[name] - MUON["lr"] * mult * update.reshape(p[name].shape)
                if step == 0 and name == "conv.1.0":
                    ns_cases["a"] = g2
            else:
                if name == "whiten_b":
                    base, lr = MUON["bias_lr"], MUON["bias_lr"] * wmult
                elif name == "head":
                    base, lr = MUON["head_lr"], MUON["head_lr"] * mult
                else:
                    base, lr = MUON["bias_lr"], MUON["bias_lr"] * mult
                d = g + (MUON["wd"] / base) * p[name]
                m[name] = MUON["sgd_momentum"] * m[name] + d
                d = d + MUON["sgd_momentum"] * m[name]
                p[name] = p[name] - lr * d
        for name in names:
            w.add(f"step{step}.param.{name}", p[name])
            w.add(f"step{step}.momentum.{name}", m[name])

    # Newton-Schulz alone: a conv's Nesterov gradient (16 x 72, wide) and a tall random
    # matrix (30 x 7, the transposed path), in fp32 and in bf16
    ns_cases["b"] = f32(torch.randn((30, 7), generator=gen, dtype=F64))
    for key, g in ns_cases.items():
        g32 = g.to(F32)
        out32 = newton_schulz(g32, MUON["ns_steps"], F32)
        out16 = newton_schulz(g32, MUON["ns_steps"], torch.bfloat16)
        out64 = newton_schulz(g32.to(F64), MUON["ns_steps"], F64)
        w.add(f"ns.{key}.input", g32)
        w.add(f"ns.{key}.fp32", out32)
        w.add(f"ns.{key}.bf16", out16.to(F32))
        print(f"  NS {key} {tuple(g.shape)}: fp32 vs fp64 {rel_err(out32.to(F64), out64):.2e}, "
              f"bf16 vs fp64 {rel_err(out16.to(F64), out64):.2e}")
    w.write()


# ---------------------------------------------------------------------------------------
# i) augmentation: kernels/rng.h and data/augment.h in Python

M32 = (1 << 32) - 1
M64 = (1 << 64) - 1
STREAM_FLIP, STREAM_TRANSLATE, STREAM_TRANSLATE_ORDER, STREAM_CUTOUT, STREAM_SHUFFLE = 2, 3, 4, 5, 6
STREAM_BRIGHTNESS, STREAM_CONTRAST = 7, 8
# the 2025 record's jitter amplitudes (hiverge/cifar10-speedrun)
RECORD_JITTER = (0.1399, 0.1308)


def rng_mix64(z):
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & M64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & M64
    return z ^ (z >> 31)


def rng_u32(seed, stream, a, b):
    key = rng_mix64((seed ^ ((0x9E3779B97F4A7C15 * ((stream + 1) & M32)) & M64)) & M64)
    counter = ((a & M32) << 32) | (b & M32)
    return rng_mix64(key ^ rng_mix64(counter)) >> 32


def rng_below(bits, n):
    return (bits * n) >> 32


def rng_unit_pm(bits):
    """rng.h's uniform float32 in [-1, 1): k / 2^24 and 2x - 1, both exact."""
    x = np.float32(bits >> 8) * np.float32(1.0 / 16777216.0)
    return x + x - np.float32(1.0)


def rng_permute(seed, stream, a, i, n):
    half_bits = 1
    while (1 << (2 * half_bits)) < n:
        half_bits += 1
    half_mask = (1 << half_bits) - 1
    x = i
    while True:
        left, right = x >> half_bits, x & half_mask
        for rnd in range(6):
            f = rng_u32(seed, stream, a, ((rnd << 24) | right) & M32) & half_mask
            left, right = right, left ^ f
        x = (left << half_bits) | right
        if x < n:
            return x


def aug_flip(seed, epoch, image):
    return (rng_u32(seed, STREAM_FLIP, 0, image) & 1) ^ (epoch & 1)


def aug_translate(seed, derandomized, max_shift, epoch, image):
    side = 2 * max_shift + 1
    n_offsets = side * side
    if derandomized:
        k = rng_permute(seed, STREAM_TRANSLATE_ORDER, image, epoch % n_offsets, n_offsets)
    else:
        k = rng_below(rng_u32(seed, STREAM_TRANSLATE, epoch, image), n_offsets)
    return k // side - max_shift, k % side - max_shift


def aug_cutout(seed, size, epoch, image):
    side = 32 - size + 1
    k = rng_below(rng_u32(seed, STREAM_CUTOUT, epoch, image), side * side)
    return k // side, k % side


def aug_jitter(seed, max_brightness, max_contrast, epoch, image):
    """(b, c) as float32: b = fl(s B), c = fl(1 + fl(s' C)), each operation rounded on its
    own (numpy float32 scalars); an amplitude of 0 gives b = 0, c = 1 without a draw."""
    b, c = np.float32(0.0), np.float32(1.0)
    if max_brightness > 0:
        b = rng_unit_pm(rng_u32(seed, STREAM_BRIGHTNESS, epoch, image)) * np.float32(max_brightness)
    if max_contrast > 0:
        c = np.float32(1.0) + rng_unit_pm(rng_u32(seed, STREAM_CONTRAST, epoch, image)) * np.float32(max_contrast)
    return b, c


def aug_shuffle(seed, epoch, slot, n_train):
    return rng_permute(seed, STREAM_SHUFFLE, epoch, slot, n_train)


def normalize_u8(images):
    """aug_normalize in float32: (x / 255 - mean) / std, each operation rounded to float32."""
    mean = torch.tensor([0.4914, 0.4822, 0.4465], dtype=F32).view(1, 3, 1, 1)
    std = torch.tensor([0.2470, 0.2435, 0.2616], dtype=F32).view(1, 3, 1, 1)
    x = images.to(F32) / torch.tensor(255.0, dtype=F32)
    return (x - mean) / std


def expected_batch(images_u8, labels, seed, epoch, batch_size, batch_index, translate, cutout,
                   derandomized, jitter=(0.0, 0.0)):
    """The loader's batch: normalize, translate, flip, jitter (x + b) * c in float32, cutout.
    info per image: (image, flip, dy, dx, cutout y0, x0, b, c)."""
    n = images_u8.shape[0]
    positions = [epoch * n + slot for slot in range(batch_index * batch_size, (batch_index + 1) * batch_size)]
    return expected_examples(images_u8, labels, seed, positions, translate, cutout, derandomized, jitter)


def expected_examples(images_u8, labels, seed, positions, translate, cutout, derandomized, jitter=(0.0, 0.0)):
    """The loader's rows for the given positions p of the stream of shuffled epochs: data epoch
    p // n, slot p % n (augment.h's aug_stream_image); each augmented as expected_batch says."""
    n = images_u8.shape[0]
    out, out_labels, info = [], [], []
    for position in positions:
        epoch, slot = position // n, position % n
        image = aug_shuffle(seed, epoch, slot, n)
        fl = aug_flip(seed, epoch, image)
        dy, dx = aug_translate(seed, derandomized, translate, epoch, image)
        view = normalize_u8(images_u8[image: image + 1])
        if translate > 0:
            padded = F.pad(view, (translate,) * 4, mode="reflect")
            view = padded[:, :, translate + dy: translate + dy + 32, translate + dx: translate + dx + 32]
        if fl:
            view = flip(view)
        view = view.clone()
        b, c = aug_jitter(seed, jitter[0], jitter[1], epoch, image)
        if jitter[0] > 0 or jitter[1] > 0:
            view = (view + torch.tensor(b, dtype=F32)) * torch.tensor(c, dtype=F32)
        cy, cx = (-1, -1)
        if cutout > 0:
            cy, cx = aug_cutout(seed, cutout, epoch, image)
            view[:, :, cy: cy + cutout, cx: cx + cutout] = 0.0
        out.append(view[0])
        out_labels.append(int(labels[image]))
        info.append((image, fl, dy, dx, cy, cx, float(b), float(c)))
    return torch.stack(out), out_labels, info


def write_augment_fixture(file_name, seed, epoch, aug_seed, cases):
    """file_name: batch 1 (8 images) of `epoch` from 20 random images, for each case (key,
    recipe name, derandomized, jitter): the batch, its labels and the per-image decisions
    (image, flip, dy, dx, cutout y0, x0), with jitter = (brightness, contrast) also those
    amplitudes and the b and c of each image; jitter None: the loader without jitter."""
    gen = torch.Generator().manual_seed(seed)
    n, batch_size, batch_index = 20, 8, 1
    images = torch.randint(0, 256, (n, 3, 32, 32), generator=gen, dtype=torch.int64)
    labels = torch.randint(0, N_CLASSES, (n,), generator=gen)
    w = FixtureWriter(file_name)
    w.add("images", images)
    w.add("labels", labels)
    w.add("normalized.0_1", normalize_u8(images[0:2]))
    w.add("config.seed", aug_seed)
    w.add("config.epoch", epoch)
    w.add("config.batch_size", batch_size)
    w.add("config.batch_index", batch_index)
    for key, recipe_name, derandomized, jitter in cases:
        recipe = RECIPES[recipe_name]
        batch, batch_labels, info = expected_batch(images, labels, aug_seed, epoch, batch_size,
                                                   batch_index, recipe["translate"], recipe["cutout"],
                                                   derandomized, jitter or (0.0, 0.0))
        w.add(f"{key}.translate", recipe["translate"])
        w.add(f"{key}.cutout", recipe["cutout"])
        w.add(f"{key}.derandomized", int(derandomized))
        if jitter:
            w.add(f"{key}.jitter_brightness", jitter[0])
            w.add(f"{key}.jitter_contrast", jitter[1])
        w.add(f"{key}.batch", batch)
        w.add(f"{key}.labels", batch_labels)
        # the C test checks that this port of rng.h / augment.h agrees with the header itself
        w.add(f"{key}.decisions", info if jitter else [d[:6] for d in info])
        print(f"  {key}: images {[i[0] for i in info]}, flips {[i[1] for i in info]}, "
              f"offsets {[(i[2], i[3]) for i in info]}"
              + (f", (b, c) {[(round(i[6], 4), round(i[7], 4)) for i in info]}" if jitter else ""))
    w.write()


# ---------------------------------------------------------------------------------------
# j) BatchNorm per group of images (simulated data-parallel workers, Goyal et al.)

def make_bn_group_fixture(seed, widths=(8, 16, 16), batch=8, group=4):
    """One training step of the depth-2 network (airbench94's numbers) whose BatchNorm uses
    the statistics of each group of `group` images: computed here as group-many separate
    workers, each a forward pass on its own images, the summed loss of all of them, and the
    running statistics of the first worker (what DistributedDataParallel keeps by default).
    Returns the writer and the worst max-pool gap ratio (see search_net_fixture)."""
    recipe = RECIPES["airbench94"]
    cfg = dict(depth=2, keep=recipe["keep"], eps=recipe["eps"], scale=recipe["scale"], activation="gelu")
    gen = torch.Generator().manual_seed(seed)
    names, rnames = tensor_names(2), running_names(2)
    lr, wd, lr_bn = sgd_numbers(recipe, batch)
    init = random_params(gen, widths, 2)
    running = {}
    for r in rnames:
        g = int(r.split(".")[0])
        running[f"mean.{r}"] = torch.zeros(widths[g], dtype=F64)
        running[f"var.{r}"] = torch.ones(widths[g], dtype=F64)
    w = FixtureWriter("bn_group_d2.bin")
    w.add("config.widths", widths)
    w.add("config.batch", batch)
    w.add("config.bn_group", group)
    w.add("config.lr", lr)
    w.add("config.wd", wd)
    w.add("config.lr_bn", lr_bn)
    for name in names:
        w.add(f"param.{name}", init[name])
    x = f32(torch.randn((batch, 3, 32, 32), generator=gen, dtype=F64))
    labels = torch.randint(0, N_CLASSES, (batch,), generator=gen)
    w.add("x", x)
    w.add("labels", labels)

    params = {name: init[name].clone().requires_grad_(name != "whiten_w") for name in names}
    gaps, pool_errors, logits, loss = Gaps(), [], [], 0.0
    for k in range(batch // group):
        part = slice(k * group, (k + 1) * group)
        worker_running = running if k == 0 else {key: v.clone() for key, v in running.items()}
        errors = fp32_pool_errors(params, worker_running, x[part], cfg)
        pool_errors = errors if not pool_errors else [max(a, b) for a, b in zip(pool_errors, errors)]
        out = forward(params, worker_running, x[part], True, cfg, gaps)
        logits.append(out)
        loss = loss + loss_fn(out, labels[part], recipe["smoothing"])
    loss.backward()
    w.add("logits", torch.cat(logits))
    w.add("loss", loss)
    for name in names:
        if params[name].grad is not None:
            w.add(f"grad.{name}", params[name].grad)
    for r in rnames:
        w.add(f"running_mean.{r}", running[f"mean.{r}"])
        w.add(f"running_var.{r}", running[f"var.{r}"])
    other = [params[n] for n in names if n != "whiten_w" and not n.startswith("bn.")]
    bn_biases = [params[n] for n in names if n.startswith("bn.")]
    opt = torch.optim.SGD([dict(params=bn_biases, lr=lr_bn, weight_decay=wd / lr_bn),
                           dict(params=other, lr=lr, weight_decay=wd / lr)],
                          momentum=recipe["momentum"], nesterov=True)
    with torch.no_grad():
        opt.step()
    for name in names:
        w.add(f"after.param.{name}", params[name])
    ratio = min(gaps.smallest[site] / pool_errors[site] for site in gaps.smallest)
    return w, ratio, f"  seed {seed}: loss {float(loss.detach()):.6f}"


def search_bn_group_fixture(first_seed):
    for seed in range(first_seed, first_seed + 500):
        w, ratio, summary = make_bn_group_fixture(seed)
        if ratio >= POOL_MARGIN:
            w.write()
            print(summary + f" (worst gap = {ratio:.1f} x rounding, {seed - first_seed + 1} tries)")
            return
    raise RuntimeError("bn_group_d2.bin: no seed with clear max-pool decisions")


# ---------------------------------------------------------------------------------------
# k) selective test-time augmentation (the 2025 record's evaluation)

def make_selective_tta_fixture(seed, widths=(8, 16, 16), n=16):
    """Eval-mode logits of n test images where only the k = floor(n * frac) images with the
    lowest top softmax probability of the plain view get level-2 TTA (their logits are
    replaced), the rest keep the plain view: with uniform view weights (the record's: the
    mean of the 6 views) at frac 0.25, and with airbench's weights at frac 0.5."""
    recipe = RECIPES["airbench94"]
    cfg = dict(depth=2, keep=recipe["keep"], eps=recipe["eps"], scale=recipe["scale"])
    gen = torch.Generator().manual_seed(seed)
    params = random_params(gen, widths, 2)
    running = {}
    for r in running_names(2):
        g = int(r.split(".")[0])
        running[f"mean.{r}"] = f32(torch.randn(widths[g], generator=gen, dtype=F64) * 0.3)
        running[f"var.{r}"] = f32(torch.rand(widths[g], generator=gen, dtype=F64) + 0.5)
    x = f32(torch.randn((n, 3, 32, 32), generator=gen, dtype=F64))
    w = FixtureWriter("selective_tta.bin")
    w.add("config.widths", widths)
    for name in tensor_names(2):
        w.add(f"param.{name}", params[name])
    for r in running_names(2):
        w.add(f"running_mean.{r}", running[f"mean.{r}"])
        w.add(f"running_var.{r}", running[f"var.{r}"])
    w.add("x", x)

    def f(v):
        return forward(params, running, v, False, cfg, None)

    def views(v):
        padded = F.pad(v, (1, 1, 1, 1), mode="reflect")
        shifted = [v, padded[:, :, 0:32, 0:32], padded[:, :, 2:34, 2:34]]
        return [f(s) for s in shifted] + [f(flip(s)) for s in shifted]

    with torch.no_grad():
        plain = f(x)
        confidence = F.softmax(plain, dim=1).max(dim=1).values
        for name, frac, uniform in (("uniform", 0.25, True), ("airbench", 0.5, False)):
            k = int(math.floor(n * frac))
            chosen = torch.topk(confidence, k, largest=False).indices.sort().values
            out = plain.clone()
            if uniform:
                out[chosen] = torch.stack(views(x[chosen])).mean(dim=0)
            else:
                out[chosen] = tta_logits(params, running, x[chosen], 2, cfg, None)
            w.add(f"{name}.frac", frac)
            w.add(f"{name}.chosen", chosen)
            w.add(f"{name}.logits", out)
            print(f"  {name} weights, frac {frac}: images {chosen.tolist()} get TTA")
    w.write()


# ---------------------------------------------------------------------------------------
# l) data filtering (airbench96_faster.py): the proxy's scoring and masked step, the main
# network's step on the kept examples, and the loader's stream of epochs

def schedule_multiplier(step, total, warmup_frac=0.1):
    """airbench96_faster.py's get_lr: warm-up from 0.2 over int(total * warmup_frac) steps,
    then linear to 0 at total."""
    warmup = int(total * warmup_frac)
    if step < warmup:
        return 0.2 * (1 - step / warmup) + step / warmup
    return (total - step) / (total - warmup)


def sgd_step(params, names, trainable, lr, wd, lr_bn, momentum, multiplier):
    """One PyTorch Nesterov SGD step with the recipes' two groups (BN biases, and the rest that
    trains) at the schedule's multiplier; returns the optimizer (for its momentum buffers)."""
    bn_biases = [params[n] for n in names if n.startswith("bn.")]
    other = [params[n] for n in names if n in trainable and not n.startswith("bn.")]
    opt = torch.optim.SGD([dict(params=bn_biases, lr=lr_bn * multiplier, weight_decay=wd / lr_bn),
                           dict(params=other, lr=lr * multiplier, weight_decay=wd / lr)],
                          momentum=momentum, nesterov=True)
    with torch.no_grad():
        opt.step()
    return opt


def make_filter_fixture(seed, batch=16, keep=8, proxy_widths=(8, 16, 16), main_widths=(8, 12, 16)):
    """filter.bin. The proxy (depth 2, its whitening bias 0 and frozen) scores a batch of
    `batch` in training mode: per-example losses, the `keep` highest kept (argsort's last
    `keep`, in index order), then one step on the kept examples' summed loss, whose backward
    passes through BN statistics over the whole batch. The main network (depth 3) then takes
    one step on the kept examples alone (BN over them; its whitening bias trains). Both use
    airbench96's numbers with wd from the loader batch, at steps 100 and 1000 of 2160.
    Returns the writer, the worst max-pool gap ratio and the selection's relative margin."""
    recipe = RECIPES["airbench96"]
    gen = torch.Generator().manual_seed(seed)
    lr, wd, lr_bn = sgd_numbers(recipe, batch)
    total, proxy_step, main_step = 2160, 100, 1000
    w = FixtureWriter("filter.bin")
    for key, value in (("batch", batch), ("keep", keep), ("proxy_widths", proxy_widths),
                       ("main_widths", main_widths), ("lr", lr), ("wd", wd), ("lr_bn", lr_bn),
                       ("keep_bn", recipe["keep"]), ("smoothing", recipe["smoothing"]), ("total", total),
                       ("proxy_step", proxy_step), ("main_step", main_step)):
        w.add(f"config.{key}", value)
    x = f32(torch.randn((batch, 3, 32, 32), generator=gen, dtype=F64))
    labels = torch.randint(0, N_CLASSES, (batch,), generator=gen)
    w.add("x", x)
    w.add("labels", labels)
    def network(prefix, widths, depth):
        params = random_params(gen, widths, depth)
        running = {}
        for r in running_names(depth):
            g = int(r.split(".")[0])
            running[f"mean.{r}"] = torch.zeros(widths[g], dtype=F64)
            running[f"var.{r}"] = torch.ones(widths[g], dtype=F64)
            w.add(f"{prefix}.running_mean.{r}", running[f"mean.{r}"])
            w.add(f"{prefix}.running_var.{r}", running[f"var.{r}"])
        cfg = dict(depth=depth, keep=recipe["keep"], eps=recipe["eps"], scale=recipe["scale"], activation="gelu")
        return params, running, cfg

    def dump(prefix, names, params, running, depth, opt):
        for name in names:
            if params[name].grad is not None:
                w.add(f"{prefix}.grad.{name}", params[name].grad)
            w.add(f"{prefix}.after.param.{name}", params[name])
            state = opt.state.get(params[name], {})
            if "momentum_buffer" in state:
                w.add(f"{prefix}.after.momentum.{name}", state["momentum_buffer"])
        for r in running_names(depth):  # after the forward (the step leaves them alone)
            w.add(f"{prefix}.forward.running_mean.{r}", running[f"mean.{r}"])
            w.add(f"{prefix}.forward.running_var.{r}", running[f"var.{r}"])

    ratios = []

    def train_forward(params, running, inputs, cfg):
        """The training forward, after noting its worst max-pool gap / fp32 rounding ratio."""
        errors = fp32_pool_errors(params, running, inputs, cfg)
        gaps = Gaps()
        with torch.no_grad():
            forward(params, {k: v.clone() for k, v in running.items()}, inputs, True, cfg, gaps)
        ratios.append(min(gaps.smallest[site] / errors[site] for site in gaps.smallest))
        return forward(params, running, inputs, True, cfg, None)

    # the proxy: score all, keep the highest, step on their summed loss
    names = tensor_names(2)
    init, running, cfg = network("proxy", proxy_widths, 2)
    init["whiten_b"] = torch.zeros(WHITEN_WIDTH, dtype=F64)
    for name in names:
        w.add(f"proxy.param.{name}", init[name])
    params = {n: init[n].clone().requires_grad_(n not in ("whiten_w", "whiten_b")) for n in names}
    logits = train_forward(params, running, x, cfg)
    losses = F.cross_entropy(logits, labels, label_smoothing=recipe["smoothing"], reduction="none")
    order = losses.detach().argsort()
    kept = order[-keep:].sort().values
    sorted_losses = losses.detach()[order]
    margin = float((sorted_losses[-keep] - sorted_losses[-keep - 1]) / sorted_losses[-keep])
    mask = torch.zeros(batch, dtype=F64)
    mask[kept] = 1.0
    masked = (losses * mask).sum()
    masked.backward()
    proxy_mult = schedule_multiplier(proxy_step, total)
    trainable = [n for n in names if n not in ("whiten_w", "whiten_b")]
    opt = sgd_step(params, names, trainable, lr, wd, lr_bn, recipe["momentum"], proxy_mult)
    w.add("proxy.losses", losses)
    w.add("proxy.kept", kept)
    w.add("proxy.masked_loss", masked)
    w.add("proxy.multiplier", proxy_mult)
    dump("proxy", names, params, running, 2, opt)

    # the main network: one step on the kept examples only
    names = tensor_names(3)
    init, running, cfg = network("main", main_widths, 3)
    for name in names:
        w.add(f"main.param.{name}", init[name])
    params = {n: init[n].clone().requires_grad_(n != "whiten_w") for n in names}
    logits = train_forward(params, running, x[kept], cfg)
    loss = loss_fn(logits, labels[kept], recipe["smoothing"])
    loss.backward()
    main_mult = schedule_multiplier(main_step, total)
    opt = sgd_step(params, names, [n for n in names if n != "whiten_w"], lr, wd, lr_bn, recipe["momentum"],
                   main_mult)
    w.add("main.logits", logits)
    w.add("main.loss", loss)
    w.add("main.multiplier", main_mult)
    dump("main", names, params, running, 3, opt)

    # the loader in continuous mode: step 2 of batches of 8 from 20 images straddles data
    # epochs 0 and 1 (positions 16..23); some of its rows, as data filtering loads them
    n_images, stream_batch, step, aug_seed = 20, 8, 2, 13
    rows = [0, 2, 3, 4, 7]
    images = torch.randint(0, 256, (n_images, 3, 32, 32), generator=gen, dtype=torch.int64)
    image_labels = torch.randint(0, N_CLASSES, (n_images,), generator=gen)
    positions = [step * stream_batch + r for r in rows]
    stream, stream_labels, info = expected_examples(images, image_labels, aug_seed, positions,
                                                    recipe["translate"], recipe["cutout"], False)
    for key, value in (("images", images), ("labels", image_labels), ("seed", aug_seed),
                       ("batch_size", stream_batch), ("step", step), ("rows", rows), ("batch", stream),
                       ("batch_labels", stream_labels), ("decisions", [d[:6] for d in info])):
        w.add(f"stream.{key}", value)
    ratio = min(ratios)
    summary = (f"  seed {seed}: proxy kept {kept.tolist()} (margin {margin:.2e}), masked loss "
               f"{float(masked):.6f}, main loss {float(loss):.6f}; stream epochs "
               f"{[p // n_images for p in positions]}, images {[d[0] for d in info]}")
    return w, ratio, margin, summary


def search_filter_fixture(first_seed):
    """The first seed whose max-pool decisions are clear of fp32 rounding by POOL_MARGIN and
    whose kept set is clear of it too (the keep-th and the next loss 1e-4 apart, relative)."""
    for seed in range(first_seed, first_seed + 500):
        w, ratio, margin, summary = make_filter_fixture(seed)
        if ratio >= POOL_MARGIN and margin >= 1e-4:
            w.write()
            print(summary + f" (worst gap = {ratio:.1f} x rounding, {seed - first_seed + 1} tries)")
            return
    raise RuntimeError("filter.bin: no seed with clear max-pool and selection decisions")


FIXTURES = {
    "net": lambda: (search_net_fixture("net_d2.bin", "airbench94", (8, 16, 16), 2, 8, 4, first_seed=1000),
                    search_net_fixture("net_d3.bin", "airbench96", (8, 12, 16), 3, 8, 4, first_seed=2000)),
    "whiten": lambda: make_whiten_fixture(seed=99),
    "muon": lambda: make_muon_fixture(seed=4321),
    "augment": lambda: write_augment_fixture(
        "augment.bin", seed=2024, epoch=3, aug_seed=7,
        cases=[("aug96.random", "airbench96", False, None), ("aug96.derandomized", "airbench96", True, None),
               ("aug94.random", "airbench94", False, None)]),
    "jitter": lambda: write_augment_fixture(
        "augment_jitter.bin", seed=2025, epoch=5, aug_seed=11,
        cases=[("jitter94.random", "airbench94", False, RECORD_JITTER),
               ("jitter96.derandomized", "airbench96", True, RECORD_JITTER),
               ("jitter96.wide", "airbench96", False, (0.9, 0.75))]),
    "bn_group": lambda: search_bn_group_fixture(first_seed=3000),
    "selective_tta": lambda: make_selective_tta_fixture(seed=5000),
    # net_d2.bin's seeds: the same parameters and data where the max-pool decisions allow
    "silu": lambda: search_net_fixture("silu_d2.bin", "airbench94", (8, 16, 16), 2, 8, 4, first_seed=1000,
                                       activation="silu"),
    "filter": lambda: search_filter_fixture(first_seed=6000),
}


def main():
    """make_fixtures.py [NAME...]: the named fixtures (see FIXTURES),
    or all of them. Regenerating one leaves the others' files as they are."""
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(1)
    if sys.byteorder != "little":
        print("note: writing little-endian files on a big-endian host")
    chosen = sys.argv[1:] or list(FIXTURES)
    unknown = [name for name in chosen if name not in FIXTURES]
    if unknown:
        sys.exit(f"make_fixtures.py: unknown fixture(s) {unknown}; choose from {list(FIXTURES)}")
    for name in chosen:
        print(f"{name} fixture (float64 math on float32-rounded inputs, stored as float32; "
              "Newton-Schulz also in fp32 and bf16):")
        FIXTURES[name]()


if __name__ == "__main__":
    main()
