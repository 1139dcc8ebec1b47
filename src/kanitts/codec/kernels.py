"""Hand-written Triton kernels for the channels-last ("nlc") codec walk's pointwise patterns.

Why: on the H100 (bf16, batch 256, 8 frames; benchmarks/codec_h100-run3-nlc-profile.txt)
the Inductor kernels that fast.py compiles for the residual add + half-snake + context
``cat`` patterns took 61% of the step (~38 of 61.8 ms) for ~30 GB of DRAM traffic, 3-4x
above the bandwidth floor. Suspected causes: Inductor's form of these patterns indexes the
concatenated ``[B, L + T, C]`` output through per-element div/mod by the *dynamic* sizes,
evaluates both ``where`` branches with the accurate libdevice ``sinf`` (this kernel compiled
for sm_90 with it: ~100 SASS instructions per element, against ~28 with the approx form
below, so issue-bound near the DRAM rate), and (the profile's call counts show) splits the two-output ``y' = y + h + b`` /
``cat([ctx, act(y')])`` pattern into two kernels that both read ``y`` and ``h``.
:func:`pointwise` is one kernel for all of those patterns:

* a 2-D grid ``(time blocks + context blocks, batch)``: a program owns ``BLOCK_T`` rows of
  one batch element's ``[T, C]`` slab, so the output row offset ``b * (L + T) + L`` is a
  scalar and no per-element division is left; ``C`` is a ``tl.constexpr`` (the tile is
  ``[BLOCK_T, next_pow2(C)]``, columns masked when C is not a power of two), so row
  strides are known and bf16 loads/stores vectorise (16 B when ``C % 8 == 0``, which the
  nlc walk's channel padding guarantees);
* the per-channel activation parameters (alpha, gain = ``1 / (alpha + eps)``, lrelu slope)
  and the conv bias are loaded once per program as ``[C]`` vectors;
* the activation is branch-free: ``max(v, slope * v) + gain * sin(alpha v)^2`` is snake on
  channels with ``slope = 1`` and leaky ReLU on channels with ``gain = 0, slope = 0.01``;
* ``sin`` per :data:`SIN_MODES`: ``"accurate"`` (``tl.sin``, libdevice ``sinf``),
  ``"approx"`` (``sin^2 t = (1 - cos 2t) / 2`` with the SFU's ``cos.approx.f32`` after a
  two-constant range reduction to ``[-pi, pi]``; abs. error ~1e-6, far below bf16's
  resolution), ``"approx_sin"`` (``sin.approx.f32`` squared, same reduction) and
  ``"none"`` (``alpha v^2`` instead of ``sin^2``: wrong on purpose, benchmarks only);
* every output of a pattern comes from the one launch: the residual sum ``y'`` (if asked),
  the activation written at row ``L`` of ``full`` and the context rows ``full[:, :L]``
  (copied by the extra programs of the same grid).

Math in float32, tensors in their own dtype (bf16 on the GPU). Outputs are allocated with
``torch.empty`` from shapes alone and nothing reads back to the host, so the kernels are
safe inside CUDA graph capture. :func:`pointwise_reference` (pure torch, any device) is
the same math, including the range reduction, for tests and CPU checks.
"""

from __future__ import annotations

import math
import os

import torch
from torch import Tensor

from kanitts.codec.layers import LRELU_SLOPE, SNAKE_EPS

try:  # Triton is optional (absent on CPU-only installs): the torch reference still works.
    import triton
    import triton.language as tl
except Exception:  # noqa: BLE001
    triton = None
    tl = None

#: ``sin`` implementations of the kernel (name -> constexpr code).
SIN_MODES = {"accurate": 0, "approx": 1, "approx_sin": 2, "none": 3}
DEFAULT_SIN_MODE = "approx"
#: Default tile: elements per program (``BLOCK_T * next_pow2(C)``) and warps per program.
DEFAULT_BLOCK = 2048
DEFAULT_WARPS = 4

TWO_PI = 2.0 * math.pi
INV_TWO_PI = 1.0 / TWO_PI
#: ``2 pi = TWO_PI_HI + TWO_PI_LO``; HI has 9 significant bits so ``k * HI`` is exact in
#: float32 for ``|k| < 2^15`` (arguments up to ~2e5 rad) and ``u - k * HI`` loses nothing.
TWO_PI_HI = 6.28125
TWO_PI_LO = TWO_PI - TWO_PI_HI


def available() -> bool:
    """Whether the Triton kernels can run (Triton importable and a CUDA device present)."""
    return triton is not None and torch.cuda.is_available()


def act_params(a: Tensor, inv: Tensor, m: Tensor) -> Tensor:
    """``[3, C]`` float32 kernel parameters (alpha, gain, slope) of a half-snake /
    snake / lrelu activation given fast.py's ``_NlcAct`` tensors (alpha, ``1/(alpha +
    eps)``, snake-channel mask): snake channels ``(alpha, 1/(alpha + eps), 1)``, leaky
    ReLU channels ``(0, 0, 0.01)`` (alpha 0 keeps ``sin`` at exactly 0 there)."""
    a = a.reshape(-1).float()
    inv = inv.reshape(-1).float()
    m = m.reshape(-1).to(torch.bool)
    zero = torch.zeros_like(a)
    slope = torch.where(m, torch.ones_like(a), torch.full_like(a, LRELU_SLOPE))
    return torch.stack([torch.where(m, a, zero), torch.where(m, inv, zero), slope]).contiguous()


def snake_params(alpha: Tensor, snake_channels: int, channels: int) -> Tensor:
    """:func:`act_params` from a raw alpha of the first ``snake_channels`` of ``channels``
    (``snake_channels == channels``: snake; ``0``: leaky ReLU; else half-snake)."""
    a = torch.ones(channels, device=alpha.device)
    a[:snake_channels] = alpha.reshape(-1)[:snake_channels].float()
    m = torch.zeros(channels, dtype=torch.bool, device=alpha.device)
    m[:snake_channels] = True
    return act_params(a, (a + SNAKE_EPS).reciprocal(), m)


# --------------------------------------------------------------------------- torch reference
def reduce_angle(u: Tensor) -> Tensor:
    """``u - 2 pi k`` with ``k = round(u / 2 pi)``, in float32 with the two-constant split:
    the kernel's range reduction for ``cos.approx`` / ``sin.approx`` (whose error grows with
    ``|u|`` outside ``[-pi, pi]``). Result in ``[-pi, pi]`` up to rounding."""
    u = u.float()
    k = torch.floor(u * INV_TWO_PI + 0.5)
    return (u - k * TWO_PI_HI) - k * TWO_PI_LO


def sin_sq(t: Tensor, mode: str = DEFAULT_SIN_MODE) -> Tensor:
    """``sin(t)^2`` as the kernel computes it in ``mode`` (torch's ``cos``/``sin`` stand in
    for the SFU approximations on the reduced argument); ``"none"`` gives ``t^2``."""
    if mode not in SIN_MODES:
        raise ValueError(f"sin mode must be one of {sorted(SIN_MODES)}, got {mode!r}")
    t = t.float()
    if mode == "accurate":
        return torch.sin(t).square()
    if mode == "approx":
        return 0.5 - 0.5 * torch.cos(reduce_angle(2.0 * t))
    if mode == "approx_sin":
        return torch.sin(reduce_angle(t)).square()
    return t * t


def act_reference(v: Tensor, params: Tensor, mode: str = DEFAULT_SIN_MODE) -> Tensor:
    """The kernel's branch-free activation over ``v[..., C]`` (float32):
    ``max(v, slope v) + gain sin^2(alpha v)``; ``"none"`` has ``(alpha v) v`` in place of
    ``sin^2`` (the same operation count as a cheap snake, for benchmarks)."""
    a, g, s = params[0], params[1], params[2]
    v = v.float()
    lin = torch.maximum(v, s * v)
    if mode == "none":
        return lin + g * ((a * v) * v)
    return lin + g * sin_sq(a * v, mode)


def pointwise_reference(
    x: Tensor,
    bias: Tensor,
    *,
    y: Tensor | None = None,
    total: Tensor | None = None,
    ctx: Tensor | None = None,
    params: Tensor | None = None,
    scale: float = 1.0,
    store_sum: bool = False,
    sin_mode: str = DEFAULT_SIN_MODE,
) -> tuple[Tensor | None, Tensor | None]:
    """What :func:`pointwise` computes, in torch (same operation order, float32 math):
    ``z = total + (y + (x + bias))`` (terms optional); returns ``(z or None, out or None)``
    with ``out = cat([ctx, act(z * scale)], T)`` when ``params`` is given."""
    z = x.float() + bias.float()
    if y is not None:
        z = y.float() + z
    if total is not None:
        z = total.float() + z
    zs = z.to(x.dtype) if store_sum else None
    out = None
    if params is not None:
        act = act_reference(z * scale, params, sin_mode).to(x.dtype)
        out = act if ctx is None or ctx.shape[1] == 0 else torch.cat([ctx, act], dim=1)
    return zs, out


# --------------------------------------------------------------------------- Triton kernel
if triton is not None:

    @triton.jit
    def _cos_approx(u):
        return tl.inline_asm_elementwise(
            "cos.approx.f32 $0, $1;", "=f,f", [u], dtype=tl.float32, is_pure=True, pack=1
        )

    @triton.jit
    def _sin_approx(u):
        return tl.inline_asm_elementwise(
            "sin.approx.f32 $0, $1;", "=f,f", [u], dtype=tl.float32, is_pure=True, pack=1
        )

    @triton.jit
    def _reduce(u):
        # reduce_angle(): k * 6.28125 and u - k * 6.28125 are exact; the low part's product
        # rounds at ~1e-7 rad, far below the SFU's own error.
        k = tl.floor(u * 0.15915494309189535 + 0.5)
        r = u - k * 6.28125
        return r - k * 0.001935307179586232

    @triton.jit
    def _act(v, a, g, s, SIN_MODE: tl.constexpr, SFU: tl.constexpr):
        lin = tl.maximum(v, s * v)
        t = a * v
        if SIN_MODE == 0:
            sn = tl.sin(t)
            w = sn * sn
        elif SIN_MODE == 1:
            r = _reduce(t + t)
            if SFU:
                c = _cos_approx(r)
            else:  # the interpreter (CPU tests) has no inline asm
                c = tl.cos(r)
            w = 0.5 - 0.5 * c
        elif SIN_MODE == 2:
            r = _reduce(t)
            if SFU:
                sn = _sin_approx(r)
            else:
                sn = tl.sin(r)
            w = sn * sn
        else:
            w = t * v
        return lin + g * w

    @triton.jit
    def _triton_nlc_pointwise(
        x_ptr,
        y_ptr,
        tot_ptr,
        ctx_ptr,
        bias_ptr,
        p_ptr,
        z_ptr,
        out_ptr,
        T,
        L,
        scale,
        C: tl.constexpr,
        CP: tl.constexpr,
        BLOCK_T: tl.constexpr,
        HAS_Y: tl.constexpr,
        HAS_TOTAL: tl.constexpr,
        STORE_Z: tl.constexpr,
        ACT: tl.constexpr,
        SIN_MODE: tl.constexpr,
        SFU: tl.constexpr,
    ):
        pid = tl.program_id(0)
        b = tl.program_id(1).to(tl.int64)
        n_ctx = tl.cdiv(L, BLOCK_T)
        cols = tl.arange(0, CP)
        rows0 = tl.arange(0, BLOCK_T)
        if C == CP:
            cmask = cols < CP  # all true, constant over the row: does not hurt vectorisation
        else:
            cmask = cols < C
        out_base = out_ptr + b * (T + L) * C
        if pid < n_ctx:
            # Context rows: full[b, :L] = ctx[b].
            rows = pid * BLOCK_T + rows0
            m = (rows < L)[:, None] & cmask[None, :]
            off = rows[:, None] * C + cols[None, :]
            v = tl.load(ctx_ptr + b * L * C + off, mask=m)
            tl.store(out_base + off, v, mask=m)
        else:
            rows = (pid - n_ctx) * BLOCK_T + rows0
            m = (rows < T)[:, None] & cmask[None, :]
            off = rows[:, None] * C + cols[None, :]
            in_off = b * T * C
            bias = tl.load(bias_ptr + cols, mask=cmask, other=0.0).to(tl.float32)
            z = tl.load(x_ptr + in_off + off, mask=m, other=0.0).to(tl.float32) + bias[None, :]
            if HAS_Y:
                z = tl.load(y_ptr + in_off + off, mask=m, other=0.0).to(tl.float32) + z
            if HAS_TOTAL:
                z = tl.load(tot_ptr + in_off + off, mask=m, other=0.0).to(tl.float32) + z
            if STORE_Z:
                tl.store(z_ptr + in_off + off, z.to(z_ptr.dtype.element_ty), mask=m)
            if ACT:
                a = tl.load(p_ptr + cols, mask=cmask, other=0.0)
                g = tl.load(p_ptr + C + cols, mask=cmask, other=0.0)
                s = tl.load(p_ptr + 2 * C + cols, mask=cmask, other=1.0)
                r = _act(z * scale, a[None, :], g[None, :], s[None, :], SIN_MODE, SFU)
                tl.store(out_base + L * C + off, r.to(out_ptr.dtype.element_ty), mask=m)

else:  # pragma: no cover - exercised only without Triton
    _triton_nlc_pointwise = None


def _interpreted() -> bool:
    """Triton's CPU interpreter (``TRITON_INTERPRET=1``, used by the CPU tests) runs no
    inline PTX: the approx modes then use ``tl.cos``/``tl.sin`` on the reduced argument."""
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def _next_pow2(n: int) -> int:
    return 1 << max(0, (n - 1).bit_length())


def pointwise(
    x: Tensor,
    bias: Tensor,
    *,
    y: Tensor | None = None,
    total: Tensor | None = None,
    ctx: Tensor | None = None,
    params: Tensor | None = None,
    scale: float = 1.0,
    store_sum: bool = False,
    sin_mode: str = DEFAULT_SIN_MODE,
    block: int = DEFAULT_BLOCK,
    num_warps: int = DEFAULT_WARPS,
) -> tuple[Tensor | None, Tensor | None]:
    """One launch of the fused kernel over ``x[B, T, C]`` (contiguous, CUDA): see
    :func:`pointwise_reference` for the function. ``y``/``total`` are ``[B, T, C]`` like
    ``x``, ``ctx`` ``[B, L, C]``, ``bias`` float ``[C]``, ``params`` :func:`act_params`
    (``None``: no activation, then ``store_sum`` must be set). ``block`` is the tile's
    element count (rounded to whole rows of ``next_pow2(C)``)."""
    if sin_mode not in SIN_MODES:
        raise ValueError(f"sin mode must be one of {sorted(SIN_MODES)}, got {sin_mode!r}")
    if params is None and not store_sum:
        raise ValueError("nothing to compute: no activation and no stored sum")
    bsz, t, c = x.shape
    if bias.numel() != c:
        raise ValueError(f"bias has {bias.numel()} values for {c} channels")
    if params is not None and tuple(params.shape) != (3, c):
        raise ValueError(f"params must be [3, {c}], got {tuple(params.shape)}")
    if bsz > 65535:
        raise ValueError("batch exceeds the grid's second dimension (65535)")
    x, bias = x.contiguous(), bias.contiguous()
    y = None if y is None else y.contiguous()
    total = None if total is None else total.contiguous()
    act = params is not None
    length = 0 if (ctx is None or not act) else int(ctx.shape[1])
    if length:
        assert ctx is not None
        if ctx.shape[0] != bsz or ctx.shape[2] != c:
            raise ValueError(f"ctx {tuple(ctx.shape)} does not match x {tuple(x.shape)}")
        ctx = ctx.contiguous()
    for name, other in (("y", y), ("total", total)):
        if other is not None and other.shape != x.shape:
            raise ValueError(f"{name} {tuple(other.shape)} does not match x {tuple(x.shape)}")
    if _triton_nlc_pointwise is None:
        raise RuntimeError("Triton is not available")
    zs = torch.empty_like(x) if store_sum else None
    out = x.new_empty(bsz, length + t, c) if act else None
    if bsz == 0 or (t == 0 and length == 0):
        return zs, out
    cp = _next_pow2(c)
    block_t = max(1, _next_pow2(max(1, block // cp)))
    grid = (triton.cdiv(length, block_t) + triton.cdiv(t, block_t), bsz)
    dummy = x
    _triton_nlc_pointwise[grid](
        x,
        dummy if y is None else y,
        dummy if total is None else total,
        dummy if not length else ctx,
        bias,
        bias if params is None else params,
        dummy if zs is None else zs,
        dummy if out is None else out,
        t,
        length,
        float(scale),
        C=c,
        CP=cp,
        BLOCK_T=block_t,
        HAS_Y=y is not None,
        HAS_TOTAL=total is not None,
        STORE_Z=store_sum,
        ACT=act,
        SIN_MODE=SIN_MODES[sin_mode],
        SFU=not _interpreted(),
        num_warps=num_warps,
    )
    return zs, out


# ------------------------------------------------------------- fast.py's four nlc patterns
def act_cat(x: Tensor, ctx: Tensor, b: Tensor, params: Tensor, **kw: object) -> Tensor:
    """``cat([ctx, act(x + b)], T)`` (fast.nlc_act_cat)."""
    _, out = pointwise(x, b, ctx=ctx, params=params, **kw)  # type: ignore[arg-type]
    assert out is not None
    return out


def add_act_cat(y: Tensor, h: Tensor, ctx: Tensor, b: Tensor, params: Tensor, **kw: object) -> tuple[Tensor, Tensor]:
    """``(y + (h + b), cat([ctx, act(y + (h + b))], T))`` (fast.nlc_add_act_cat)."""
    zs, out = pointwise(h, b, y=y, ctx=ctx, params=params, store_sum=True, **kw)  # type: ignore[arg-type]
    assert zs is not None and out is not None
    return zs, out


def add(total: Tensor | None, y: Tensor, h: Tensor, b: Tensor, **kw: object) -> Tensor:
    """``total + (y + (h + b))`` (fast.nlc_add)."""
    zs, _ = pointwise(h, b, y=y, total=total, store_sum=True, **kw)  # type: ignore[arg-type]
    assert zs is not None
    return zs


def sum_act_cat(
    total: Tensor | None, y: Tensor, h: Tensor, ctx: Tensor, b: Tensor, params: Tensor, n: int, **kw: object
) -> Tensor:
    """``cat([ctx, act((total + (y + (h + b))) / n)], T)`` (fast.nlc_sum_act_cat)."""
    _, out = pointwise(h, b, y=y, total=total, ctx=ctx, params=params, scale=1.0 / n, **kw)  # type: ignore[arg-type]
    assert out is not None
    return out
