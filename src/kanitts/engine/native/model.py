"""Our own LFM2 forward: short-conv and grouped-query attention layers on a static cache.

Math follows transformers' ``Lfm2ForCausalLM`` exactly (RMSNorm in float32 then cast,
SwiGLU feed-forward, RoPE on q/k after per-head RMSNorm, a depthwise causal conv gated
by the input projection, a final norm and a head tied to the embedding). The weights are
plain tensors (no ``nn.Module``), fused where it saves launches (q/k/v, w1/w3).

Two entry points, both on a :class:`StateCache` of ``S`` slots x ``T`` positions:

* :meth:`Lfm2.prefill`: fresh prompts into chosen slots, right-padded to one length;
* :meth:`Lfm2.decode`: one token for each of the first ``b`` slots (inactive slots inside
  that prefix are computed as padding and ignored), graph-capturable: no host syncs,
  every shape fixed by ``b``.

KaniTTS-2 hooks: positions are per token and float (not derived from the cache index),
``Lfm2Spec.rope_scales`` scales them per layer, and ``embeds`` replaces any input row by
a vector that is not a token (a speaker embedding).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from kanitts.engine.native.spec import Lfm2Spec


@dataclass
class AttnWeights:
    qkv: torch.Tensor  # [(NH + 2 NKV) * HD, H]
    out: torch.Tensor  # [H, NH * HD]
    q_norm: torch.Tensor  # [HD]
    k_norm: torch.Tensor  # [HD]


@dataclass
class ConvWeights:
    in_proj: torch.Tensor  # [3H, H]
    conv: torch.Tensor  # [H, K] (depthwise kernel)
    out_proj: torch.Tensor  # [H, H]
    in_bias: torch.Tensor | None = None
    conv_bias: torch.Tensor | None = None
    out_bias: torch.Tensor | None = None


@dataclass
class LayerWeights:
    op_norm: torch.Tensor  # [H]
    ffn_norm: torch.Tensor  # [H]
    w13: torch.Tensor  # [2 FF, H]  (w1 rows then w3 rows)
    w2: torch.Tensor  # [H, FF]
    attn: AttnWeights | None = None
    conv: ConvWeights | None = None


class StateCache:
    """Static per-slot model state: K/V rows ``[S, T, NKV, HD]`` per attention layer and
    the last ``K-1`` conv inputs ``[S, H, K-1]`` per conv layer (dicts keyed by layer index)."""

    def __init__(self, spec: Lfm2Spec, slots: int, max_len: int, device: torch.device, dtype: torch.dtype):
        self.slots, self.max_len = slots, max_len
        kv = (slots, max_len, spec.num_kv_heads, spec.head_dim)
        self.k = {i: torch.zeros(kv, device=device, dtype=dtype) for i in spec.attn_layers}
        self.v = {i: torch.zeros(kv, device=device, dtype=dtype) for i in spec.attn_layers}
        cs = (slots, spec.hidden_size, spec.conv_kernel - 1)
        self.conv = {i: torch.zeros(cs, device=device, dtype=dtype) for i in spec.conv_layers}

    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for d in (self.k, self.v, self.conv) for t in d.values())


def rms_norm(x: torch.Tensor, w: torch.Tensor, eps: float) -> torch.Tensor:
    """RMSNorm over the last dimension (transformers' Lfm2RMSNorm up to rounding: torch's
    fused kernel normalises in float32 and scales before the one cast back, one kernel
    instead of seven on CUDA)."""
    return F.rms_norm(x, (x.shape[-1],), w, eps)


def rope_tables(positions: torch.Tensor, inv_freq: torch.Tensor, dtype: torch.dtype
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """cos/sin ``[..., HD]`` for float positions ``[...]`` (the two halves repeated)."""
    f = positions.float()[..., None] * inv_freq
    emb = torch.cat((f, f), dim=-1)
    return emb.cos().to(dtype), emb.sin().to(dtype)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    rot = torch.cat((-x[..., half:], x[..., :half]), dim=-1)
    return x * cos + rot * sin


class Lfm2:
    """An LFM2 causal LM held as plain tensors on one device in one dtype."""

    def __init__(self, spec: Lfm2Spec, embed: torch.Tensor, final_norm: torch.Tensor,
                 layers: list[LayerWeights], head: torch.Tensor | None = None) -> None:
        self.spec = spec
        self.embed = embed  # [V, H]
        self.final_norm = final_norm
        self.layers = layers
        self.head = embed if head is None else head  # [V, H]
        self.device, self.dtype = embed.device, embed.dtype
        hd = spec.head_dim
        self.inv_freq = 1.0 / (spec.rope_theta ** (torch.arange(0, hd, 2, device=self.device).float() / hd))
        self._scales = sorted({spec.rope_scale(i) for i in spec.attn_layers})
        #: ``(tokens [b], cache_index [b]) -> positions [b] float32``: where a model's decode
        #: positions depend on the tokens (KaniTTS-2's frame-level ones; it may keep per-slot
        #: state, must not sync with the host). None: the ``positions`` passed to :meth:`decode`.
        self.position_rule: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None

    def tensors(self) -> list[torch.Tensor]:
        """Every weight tensor once (the tied head is the embedding)."""
        out = [self.embed, self.final_norm] + ([] if self.head is self.embed else [self.head])
        for lw in self.layers:
            out += [lw.op_norm, lw.ffn_norm, lw.w13, lw.w2]
            for part in (lw.attn, lw.conv):
                if part is not None:
                    out += [t for t in vars(part).values() if isinstance(t, torch.Tensor)]
        return out

    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.tensors())

    # -- pieces ---------------------------------------------------------------------------
    def embed_tokens(self, ids: torch.Tensor, embeds: torch.Tensor | None = None,
                     embeds_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Input rows ``[..., H]``; where ``embeds_mask`` is True the row of ``embeds`` is
        used instead of the token's embedding (both shaped like ``ids`` / ``[..., H]``)."""
        x = F.embedding(ids, self.embed)
        if embeds is not None:
            mask = embeds_mask if embeds_mask is not None else torch.ones_like(ids, dtype=torch.bool)
            x = torch.where(mask[..., None], embeds.to(x.dtype), x)
        return x

    def _rope(self, positions: torch.Tensor) -> dict[float, tuple[torch.Tensor, torch.Tensor]]:
        # A layer's scale multiplies its frequencies (KaniTTS-2's learnable RoPE), in float32
        # as the reference does: inv_freq * alpha, then times the positions.
        return {s: rope_tables(positions, self.inv_freq * s if s != 1.0 else self.inv_freq, self.dtype)
                for s in self._scales}

    def _mlp(self, lw: LayerWeights, x: torch.Tensor) -> torch.Tensor:
        h = rms_norm(x, lw.ffn_norm, self.spec.norm_eps)
        gu = F.linear(h, lw.w13)
        g, u = gu.chunk(2, dim=-1)
        return x + F.linear(F.silu(g) * u, lw.w2)

    def _qkv(self, aw: AttnWeights, h: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor
             ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """q ``[..., NH, HD]``, k and v ``[..., NKV, HD]`` (q/k normed and rotated);
        ``cos``/``sin`` broadcast as ``[..., 1, HD]``."""
        sp = self.spec
        qkv = F.linear(h, aw.qkv)
        q, k, v = qkv.split([sp.num_heads * sp.head_dim, sp.num_kv_heads * sp.head_dim,
                             sp.num_kv_heads * sp.head_dim], dim=-1)
        lead = h.shape[:-1]
        q = rms_norm(q.reshape(*lead, sp.num_heads, sp.head_dim), aw.q_norm, sp.norm_eps)
        k = rms_norm(k.reshape(*lead, sp.num_kv_heads, sp.head_dim), aw.k_norm, sp.norm_eps)
        v = v.reshape(*lead, sp.num_kv_heads, sp.head_dim)
        return apply_rope(q, cos, sin), apply_rope(k, cos, sin), v

    def logits(self, hidden: torch.Tensor, lo: int = 0, hi: int | None = None) -> torch.Tensor:
        """Head rows ``[lo, hi)`` only: ``[..., hi - lo]`` in the model dtype."""
        head = self.head if (lo == 0 and hi is None) else self.head[lo:hi]
        return F.linear(hidden, head)

    # -- prefill --------------------------------------------------------------------------
    def prefill(self, cache: StateCache, slots: torch.Tensor, ids: torch.Tensor, lengths: torch.Tensor,
                positions: torch.Tensor | None = None, embeds: torch.Tensor | None = None,
                embeds_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Run fresh prompts and fill their slots' state.

        ``slots``: ``[n]`` int64 slot indices; ``ids``: ``[n, L]`` int64, right-padded;
        ``lengths``: ``[n]`` int64 real lengths (>= 1, <= T); ``positions``: ``[n, L]`` float
        RoPE positions (default ``0..L-1``). K/V go to cache positions ``0..L-1``; the conv
        state becomes each prompt's last ``K-1`` real inputs. Returns the final hidden states
        ``[n, L, H]`` (rows past a prompt's length are padding).
        """
        sp = self.spec
        n, L = ids.shape
        dev = ids.device
        ar = torch.arange(L, device=dev)
        if positions is None:
            positions = ar[None].expand(n, L).float()
        x = self.embed_tokens(ids, embeds, embeds_mask)
        ropes = self._rope(positions)
        valid = ar[None] < lengths[:, None]  # [n, L]
        # causal and within each prompt: [n, 1, L(q), L(k)]
        mask = (ar[None, :] <= ar[:, None])[None] & valid[:, None, :]
        mask = mask[:, None]
        kk = sp.conv_kernel - 1
        for i, lw in enumerate(self.layers):
            h = rms_norm(x, lw.op_norm, sp.norm_eps)
            if lw.attn is not None:
                cos, sin = ropes[sp.rope_scale(i)]
                q, k, v = self._qkv(lw.attn, h, cos[:, :, None], sin[:, :, None])  # [n, L, heads, HD]
                cache.k[i][slots, :L] = k
                cache.v[i][slots, :L] = v
                a = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2),
                                                   attn_mask=mask, enable_gqa=sp.num_heads != sp.num_kv_heads)
                x = x + F.linear(a.transpose(1, 2).reshape(n, L, -1), lw.attn.out)
            else:
                cw = lw.conv
                assert cw is not None
                bcx = F.linear(h, cw.in_proj, cw.in_bias).transpose(1, 2)  # [n, 3H, L]
                b, c, xx = bcx.chunk(3, dim=1)
                bx = b * xx  # [n, H, L]
                padded = F.pad(bx, (kk, 0))  # [n, H, kk + L]
                # depthwise causal conv as K shifted multiply-adds in float32 (as conv1d
                # accumulates; no cuDNN: its first call per new shape costs up to a second)
                conv = padded[:, :, :L].float() * cw.conv[None, :, :1].float()
                for j in range(1, kk + 1):
                    conv = conv + padded[:, :, j:j + L].float() * cw.conv[None, :, j:j + 1].float()
                if cw.conv_bias is not None:
                    conv = conv + cw.conv_bias[None, :, None].float()
                conv = conv.to(bx.dtype)  # [n, H, L]
                # state = inputs at positions len-kk .. len-1 = padded[:, :, len .. len+kk-1]
                take = (lengths[:, None] + torch.arange(kk, device=dev)[None])[:, None, :]
                cache.conv[i][slots] = padded.gather(2, take.expand(n, sp.hidden_size, kk)).to(cache.conv[i].dtype)
                y = (c * conv).transpose(1, 2)
                x = x + F.linear(y, cw.out_proj, cw.out_bias)
            x = self._mlp(lw, x)
        return rms_norm(x, self.final_norm, sp.norm_eps)

    # -- decode ---------------------------------------------------------------------------
    def decode(self, cache: StateCache, tokens: torch.Tensor, cache_index: torch.Tensor,
               positions: torch.Tensor, embeds: torch.Tensor | None = None,
               embeds_mask: torch.Tensor | None = None, attn_len: int | None = None) -> torch.Tensor:
        """One token for each of slots ``0..b-1``.

        ``tokens``: ``[b]`` int64 input ids; ``cache_index``: ``[b]`` int64 where each
        token's K/V go (its number of cached positions; must be < ``attn_len``); ``positions``:
        ``[b]`` float RoPE positions. Attention covers cache positions ``0..cache_index`` and
        reads only the first ``attn_len`` positions of the cache (default: all ``T``).
        Updates the cache in place and returns the final hidden states ``[b, H]``.
        """
        sp = self.spec
        b = tokens.shape[0]
        T = cache.max_len
        A = T if attn_len is None else attn_len
        x = self.embed_tokens(tokens, embeds, embeds_mask)
        if self.position_rule is not None:
            positions = self.position_rule(tokens, cache_index)
        ropes = self._rope(positions)
        ar = torch.arange(A, device=tokens.device)
        mask = (ar[None, :] <= cache_index[:, None])[:, None, None, :]  # [b, 1, 1, A]
        rows = torch.arange(b, device=tokens.device)
        g = sp.num_heads // sp.num_kv_heads
        for i, lw in enumerate(self.layers):
            h = rms_norm(x, lw.op_norm, sp.norm_eps)
            if lw.attn is not None:
                cos, sin = ropes[sp.rope_scale(i)]
                q, k, v = self._qkv(lw.attn, h, cos[:, None], sin[:, None])  # [b, heads, HD]
                kc, vc = cache.k[i], cache.v[i]
                # written on the cache tensor itself, never through a view of it: Inductor
                # (torch < 2.12) cannot reinplace a write into a view of a graph input, and
                # would copy the whole cache twice per layer and step
                kc.index_put_((rows, cache_index), k)
                vc.index_put_((rows, cache_index), v)
                # grouped-query attention without expanding K/V: each KV head's g query heads
                # are g "query positions" sharing one mask.
                qg = q.view(b, sp.num_kv_heads, g, sp.head_dim)
                a = F.scaled_dot_product_attention(qg, kc[:b, :A].transpose(1, 2), vc[:b, :A].transpose(1, 2),
                                                   attn_mask=mask)
                x = x + F.linear(a.reshape(b, -1), lw.attn.out)
            else:
                cw = lw.conv
                assert cw is not None
                bcx = F.linear(h, cw.in_proj, cw.in_bias)
                bb, c, xx = bcx.chunk(3, dim=-1)
                bx = bb * xx  # [b, H]
                st = cache.conv[i]
                win = torch.cat([st[:b], bx[:, :, None].to(st.dtype)], dim=-1)  # [b, H, K]
                st.index_copy_(0, rows, win[:, :, 1:])  # on the state tensor itself (as above)
                conv = (win.float() * cw.conv[None].float()).sum(-1)  # conv1d accumulates in fp32
                if cw.conv_bias is not None:
                    conv = conv + cw.conv_bias.float()
                x = x + F.linear(c * conv.to(c.dtype), cw.out_proj, cw.out_bias)
            x = self._mlp(lw, x)
        return rms_norm(x, self.final_norm, sp.norm_eps)
