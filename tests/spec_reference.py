"""An independent, deliberately plain float64 rendering of ILA, sections 3.1-3.3 of
docs/specification.md, written from that page alone (not from ila_fast's model
code nor from ila_fast/kernels), for tests/test_model_spec.py.

Everything takes a state dict (name -> tensor, as ``ILAModel.state_dict()`` or
``ILABlock.state_dict()`` names them, converted to float64) and the ``ModelConfig``.
Parameters are looked up by name only; the computation below is written out from the spec:
explicit loops over clips and frame pairs, the mask formula, BatchNorm, grouped 1x1 convs,
max-pooling, the temporal Conv3d and attention by hand. Only the plain convolutions of the
interactive block / point head and the patch embedding use ``F.conv2d`` (not under test).

BatchNorm in training normalises with the batch statistics over (N, H, W) (biased variance)
and records the running-statistics update (momentum 0.1, unbiased variance) in ``updates``
(name -> new value) instead of writing into ``sd``; in evaluation it uses the running stats.

``record`` (optional dict) collects intermediates for diagnostics: per block, under the
block prefix, ``z`` (B, T, L, D), ``f`` (B*(T-1), C, G, G), ``points`` (B, T-1, 4),
``masks_pre`` / ``masks_cur`` (B, T-1, G, G), ``aligned`` / ``temporal`` (B, T, L, D),
``aux``, ``align_term`` / ``skip_term`` (the two ILA residuals), and two margins used to
decide where finite differences are valid: ``kink_margin`` (distance of every mask
coordinate difference |g - p| from the 1-D weight's breakpoints 0.25 and 0.25 + 1/1.5) and
``relu_margin`` (smallest |input| of any ReLU in the branch).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

BN_EPS = 1e-5
BN_MOMENTUM = 0.1
LN_EPS = 1e-5
POINT_SCALE = 0.75  # tanh(.) * 0.75
# Training jitters: the point plus each offset times delta. The set is symmetric under
# swapping the two coordinates, so whether an offset reads (x, y) or (y, x) is immaterial.
MASK_OFFSETS = [(0, 0), (0, 1), (1, 0), (0, -1), (-1, 0), (1, 1), (-1, -1), (1, -1), (-1, 1)]
FLAT = 0.25            # |d| <= 0.25: weight 1
SLOPE = 1.5            # then 1 - 1.5 (|d| - 0.25), clipped at 0
ZERO_AT = FLAT + 1.0 / SLOPE


# ---------------------------------------------------------------- small building blocks

def layer_norm(x, sd, name, eps=LN_EPS):
    mean = x.mean(dim=-1, keepdim=True)
    var = ((x - mean) ** 2).mean(dim=-1, keepdim=True)
    return (x - mean) / torch.sqrt(var + eps) * sd[name + ".weight"] + sd[name + ".bias"]


def linear(x, sd, name, bias=True):
    y = x @ sd[name + ".weight"].t()
    return y + sd[name + ".bias"] if bias else y


def quick_gelu(x):
    return x * torch.sigmoid(1.702 * x)


def relu(x, margins=None):
    if margins is not None:
        margins.append(float(x.detach().abs().min()))
    return torch.clamp(x, min=0.0)


def batch_norm(x, sd, name, training, updates):
    """x (N, C, H, W). Training: batch statistics over (N, H, W); records the running update."""
    weight, bias = sd[name + ".weight"], sd[name + ".bias"]
    c = x.shape[1]
    if training:
        n = x.numel() // c
        mean = x.mean(dim=(0, 2, 3))
        var = ((x - mean.view(1, c, 1, 1)) ** 2).mean(dim=(0, 2, 3))  # biased: normalisation
        updates[name + ".running_mean"] = ((1 - BN_MOMENTUM) * sd[name + ".running_mean"]
                                           + BN_MOMENTUM * mean.detach())
        updates[name + ".running_var"] = ((1 - BN_MOMENTUM) * sd[name + ".running_var"]
                                          + BN_MOMENTUM * var.detach() * n / (n - 1))  # unbiased
        updates[name + ".num_batches_tracked"] = sd[name + ".num_batches_tracked"] + 1
    else:
        mean, var = sd[name + ".running_mean"], sd[name + ".running_var"]
    xhat = (x - mean.view(1, c, 1, 1)) / torch.sqrt(var.view(1, c, 1, 1) + BN_EPS)
    return xhat * weight.view(1, c, 1, 1) + bias.view(1, c, 1, 1)


def max_pool_2x2(x):
    """2x2 max-pool, stride 2, floor: an odd last row / column is dropped."""
    n, c, h, w = x.shape
    h2, w2 = h // 2, w // 2
    x = x[:, :, : 2 * h2, : 2 * w2].reshape(n, c, h2, 2, w2, 2)
    return x.amax(dim=(3, 5))


def grouped_pointwise(u, weight, bias, groups=2):
    """1x1 Conv1d with groups over the last axis of u: weight (Cout, Cin/groups, 1)."""
    cin_g = weight.shape[1]
    cout_g = weight.shape[0] // groups
    outs = []
    for g in range(groups):
        w = weight[g * cout_g:(g + 1) * cout_g, :, 0]           # (cout_g, cin_g)
        outs.append(u[..., g * cin_g:(g + 1) * cin_g] @ w.t())
    return torch.cat(outs, dim=-1) + bias


def multi_head_attention(q_in, kv_in, wq, bq, wk, bk, wv, bv, wo, bo, heads, mask=None):
    """q_in (N, Lq, E), kv_in (N, Lk, E) -> (N, Lq, E); softmax(q k^T / sqrt(hd) + mask) v."""
    n, lq, e = q_in.shape
    lk = kv_in.shape[1]
    hd = e // heads

    def proj(x, w, b, length):
        y = x @ w.t()
        if b is not None:
            y = y + b
        return y.reshape(n, length, heads, hd).permute(0, 2, 1, 3)  # (N, h, L, hd)

    q, k, v = proj(q_in, wq, bq, lq), proj(kv_in, wk, bk, lk), proj(kv_in, wv, bv, lk)
    scores = q @ k.transpose(-1, -2) / math.sqrt(hd)
    if mask is not None:
        scores = scores + mask
    weights = torch.softmax(scores, dim=-1)
    out = (weights @ v).permute(0, 2, 1, 3).reshape(n, lq, e)
    return out @ wo.t() + bo


def clip_self_attention(x, sd, prefix, heads, mask=None):
    w_in, b_in = sd[prefix + "attn.in_proj_weight"], sd[prefix + "attn.in_proj_bias"]
    e = x.shape[-1]
    wq, wk, wv = w_in[:e], w_in[e:2 * e], w_in[2 * e:]
    bq, bk, bv = b_in[:e], b_in[e:2 * e], b_in[2 * e:]
    return multi_head_attention(x, x, wq, bq, wk, bk, wv, bv, sd[prefix + "attn.out_proj.weight"],
                                sd[prefix + "attn.out_proj.bias"], heads, mask)


def clip_mlp(x, sd, prefix):
    return linear(quick_gelu(linear(x, sd, prefix + "mlp.c_fc")), sd, prefix + "mlp.c_proj")


def clip_block(x, sd, prefix, heads, mask=None):
    """CLIP residual block on (N, L, E): x + attn(ln_1 x), then + mlp(ln_2 x)."""
    x = x + clip_self_attention(layer_norm(x, sd, prefix + "ln_1"), sd, prefix, heads, mask)
    return x + clip_mlp(layer_norm(x, sd, prefix + "ln_2"), sd, prefix)


# ---------------------------------------------------------------- the alignment mask (3.1.5)

def grid_coords(g, like):
    return torch.tensor([-1.0 + 2.0 * k / (g - 1) for k in range(g)], dtype=like.dtype, device=like.device)


def axis_weight(d):
    """w(d) = 1 for |d| <= 0.25, else max(0, 1 - 1.5 (|d| - 0.25))."""
    a = d.abs()
    return torch.where(a <= FLAT, torch.ones_like(a), torch.clamp(1.0 - SLOPE * (a - FLAT), min=0.0))


def point_mask(px, py, g, kinks=None):
    """M[i, j] = w(g_i - py) w(g_j - px): rows follow y, columns x."""
    coords = grid_coords(g, px)
    dy, dx = coords - py, coords - px
    if kinks is not None:
        for d in (dy, dx):
            a = d.detach().abs()
            kinks.append(float(torch.minimum((a - FLAT).abs(), (a - ZERO_AT).abs()).min()))
    return axis_weight(dy)[:, None] * axis_weight(dx)[None, :]


def alignment_mask(px, py, g, training, delta, kinks=None):
    if not training:
        return point_mask(px, py, g, kinks)
    total = 0
    for ox, oy in MASK_OFFSETS:
        total = total + point_mask(px + ox * delta, py + oy * delta, g, kinks)
    return total / len(MASK_OFFSETS)


# ---------------------------------------------------------------- one ILA block (3.1, 3.2)

def interactive_block(pairs, sd, p, interactive, training, updates, margins):
    """pairs (B*(T-1), 2D, G, G) -> F (B*(T-1), C, G, G)."""
    if interactive == "depthwise":
        two_d = pairs.shape[1]
        h = F.conv2d(pairs, sd[p + "dw_conv.weight"], sd[p + "dw_conv.bias"], padding=1, groups=two_d)
        h = relu(batch_norm(h, sd, p + "dw_bn", training, updates), margins)
        h = F.conv2d(h, sd[p + "pw_conv.weight"], sd[p + "pw_conv.bias"])
        h = relu(batch_norm(h, sd, p + "pw_bn", training, updates), margins)
    elif interactive == "dense":
        h = F.conv2d(pairs, sd[p + "dense_conv.weight"], sd[p + "dense_conv.bias"], padding=1)
        h = relu(batch_norm(h, sd, p + "dense_bn", training, updates), margins)
    else:
        raise ValueError(interactive)
    h = F.conv2d(h, sd[p + "conv.weight"], sd[p + "conv.bias"], padding=1)
    return relu(batch_norm(h, sd, p + "bn", training, updates), margins)


def point_head(f, sd, p, clips, training, updates, margins):
    """F (B*(T-1), C, G, G) -> points (B, T-1, 4) = (x_pre, y_pre, x_cur, y_cur)."""
    h = f
    for conv, bn in (("conv1", "bn1"), ("conv2", "bn2")):
        h = F.conv2d(h, sd[p + conv + ".weight"], sd[p + conv + ".bias"], padding=1)
        h = batch_norm(h, sd, p + bn, training, updates)
        h = relu(max_pool_2x2(h), margins)
    g = h.amax(dim=(2, 3))                            # global max-pool: (B*(T-1), C/2)
    pairs = g.shape[0] // clips
    points = []
    for b in range(clips):
        per_pair = []
        for t in range(pairs):
            u = g[b * pairs + t]                      # (C/2,), channel vector of pair t of clip b
            u = relu(grouped_pointwise(u, sd[p + "fc1.weight"], sd[p + "fc1.bias"]), margins)
            u = grouped_pointwise(u, sd[p + "fc2.weight"], sd[p + "fc2.bias"])
            per_pair.append(torch.tanh(u) * POINT_SCALE)
        points.append(torch.stack(per_pair))
    return torch.stack(points)


def ila_block(x, sd, prefix, cfg, training, updates=None, record=None, bn_training=None):
    """One block on x (B, T, L, D) -> (x (B, T, L, D), aux ()); spec 3.1 steps 1-9 and 3.2.

    ``training`` picks the 9-offset masks and batch-statistics BatchNorm; ``bn_training``
    (default: ``training``) overrides the BatchNorm mode alone (the official-evaluation option
    of docs/specification.md#5-known-defects-of-the-official-code: masks in evaluation mode, BatchNorm on batch statistics).
    """
    updates = {} if updates is None else updates
    bn_training = training if bn_training is None else bn_training
    bsz, t_frames, l_tokens, d = x.shape
    g = cfg.grid_size
    assert l_tokens == g * g + 1 and t_frames == cfg.frames
    p = prefix + "message_ila."
    margins, kinks = [], []

    # 1. message projection
    z = layer_norm(linear(x, sd, prefix + "message_fc"), sd, prefix + "message_ln")  # (B, T, L, D)

    # 2. pairs (frame t's D channels first, then frame t+1's); patch token 1 + i*G + j -> [i, j]
    def grid(tokens):  # (G*G, D) -> (D, G, G)
        return tokens.t().reshape(d, g, g)

    pair_maps = []
    for b in range(bsz):
        for t in range(t_frames - 1):
            pair_maps.append(torch.cat([grid(z[b, t, 1:]), grid(z[b, t + 1, 1:])], dim=0))
    pairs = torch.stack(pair_maps)  # (B*(T-1), 2D, G, G), clip-major

    # 3. interactive block, 4. point head
    f = interactive_block(pairs, sd, p, cfg.interactive, bn_training, updates, margins)
    points = point_head(f, sd, p + "point_head.", bsz, bn_training, updates, margins)
    delta = sd[p + "delta"]

    # 5.-7. masks, aligned frames, pooled pair tokens
    aligned_clips, masks_pre, masks_cur, aux_terms = [], [], [], []
    for b in range(bsz):
        m_pre, m_cur = [], []
        for t in range(t_frames - 1):
            xp, yp, xc, yc = points[b, t, 0], points[b, t, 1], points[b, t, 2], points[b, t, 3]
            m_pre.append(alignment_mask(xp, yp, g, training, delta, kinks))
            m_cur.append(alignment_mask(xc, yc, g, training, delta, kinks))
        frames = []
        for t in range(t_frames):
            if t == 0:
                m = m_pre[0]
            elif t == t_frames - 1:
                m = m_cur[t_frames - 2]
            else:
                m = (m_pre[t] + m_cur[t - 1]) / 2
            patches = z[b, t, 1:] * m.reshape(g * g, 1)
            frames.append(torch.cat([z[b, t, :1], patches], dim=0))  # class token unmasked
        aligned_clips.append(torch.stack(frames))
        for t in range(t_frames - 1):
            s_pre = (z[b, t, 1:] * m_pre[t].reshape(g * g, 1)).sum(dim=0)
            s_cur = (z[b, t + 1, 1:] * m_cur[t].reshape(g * g, 1)).sum(dim=0)
            norms = torch.sqrt((s_pre * s_pre).sum()) * torch.sqrt((s_cur * s_cur).sum())
            cos = (s_pre * s_cur).sum() / norms                 # cosine over D
            aux_terms.append(1.0 - cos)
        masks_pre.append(torch.stack(m_pre))
        masks_cur.append(torch.stack(m_cur))
    aligned = torch.stack(aligned_clips)                  # (B, T, L, D)
    aux = torch.stack(aux_terms).mean()                   # mean over (B, T-1)

    # 8. temporal path
    c = f.shape[1]
    half = c // 2
    w3, b3 = sd[p + "temporal_conv.weight"], sd[p + "temporal_conv.bias"]  # (C/2, C/2, 3, 1, 1)
    temporal_clips = []
    for b in range(bsz):
        pre = [f[b * (t_frames - 1) + t, :half] for t in range(t_frames - 1)]
        cur = [f[b * (t_frames - 1) + t, half:] for t in range(t_frames - 1)]
        seq = []
        for t in range(t_frames):
            if t == 0:
                seq.append(pre[0])
            elif t == t_frames - 1:
                seq.append(cur[t_frames - 2])
            else:
                seq.append((pre[t] + cur[t - 1]) / 2)
        frames = []
        for t in range(t_frames):
            y = b3.view(half, 1, 1).expand(half, g, g)
            for k in range(3):                            # kernel over time, zero padding 1
                s = t - 1 + k
                if 0 <= s < t_frames:
                    y = y + torch.einsum("oc,chw->ohw", w3[:, :, k, 0, 0], seq[s])
            tokens = linear(y.reshape(half, g * g).t(), sd, p + "temporal_fc")  # (G*G, D)
            frames.append(torch.cat([z[b, t, :1], tokens], dim=0))           # class token = Z's
        temporal_clips.append(torch.stack(frames))
    temporal = torch.stack(temporal_clips)                # (B, T, L, D)

    # 9. block output
    align_term = linear(aligned, sd, prefix + "temporal_align_fc")
    skip_term = linear(temporal, sd, prefix + "temporal_skip_fc")
    x = x + align_term + skip_term
    flat = x.reshape(bsz * t_frames, l_tokens, d)
    flat = flat + clip_self_attention(layer_norm(flat, sd, prefix + "ln_1"), sd, prefix, cfg.heads)
    flat = flat + clip_mlp(layer_norm(flat, sd, prefix + "ln_2"), sd, prefix)

    if record is not None:
        record[prefix] = dict(z=z, f=f, points=points, masks_pre=torch.stack(masks_pre),
                              masks_cur=torch.stack(masks_cur), aligned=aligned, temporal=temporal,
                              aux=aux, align_term=align_term, skip_term=skip_term,
                              kink_margin=min(kinks), relu_margin=min(margins))
    return flat.reshape(bsz, t_frames, l_tokens, d), aux


# ---------------------------------------------------------------- the whole model (3.1-3.3)

def vision_tower(video, sd, cfg, training, updates, record=None, bn_training=None):
    """video (B, T, 3, H, W) -> frame features (B, T, E), patch tokens (B, T, L-1, D), aux."""
    bsz, t_frames = video.shape[:2]
    frames = video.reshape(bsz * t_frames, *video.shape[2:])
    x = F.conv2d(frames, sd["visual.conv1.weight"], stride=cfg.patch_size)  # (N, D, G, G), no bias
    n, d = x.shape[:2]
    x = x.reshape(n, d, -1).transpose(1, 2)                                 # row-major tokens
    cls = sd["visual.class_embedding"].view(1, 1, d).expand(n, 1, d)
    x = torch.cat([cls, x], dim=1) + sd["visual.positional_embedding"]
    x = layer_norm(x, sd, "visual.ln_pre").reshape(bsz, t_frames, -1, d)
    aux = 0
    for i in range(cfg.layers):
        x, block_aux = ila_block(x, sd, f"visual.transformer.resblocks.{i}.", cfg, training, updates, record,
                                 bn_training)
        aux = aux + block_aux
    features = layer_norm(x[:, :, 0], sd, "visual.ln_post") @ sd["visual.proj"]
    return features, x[:, :, 1:], aux


def integration_transformer(frame_features, sd, cfg):
    """(B, T, E) -> (B, E): + temporal position, CLIP block(s) with E/64 heads, residual, mean."""
    y = frame_features + sd["mit.positional_embedding"]
    for j in range(cfg.mit_layers):
        y = clip_block(y, sd, f"mit.resblocks.{j}.", cfg.embed_dim // 64)
    return (y + frame_features).mean(dim=1)


def encode_text(tokens, sd, cfg):
    """CLIP's text encoder: (K, context) ids -> (K, E), causal mask, feature at the argmax id."""
    k, ctx = tokens.shape
    x = sd["token_embedding.weight"][tokens] + sd["positional_embedding"]
    mask = torch.zeros(ctx, ctx, dtype=x.dtype)
    for i in range(ctx):
        for j in range(i + 1, ctx):
            mask[i, j] = float("-inf")
    for i in range(cfg.text_layers):
        x = clip_block(x, sd, f"transformer.resblocks.{i}.", cfg.text_heads, mask)
    x = layer_norm(x, sd, "ln_final")
    ends = tokens.argmax(dim=-1)
    return torch.stack([x[i, ends[i]] for i in range(k)]) @ sd["text_projection"]


def prompt_generator(text, memory, sd, cfg):
    """text (K, E), memory (B, M, E) -> refined text (B, K, E) = text + alpha * t."""
    heads = cfg.embed_dim // 64
    memory = layer_norm(memory, sd, "prompt_generator.norm")
    t = text.unsqueeze(0).expand(memory.shape[0], -1, -1)
    for j in range(cfg.prompt_layers):
        p = f"prompt_generator.layers.{j}."
        q = layer_norm(t, sd, p + "norm1")
        t = t + multi_head_attention(q, memory, sd[p + "cross_attn.q_proj.weight"], None,
                                     sd[p + "cross_attn.k_proj.weight"], None,
                                     sd[p + "cross_attn.v_proj.weight"], None,
                                     sd[p + "cross_attn.out_proj.weight"], sd[p + "cross_attn.out_proj.bias"],
                                     heads)
        h = layer_norm(t, sd, p + "norm3")
        t = t + linear(quick_gelu(linear(h, sd, p + "mlp.0")), sd, p + "mlp.3")
    return text + sd["prompt_generator.alpha"] * t


def cosine(a, b):
    return (a * b).sum(-1) / (torch.sqrt((a * a).sum(-1)) * torch.sqrt((b * b).sum(-1)))


def ila_model(video, sd, cfg, training, class_tokens=None, record=None, bn_training=None):
    """The whole model: video (B, T, 3, H, W) -> (logits (B, K), aux (), updates, extras).

    The SSv2 classifier's dropout is left out (identity): compare in training mode only with
    ``ssv2_dropout = 0``."""
    updates = {}
    features, patches, aux = vision_tower(video, sd, cfg, training, updates, record, bn_training)
    v = integration_transformer(features, sd, cfg)
    extras = dict(frame_features=features, patches=patches, video_feature=v)
    if cfg.dataset == "ssv2":
        v = v / torch.sqrt((v * v).sum(-1, keepdim=True))
        logits = linear(layer_norm(v, sd, "classifier.0"), sd, "classifier.2")  # dropout: eval identity
        return logits, aux, updates, extras
    visual = layer_norm(patches, sd, "prompt_visual_ln") @ sd["prompt_visual_proj"]  # (B, T, L-1, E)
    memory = visual.mean(dim=1)
    text = encode_text(class_tokens, sd, cfg)
    refined = prompt_generator(text, memory, sd, cfg)                              # (B, K, E)
    logits = torch.exp(sd["logit_scale"]) * cosine(v.unsqueeze(1), refined)
    extras.update(text_features=text, refined_text=refined)
    return logits, aux, updates, extras
