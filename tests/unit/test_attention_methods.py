"""Attention methods against hand-written references (the papers' formulas on explicit attention).

The reference ViT forward below is written from the model's weights (patch convolution, class token,
position embedding, pre-norm blocks with explicit ``softmax(q k^T / sqrt(d))``, GELU MLP, head), so the
attention probabilities, their gradients and the LRP relevances are computed here independently of
camlens's capture. On other architectures (DeiT, EVA, BEiT, DINOv2 with registers, torchvision, HF) the
reference attention is the models' own non-fused attention (timm's ``fused_attn = False`` path on a
copy, torchvision's ``need_weights``, HuggingFace's eager attention with ``output_attentions``).
"""

from __future__ import annotations

import copy
import os
import warnings

import pytest
import torch
import torch.nn.functional as F

import camlens
from camlens.methods.attention import attention_rollout, attnlrp, generic_attention, transformer_attribution
from helpers import assert_untouched, snapshot

timm = pytest.importorskip("timm")

ATTENTION_METHODS = ["attention_rollout", "generic_attention", "transformer_attribution", "attnlrp"]
TARGETS = [1, 3]


def _randomise(model: torch.nn.Module, seed: int, std: float = 0.5) -> torch.nn.Module:
    """Weights drawn large enough that attention is far from uniform (timm's init is nearly so)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=generator, dtype=p.dtype) * std)
    return model


@pytest.fixture(scope="module")
def vit():
    model = timm.create_model(
        "vit_tiny_patch16_224", pretrained=False, img_size=32, patch_size=8, depth=2, num_classes=5
    )
    return _randomise(model, 0).eval().double()


@pytest.fixture(scope="module")
def images():
    return torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(1), dtype=torch.float64)


# ---------------------------------------------------------------------------------------------------------
# the hand-written ViT


class Plain:
    """The ordinary operations (the reference forward's pieces)."""

    @staticmethod
    def norm(t, ln):
        return F.layer_norm(t, ln.normalized_shape, ln.weight, ln.bias, ln.eps)

    @staticmethod
    def gelu(t):
        return F.gelu(t)

    @staticmethod
    def mm(a, b):
        return a @ b


class AttnLRPGradient(Plain):
    """AttnLRP as a modified gradient (relevance = input x gradient): the normalisation's divisor held
    constant, GELU's gradient replaced by gelu(x)/x (the identity rule), and each factor of the two
    activation-activation matmuls getting half its gradient (the uniform rule)."""

    @staticmethod
    def norm(t, ln):
        centred = t - t.mean(-1, keepdim=True)
        std = (centred.pow(2).mean(-1, keepdim=True) + ln.eps).sqrt().detach()
        return centred / std * ln.weight + ln.bias

    @staticmethod
    def gelu(t):
        return t * (F.gelu(t) / t).detach()

    @staticmethod
    def mm(a, b):
        out = a @ b
        return 0.5 * out + 0.5 * out.detach()


def reference_forward(model, x, ops=Plain):
    """timm's ViT written out: logits and, per block, every intermediate (A requires grad)."""
    b = x.shape[0]
    embed = model.patch_embed.proj
    t = F.conv2d(x, embed.weight, embed.bias, stride=embed.stride).flatten(2).transpose(1, 2)
    t = torch.cat([model.cls_token.expand(b, -1, -1), t], dim=1) + model.pos_embed
    n, c = t.shape[1], t.shape[2]
    blocks = []
    for block in model.blocks:
        heads = block.attn.num_heads
        d = c // heads
        s = {"t_in": t}
        s["h"] = ops.norm(t, block.norm1)
        qkv = s["h"] @ block.attn.qkv.weight.T + block.attn.qkv.bias
        s["q"], s["k"], s["v"] = qkv.reshape(b, n, 3, heads, d).permute(2, 0, 3, 1, 4)
        s["logits"] = ops.mm(s["q"], s["k"].transpose(-2, -1)) * d**-0.5
        s["A"] = s["logits"].softmax(dim=-1)
        s["Av"] = ops.mm(s["A"], s["v"])
        s["o_in"] = s["Av"].transpose(1, 2).reshape(b, n, c)
        s["o"] = s["o_in"] @ block.attn.proj.weight.T + block.attn.proj.bias
        s["t_mid"] = t = t + s["o"]
        s["h2"] = ops.norm(t, block.norm2)
        s["f1"] = s["h2"] @ block.mlp.fc1.weight.T + block.mlp.fc1.bias
        s["g"] = ops.gelu(s["f1"])
        s["f2"] = s["g"] @ block.mlp.fc2.weight.T + block.mlp.fc2.bias
        t = t + s["f2"]
        blocks.append(s)
    final = {"t": t, "nt": ops.norm(t, model.norm)}
    final["c"] = final["nt"][:, 0]
    logits = final["c"] @ model.head.weight.T + model.head.bias
    return logits, blocks, final


def _attention_and_gradients(model, x, targets):
    logits, blocks, _ = reference_forward(model, x)
    attention = [s["A"] for s in blocks]
    score = logits[torch.arange(x.shape[0]), torch.tensor(targets)].sum()
    return attention, list(torch.autograd.grad(score, attention))


def rollout_reference(attention, fusion="mean", discard=0.0):
    b, _, n, _ = attention[0].shape
    eye = torch.eye(n, dtype=attention[0].dtype)
    joint = eye.repeat(b, 1, 1)
    for a in attention:
        fused = {"mean": a.mean(1), "max": a.max(1).values, "min": a.min(1).values}[fusion].detach().clone()
        for i in range(b):  # jacobgil/vit-explain's discard: the lowest entries, the class token's own kept
            flat = fused[i].flatten()
            lowest = flat.argsort()[: int(flat.numel() * discard)]
            flat[lowest[lowest != 0]] = 0
        step = 0.5 * fused + 0.5 * eye
        step = step / step.sum(-1, keepdim=True)
        joint = torch.stack([step[i] @ joint[i] for i in range(b)])
    return joint


def generic_reference(attention, grads):
    b, _, n, _ = attention[0].shape
    r = torch.eye(n, dtype=attention[0].dtype).repeat(b, 1, 1)
    for a, g in zip(attention, grads, strict=True):
        r = r + (g * a).clamp(min=0).mean(dim=1) @ r
    return r


def _safe_divide(a, b):
    den = b.clamp(min=1e-9) + b.clamp(max=1e-9)
    den = den + den.eq(0).type(den.type()) * 1e-9
    return a / den * b.ne(0).type(b.type())


def _zplus(x, weight, r):
    """Chefer et al.'s Linear.relprop with alpha = 1: positive weights on positive inputs and negative
    weights on negative inputs, no bias."""
    pw, nw, px, nx = weight.clamp(min=0), weight.clamp(max=0), x.clamp(min=0), x.clamp(max=0)
    s = _safe_divide(r, px @ pw.T + nx @ nw.T)
    return px * (s @ pw) + nx * (s @ nw)


def _local(f, x, r):
    """RelProp's default: x * J_f(x)^T (R / f(x))."""
    x = x.detach().requires_grad_(True)
    z = f(x)
    (g,) = torch.autograd.grad(z, x, _safe_divide(r, z))
    return x.detach() * g


def _add(a, b, r):
    """Chefer et al.'s Add.relprop, per image."""
    s = _safe_divide(r, a + b)
    ra, rb = a * s, b * s
    dims = tuple(range(1, r.dim()))
    sa, sb, total = ra.sum(dims, keepdim=True), rb.sum(dims, keepdim=True), r.sum(dims, keepdim=True)
    fa = _safe_divide(sa.abs(), sa.abs() + sb.abs()) * total
    fb = _safe_divide(sb.abs(), sa.abs() + sb.abs()) * total
    return ra * _safe_divide(fa, sa), rb * _safe_divide(fb, sb)


def _matmul(a, b, r):
    """Gradient times input on both factors of a @ b, halved (Chefer et al.'s attention relprop)."""
    s = _safe_divide(r, a @ b)
    return a * (s @ b.transpose(-2, -1)) / 2, b * (a.transpose(-2, -1) @ s) / 2


def transformer_attribution_reference(model, x, targets):
    with torch.no_grad():
        logits, blocks, final = reference_forward(model, x)
    n_classes = logits.shape[1]
    r = F.one_hot(torch.tensor(targets), n_classes).to(x.dtype)
    r_c = _zplus(final["c"], model.head.weight, r)
    r_nt = torch.zeros_like(final["nt"])
    r_nt[:, 0] = r_c
    ln = model.norm
    r_t = _local(lambda t: F.layer_norm(t, ln.normalized_shape, ln.weight, ln.bias, ln.eps), final["t"], r_nt)
    relevances = []
    for block, s in zip(reversed(model.blocks), reversed(blocks), strict=True):
        b, heads, n, d = s["q"].shape
        r_mid, r_f2 = _add(s["t_mid"], s["f2"], r_t)
        r_g = _zplus(s["g"], block.mlp.fc2.weight, r_f2)
        r_f1 = _local(F.gelu, s["f1"], r_g)
        r_h2 = _zplus(s["h2"], block.mlp.fc1.weight, r_f1)
        ln2 = block.norm2
        r_mid = r_mid + _local(lambda t, ln=ln2: F.layer_norm(t, ln.normalized_shape, ln.weight, ln.bias, ln.eps),
                               s["t_mid"], r_h2)  # fmt: skip
        r_in, r_o = _add(s["t_in"], s["o"], r_mid)
        r_av = _zplus(s["o_in"], block.attn.proj.weight, r_o).reshape(b, n, heads, d).transpose(1, 2)
        r_a, r_v = _matmul(s["A"], s["v"], r_av)
        relevances.insert(0, r_a)
        r_logits = _local(lambda t: t.softmax(-1), s["logits"], r_a)
        scale = d**-0.5
        r_q, r_kt = _matmul(s["q"] * scale, s["k"].transpose(-2, -1), r_logits)
        r_qkv = torch.stack([r_q, r_kt.transpose(-2, -1), r_v]).permute(1, 3, 0, 2, 4).reshape(b, n, 3 * heads * d)
        r_h = _zplus(s["h"], block.attn.qkv.weight, r_qkv)
        ln1 = block.norm1
        r_t = r_in + _local(lambda t, ln=ln1: F.layer_norm(t, ln.normalized_shape, ln.weight, ln.bias, ln.eps),
                            s["t_in"], r_h)  # fmt: skip
    attention, grads = _attention_and_gradients(model, x, targets)
    n = attention[0].shape[-1]
    eye = torch.eye(n, dtype=x.dtype)
    joint = eye.repeat(x.shape[0], 1, 1)
    for g, r_a in zip(grads, relevances, strict=True):
        joint = (eye + (g * r_a).clamp(min=0).mean(dim=1)) @ joint
    return joint


def attnlrp_reference(model, x, targets, patch=8):
    leaf = x.clone().requires_grad_(True)
    logits, _, _ = reference_forward(model, leaf, AttnLRPGradient)
    score = logits[torch.arange(x.shape[0]), torch.tensor(targets)].sum()
    (g,) = torch.autograd.grad(score, leaf)
    pixels = (leaf * g).detach().sum(dim=1)
    b, h, w = pixels.shape
    return pixels.reshape(b, h // patch, patch, w // patch, patch).sum(dim=(2, 4))


def _patches(joint):
    return joint[:, 0, 1:].reshape(joint.shape[0], 4, 4)


# ---------------------------------------------------------------------------------------------------------
# the oracles on the tiny timm ViT


def test_the_reference_forward_is_the_model(vit, images):
    logits, _, _ = reference_forward(vit, images)
    torch.testing.assert_close(logits, vit(images), rtol=1e-9, atol=1e-9)
    logits, _, _ = reference_forward(vit, images, AttnLRPGradient)
    torch.testing.assert_close(logits, vit(images), rtol=1e-9, atol=1e-9)  # the rules change no value


@pytest.mark.parametrize("fusion,discard", [("mean", 0.0), ("max", 0.0), ("min", 0.0), ("mean", 0.5)])
def test_attention_rollout_is_the_paper_formula(vit, images, fusion, discard):
    attention, _ = _attention_and_gradients(vit, images, TARGETS)
    expected = _patches(rollout_reference(attention, fusion, discard))
    before = snapshot(vit)
    got = attention_rollout(vit, images, head_fusion=fusion, discard_ratio=discard)
    assert_untouched(vit, before)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-9)
    assert (got.flatten(1).amax(1) > 2 * got.flatten(1).amin(1)).all()  # not a constant map


def test_rollout_options_change_the_map_and_bad_ones_are_refused(vit, images):
    mean = attention_rollout(vit, images)
    assert not torch.allclose(mean, attention_rollout(vit, images, head_fusion="max"))
    assert not torch.allclose(mean, attention_rollout(vit, images, discard_ratio=0.9))
    with pytest.raises(ValueError, match="head_fusion"):
        attention_rollout(vit, images, head_fusion="median")
    with pytest.raises(ValueError, match="discard_ratio"):
        camlens.explain(vit, images, ["attention_rollout"], discard_ratio=1.0)


def test_generic_attention_is_the_paper_formula(vit, images):
    attention, grads = _attention_and_gradients(vit, images, TARGETS)
    expected = _patches(generic_reference(attention, grads))
    before = snapshot(vit)
    got = generic_attention(vit, images, TARGETS)
    assert_untouched(vit, before)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-9)
    other = generic_attention(vit, images, [0, 0])
    assert not torch.allclose(got, other)  # class dependent


def test_transformer_attribution_is_cheffers_lrp_rollout(vit, images):
    expected = _patches(transformer_attribution_reference(vit, images, TARGETS))
    before = snapshot(vit)
    got = transformer_attribution(vit, images, TARGETS)
    assert_untouched(vit, before)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-9)
    assert got.flatten(1).std(dim=1).gt(0).all()


def test_attnlrp_is_the_modified_gradient_times_input(vit, images):
    expected = attnlrp_reference(vit, images, TARGETS)
    before = snapshot(vit)
    got = attnlrp(vit, images, TARGETS)
    assert_untouched(vit, before)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-9)
    assert (got > 0).any() and (got < 0).any()  # signed relevance
    # not the plain gradient x input: the rules matter on this model
    leaf = images.clone().requires_grad_(True)
    logits, _, _ = reference_forward(vit, leaf)
    (g,) = torch.autograd.grad(logits[torch.arange(2), torch.tensor(TARGETS)].sum(), leaf)
    plain = (leaf * g).detach().sum(1).reshape(2, 4, 8, 4, 8).sum(dim=(2, 4))
    assert not torch.allclose(got, plain, rtol=1e-3, atol=1e-6)


def test_through_explain_the_maps_are_the_functions(vit, images):
    before = snapshot(vit)
    result = camlens.explain(vit, images, ATTENTION_METHODS, targets=TARGETS)
    assert_untouched(vit, before)
    torch.testing.assert_close(result.raw["attention_rollout"], attention_rollout(vit, images))
    torch.testing.assert_close(result.raw["generic_attention"], generic_attention(vit, images, TARGETS))
    torch.testing.assert_close(result.raw["transformer_attribution"], transformer_attribution(vit, images, TARGETS))
    torch.testing.assert_close(result.raw["attnlrp"], attnlrp(vit, images, TARGETS))
    for method in ATTENTION_METHODS:
        assert result[method].shape == (2, 32, 32)


def test_a_network_without_attention_is_refused_and_left_as_found():
    cnn = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1),
                              torch.nn.Flatten(), torch.nn.Linear(4, 3)).eval()  # fmt: skip
    before = snapshot(cnn)
    x = torch.rand(1, 3, 16, 16)
    for method in ATTENTION_METHODS:
        with pytest.raises(ValueError, match="no attention"):
            camlens.explain(cnn, x, [method])
        assert_untouched(cnn, before)


def test_an_operation_without_an_lrp_rule_is_refused(vit, images):
    gated = copy.deepcopy(vit)
    gated.blocks[1].mlp.act = _Square()
    before = snapshot(gated)
    with pytest.raises(ValueError, match="no LRP rule for the operation 'pow'"):
        attnlrp(gated, images, TARGETS)
    with pytest.raises(ValueError, match="no LRP rule for the operation 'pow'"):
        transformer_attribution(gated, images, TARGETS)
    assert_untouched(gated, before)


class _Square(torch.nn.Module):
    def forward(self, t):
        return t.pow(2)


# ---------------------------------------------------------------------------------------------------------
# the other architectures: reference attention from the models' own non-fused attention


def _timm(name, **kwargs):
    model = timm.create_model(name, pretrained=False, num_classes=5, depth=2, **kwargs)
    return _randomise(model, 2, std=0.2).eval()


TIMM_ARCHS = {
    "deit_distilled": lambda: _timm("deit_tiny_distilled_patch16_224", img_size=32, patch_size=8),
    "eva02": lambda: _timm("eva02_tiny_patch14_224", img_size=28),
    "beit": lambda: _timm("beit_base_patch16_224", img_size=32, patch_size=8, embed_dim=32, num_heads=2),
    "dinov2_registers": lambda: _timm("vit_small_patch14_reg4_dinov2", img_size=28, embed_dim=32, num_heads=2),
}


def _timm_reference_attention(model, x, targets):
    """Each block's probabilities from timm's non-fused path (a copy with ``fused_attn = False``), read at
    the attention dropout's output, with the score's gradient there."""
    copy_ = copy.deepcopy(model)
    recorded = []
    for block in copy_.blocks:
        block.attn.fused_attn = False
        block.attn.attn_drop.register_forward_hook(lambda m, i, o: recorded.append(o) or o)
    logits = copy_(x)
    score = logits[torch.arange(x.shape[0]), torch.tensor(targets)].sum()
    return recorded, list(torch.autograd.grad(score, recorded))


@pytest.mark.parametrize("arch", list(TIMM_ARCHS))
def test_rollout_and_generic_attention_on_timm_families(arch):
    model = TIMM_ARCHS[arch]()
    size = model.patch_embed.img_size
    x = torch.rand(2, 3, *size, generator=torch.Generator().manual_seed(3))
    attention, grads = _timm_reference_attention(model, x, TARGETS)
    prefix, grid = model.num_prefix_tokens, model.patch_embed.grid_size
    before = snapshot(model)
    lrp = ["attnlrp"] if arch == "eva02" else ["transformer_attribution", "attnlrp"]  # eva02: a gated MLP
    result = camlens.explain(model, x, ["attention_rollout", "generic_attention", *lrp], targets=TARGETS)
    assert_untouched(model, before)
    for got, joint in (
        (result.raw["attention_rollout"], rollout_reference(attention)),
        (result.raw["generic_attention"], generic_reference(attention, grads)),
    ):
        torch.testing.assert_close(got, joint[:, 0, prefix:].reshape(2, *grid), rtol=1e-4, atol=1e-7)
    for method in lrp:
        assert result.raw[method].shape == (2, *grid) and torch.isfinite(result.raw[method]).all(), method
        assert result[method].shape == (2, *size)


def test_eva02s_gated_mlp_has_no_rule_in_transformer_attribution():
    model = TIMM_ARCHS["eva02"]()
    before = snapshot(model)
    with pytest.raises(ValueError, match="of two activations"):
        transformer_attribution(model, torch.rand(1, 3, 28, 28), [0])
    assert_untouched(model, before)


def test_torchvision_vit_through_multihead_attention():
    torchvision = pytest.importorskip("torchvision")
    torch.manual_seed(4)
    model = torchvision.models.VisionTransformer(
        image_size=32, patch_size=8, num_layers=2, num_heads=2, hidden_dim=16, mlp_dim=32, num_classes=5
    )
    model = _randomise(model, 4, std=0.3).eval()
    x = torch.rand(2, 3, 32, 32)
    attention = []
    tokens = model._process_input(x)
    tokens = torch.cat([model.class_token.expand(2, -1, -1), tokens], dim=1) + model.encoder.pos_embedding
    for layer in model.encoder.layers:  # the reference: need_weights=True is MultiheadAttention's explicit path
        h = layer.ln_1(tokens)
        out, weights = layer.self_attention(h, h, h, need_weights=True, average_attn_weights=False)
        attention.append(weights)
        tokens = tokens + out
        tokens = tokens + layer.mlp(layer.ln_2(tokens))
    torch.testing.assert_close(model.heads(model.encoder.ln(tokens)[:, 0]), model(x))
    before = snapshot(model)
    result = camlens.explain(model, x, [*ATTENTION_METHODS, "legrad"], targets=TARGETS)
    assert_untouched(model, before)
    expected = rollout_reference(attention)[:, 0, 1:].reshape(2, 4, 4)
    torch.testing.assert_close(result.raw["attention_rollout"], expected, rtol=1e-4, atol=1e-7)
    for method in ("generic_attention", "transformer_attribution", "attnlrp", "legrad"):
        assert result.raw[method].shape == (2, 4, 4) and torch.isfinite(result.raw[method]).all(), method


@pytest.mark.slow  # importing transformers alone takes seconds
def test_huggingface_vit_with_sdpa_attention():
    transformers = pytest.importorskip("transformers")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    config = transformers.ViTConfig(image_size=32, patch_size=8, num_hidden_layers=2, hidden_size=16,
                                    num_attention_heads=2, intermediate_size=32, num_labels=5)  # fmt: skip
    torch.manual_seed(5)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sdpa = transformers.ViTForImageClassification._from_config(copy.deepcopy(config), attn_implementation="sdpa")
        eager = transformers.ViTForImageClassification._from_config(copy.deepcopy(config), attn_implementation="eager")
    sdpa, eager = sdpa.eval(), eager.eval()
    _randomise(sdpa, 5, std=0.3)
    eager.load_state_dict(sdpa.state_dict())
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        attention = list(eager(pixel_values=x, output_attentions=True).attentions)
    before = snapshot(sdpa)
    result = camlens.explain(sdpa, x, ATTENTION_METHODS, targets=TARGETS)
    assert_untouched(sdpa, before)
    expected = rollout_reference(attention)[:, 0, 1:].reshape(2, 4, 4)
    torch.testing.assert_close(result.raw["attention_rollout"], expected, rtol=1e-4, atol=1e-7)
    for method in ATTENTION_METHODS[1:]:
        assert result.raw[method].shape == (2, 4, 4) and torch.isfinite(result.raw[method]).all(), method
    with pytest.raises(ValueError, match="no attention"):  # eager attention never calls the fused kernel
        camlens.explain(eager, x, ["attention_rollout"])


# ---------------------------------------------------------------------------------------------------------
# hybrids: LeGrad and the attention methods refuse what their definitions exclude


HYBRIDS = [
    ("coatnet_nano_rw_224", {"img_size": 64}),
    ("mobilevit_xxs", {}),
    ("tiny_vit_5m_224", {}),
    ("pvt_v2_b0", {}),
]


@pytest.mark.slow
@pytest.mark.parametrize("name,kwargs", HYBRIDS, ids=[h[0] for h in HYBRIDS])
def test_hybrids_are_refused_by_legrad_and_the_attention_methods(name, kwargs):
    model = timm.create_model(name, pretrained=False, num_classes=5, **kwargs).eval()
    before = snapshot(model)
    x = torch.rand(1, 3, 64, 64)
    refusal = "defined for plain vision transformers.*as in Swin, PVT"
    with pytest.raises(ValueError, match=f"legrad is {refusal}"):  # it crashed in torch.stack or a reshape
        camlens.explain(model, x, ["legrad"])
    assert_untouched(model, before)
    for method in (attention_rollout, lambda m, x: attnlrp(m, x, [0])):  # the attention methods share the check
        with pytest.raises(ValueError, match=refusal):
            method(model, x)
        assert_untouched(model, before)
