"""explain_text / explain_similarity: image-text and embedding similarity, each method against a hand-written oracle.

Random-weight open_clip (ViT and ModifiedResNet) and Hugging Face CLIP models built from small configs at
32-64 px; no weights are downloaded.
"""

from __future__ import annotations

import os
import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

os.environ.setdefault("HF_HUB_OFFLINE", "1")
open_clip = pytest.importorskip("open_clip")

from camlens.methods.legrad import ExplicitAttention  # noqa: E402
from camlens.text import available_text_methods, explain_similarity, explain_text  # noqa: E402

TEXTS = ["a dog", "a red square", "two cats"]


def _open_clip(vision: dict, seed: int) -> nn.Module:
    torch.manual_seed(seed)
    text = dict(context_length=16, vocab_size=49408, width=32, heads=2, layers=1)
    return open_clip.model.CLIP(32, vision, text).eval()


@pytest.fixture(scope="module")
def vit() -> nn.Module:
    return _open_clip(dict(layers=2, width=64, patch_size=8, image_size=32, head_width=16), 0)


@pytest.fixture(scope="module")
def resnet() -> nn.Module:
    return _open_clip(dict(layers=(1, 1, 1, 1), width=16, image_size=64, head_width=8), 1)


@pytest.fixture(scope="module")
def hf_clip() -> nn.Module:
    transformers = pytest.importorskip("transformers")
    transformers.logging.set_verbosity_error()
    torch.manual_seed(2)
    text = dict(vocab_size=50, hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                max_position_embeddings=16, bos_token_id=0, eos_token_id=1, pad_token_id=1)  # fmt: skip
    vision = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2, image_size=32,
                  patch_size=8)  # fmt: skip
    config = transformers.CLIPConfig(text_config=text, vision_config=vision, projection_dim=16)
    return transformers.CLIPModel(config).eval()


def _ids(count: int = 3, seed: int = 0) -> torch.Tensor:
    ids = torch.randint(2, 50, (count, 6), generator=torch.Generator().manual_seed(seed))
    ids[:, -1] = 1  # the end token
    return ids


def _oracle_gradcam(encode, module, x, text_embedding, prefix):
    """Grad-CAM of the cosine with one text, by hand: a forward hook and torch.autograd.grad."""
    kept = {}
    handle = module.register_forward_hook(lambda _m, _i, out: kept.setdefault("A", out))
    try:
        with torch.enable_grad():
            cosine = F.cosine_similarity(encode(x), text_embedding[None], dim=-1)
            (grad,) = torch.autograd.grad(cosine.sum(), kept["A"])
    finally:
        handle.remove()
    a = kept["A"].detach()
    if a.dim() == 3:  # tokens (B, N, C): drop the class token, lay the patches on their square grid
        side = int((a.shape[1] - prefix) ** 0.5)
        a, grad = (t[:, prefix:].reshape(t.shape[0], side, side, -1).permute(0, 3, 1, 2) for t in (a, grad))
    weights = grad.mean(dim=(2, 3))
    return (weights[:, :, None, None] * a).sum(1), cosine.detach()


@pytest.mark.parametrize("which", ["vit", "resnet"])
def test_gradcam_of_each_text_equals_a_hand_written_hook_open_clip(which, request):
    model = request.getfixturevalue(which)
    size = 32 if which == "vit" else 64
    x = torch.rand(2, 3, size, size, generator=torch.Generator().manual_seed(3))
    result = explain_text(model, x, TEXTS, ["gradcam", "gradcam++"])
    expected_layer = "visual.transformer.resblocks.1.ln_1" if which == "vit" else "visual.layer4"
    assert result.target_layer == expected_layer
    module = dict(model.named_modules())[expected_layer]
    with torch.no_grad():
        texts = model.encode_text(open_clip.tokenize(TEXTS, context_length=16))
    assert result.similarity.shape == (2, 3) and result.texts == tuple(TEXTS)
    for t in range(3):
        raw, cosine = _oracle_gradcam(model.encode_image, module, x, texts[t], prefix=1)
        torch.testing.assert_close(result.raw["gradcam"][:, t], raw, rtol=1e-4, atol=1e-6)
        torch.testing.assert_close(result.similarity[:, t], cosine, rtol=1e-5, atol=1e-6)
    assert result["gradcam"].shape == (2, 3, size, size)
    assert float(result["gradcam"].min()) >= 0 and float(result["gradcam"].max()) <= 1
    assert not torch.allclose(result.raw["gradcam"][:, 0], result.raw["gradcam"][:, 1])  # the text matters


def test_gradcam_of_each_text_equals_a_hand_written_hook_hugging_face(hf_clip):
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(4))
    ids = _ids()
    result = explain_text(hf_clip, x, ids, "gradcam")
    assert result.target_layer == "vision_model.encoder.layers.1.layer_norm1" and result.texts is None
    module = hf_clip.vision_model.encoder.layers[1].layer_norm1
    with torch.no_grad():
        texts = hf_clip.get_text_features(input_ids=ids).pooler_output

    def encode(images):
        return hf_clip.get_image_features(pixel_values=images).pooler_output

    for t in range(3):
        raw, cosine = _oracle_gradcam(encode, module, x, texts[t], prefix=1)
        torch.testing.assert_close(result.raw["gradcam"][:, t], raw, rtol=1e-4, atol=1e-6)
        torch.testing.assert_close(result.similarity[:, t], cosine, rtol=1e-5, atol=1e-6)


def test_siglip_is_explained_at_its_last_norm_over_every_token():
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(15)
    text = dict(vocab_size=50, hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                max_position_embeddings=16)  # fmt: skip
    vision = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2, image_size=32,
                  patch_size=8)  # fmt: skip
    model = transformers.SiglipModel(transformers.SiglipConfig(text_config=text, vision_config=vision)).eval()
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(16))
    ids = _ids(2)
    result = explain_text(model, x, ids, ["gradcam", "gscorecam"], topk=8)
    assert result.target_layer == "vision_model.post_layernorm"  # the attention-pooling head reads every token
    with torch.no_grad():
        texts = model.get_text_features(input_ids=ids).pooler_output

    def encode(images):
        return model.get_image_features(pixel_values=images).pooler_output

    for t in range(2):
        raw, _ = _oracle_gradcam(encode, model.vision_model.post_layernorm, x, texts[t], prefix=0)
        torch.testing.assert_close(result.raw["gradcam"][:, t], raw, rtol=1e-4, atol=1e-6)
    assert result.raw["gscorecam"].shape == (2, 2, 4, 4)


def test_all_texts_from_one_image_forward_and_one_text_forward(vit):
    calls = {"image": 0, "text": 0}
    counters = [
        vit.visual.register_forward_hook(lambda *_: calls.__setitem__("image", calls["image"] + 1)),
        vit.transformer.register_forward_hook(lambda *_: calls.__setitem__("text", calls["text"] + 1)),
    ]
    try:
        explain_text(vit, torch.rand(2, 3, 32, 32), TEXTS * 3, ["gradcam", "layercam", "hirescam"])
    finally:
        for handle in counters:
            handle.remove()
    assert calls == {"image": 1, "text": 1}


def test_the_model_is_left_as_found_also_when_a_call_raises(vit):
    vit.train()  # dropout-free here, but the flag must survive
    try:
        before = {k: v.clone() for k, v in vit.state_dict().items()}
        flags = [p.requires_grad for p in vit.parameters()]
        explain_text(vit, torch.rand(1, 3, 32, 32), TEXTS[:2], ["gradcam", "gradeclip", "gscorecam"], topk=4)
        with pytest.raises(ValueError, match="no layer named"):
            explain_text(vit, torch.rand(1, 3, 32, 32), TEXTS[:2], "gradcam", target_layer="visual.nope")
        assert vit.training and all(m.training for m in vit.modules())
        assert all(p.grad is None for p in vit.parameters())
        assert [p.requires_grad for p in vit.parameters()] == flags
        assert all(torch.equal(before[k], v) for k, v in vit.state_dict().items())
        assert not any(m._forward_hooks or m._forward_pre_hooks for m in vit.modules())
    finally:
        vit.eval()


class _TinyClip(nn.Module):
    """A hand-built CLIP: a conv image tower with global average pooling, a bag-of-words text tower."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(5)
        self.features = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.ReLU())
        self.project = nn.Linear(6, 4)
        self.words = nn.EmbeddingBag(10, 4)
        self.logit_scale = nn.Parameter(torch.tensor(2.0))

    def encode_image(self, x):
        return self.project(self.features(x).mean(dim=(2, 3)))

    def encode_text(self, ids):
        return self.words(ids)


def test_gscorecam_equals_the_papers_recipe_by_hand():
    model = _TinyClip().eval()
    x = torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(6))
    ids = torch.tensor([[1, 2], [3, 4]])
    k = 3
    result = explain_text(model, x, ids, ["gscorecam"], target_layer="features.1", topk=k)
    with torch.no_grad():
        texts = F.normalize(model.encode_text(ids), dim=-1)
        a = model.features(x)
    scale = float(model.logit_scale.detach().exp())
    for b in range(2):
        for t in range(2):
            leaf = a[b : b + 1].clone().requires_grad_(True)
            embedding = model.project(leaf.mean(dim=(2, 3)))
            (g,) = torch.autograd.grad(F.cosine_similarity(embedding, texts[t : t + 1]).sum(), leaf)
            top = g[0].mean(dim=(1, 2)).argsort(descending=True)[:k]
            scores = []
            for channel in top:
                mask = F.interpolate(a[b : b + 1, channel : channel + 1], size=(8, 8), mode="bilinear")
                span = mask.max() - mask.min()
                mask = (mask - mask.min()) / span if span > 0 else torch.zeros_like(mask)  # as the authors' code
                with torch.no_grad():
                    scores.append(
                        scale * F.cosine_similarity(model.encode_image(x[b : b + 1] * mask), texts[t : t + 1])
                    )
            weights = torch.softmax(torch.cat(scores), dim=0)
            expected = sum(w * a[b, c] for w, c in zip(weights, top, strict=True))
            torch.testing.assert_close(result.raw["gscorecam"][b, t], expected, rtol=1e-4, atol=1e-6)


def test_gradeclip_equals_the_papers_formula_on_a_hand_written_last_block(vit):
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(7))
    result = explain_text(vit, x, TEXTS, ["gradeclip"])
    visual = vit.visual
    block = visual.transformer.resblocks[-1]
    attention = block.attn
    kept = {}
    handle = block.register_forward_pre_hook(lambda _m, inputs: kept.setdefault("x", inputs[0]))
    try:
        with torch.no_grad():
            reference = vit.encode_image(x)
    finally:
        handle.remove()
    with torch.no_grad():
        texts = F.normalize(vit.encode_text(open_clip.tokenize(TEXTS, context_length=16)), dim=-1)
    x_in = kept["x"]
    heads, width = attention.num_heads, x_in.shape[-1]
    q, k, v = F.linear(block.ln_1(x_in), attention.in_proj_weight, attention.in_proj_bias).chunk(3, dim=-1)
    split = lambda t: t.unflatten(-1, (heads, width // heads)).transpose(1, 2)  # noqa: E731
    probabilities = torch.softmax(split(q) @ split(k).transpose(-2, -1) / (width // heads) ** 0.5, dim=-1)
    o = (probabilities @ split(v)).transpose(1, 2).flatten(2).detach().requires_grad_(True)  # before out_proj
    h = x_in + F.linear(o, attention.out_proj.weight, attention.out_proj.bias)
    h = h + block.mlp(block.ln_2(h))
    embedding = visual.ln_post(h)[:, 0] @ visual.proj
    torch.testing.assert_close(embedding, reference, rtol=1e-4, atol=1e-5)  # the hand-written block is the model's
    for t in range(3):
        (grad,) = torch.autograd.grad((F.normalize(embedding, dim=-1) @ texts[t]).sum(), o, retain_graph=True)
        w = grad[:, 0]  # (B, C) at the class token
        cosine = F.cosine_similarity(q[:, :1], k[:, 1:], dim=-1)  # (B, 16)
        low, high = cosine.amin(1, keepdim=True), cosine.amax(1, keepdim=True)
        expected = ((w[:, None] * v[:, 1:]).sum(-1) * (cosine - low) / (high - low)).reshape(2, 4, 4)
        torch.testing.assert_close(result.raw["gradeclip"][:, t], expected.detach(), rtol=1e-4, atol=1e-6)


def test_gradeclip_on_hugging_face_clip_and_refused_without_a_class_token(hf_clip, resnet):
    result = explain_text(hf_clip, torch.rand(1, 3, 32, 32), _ids(2), ["gradeclip", "gradcam"])
    assert result.raw["gradeclip"].shape == (1, 2, 4, 4) and bool(result.raw["gradeclip"].ne(0).any())
    with pytest.raises(ValueError, match="gradeclip needs a vision transformer"):
        explain_text(resnet, torch.rand(1, 3, 64, 64), TEXTS, "gradeclip")


def test_explicit_attention_records_nn_multihead_attention_probabilities():
    torch.manual_seed(8)
    attention = nn.MultiheadAttention(8, 2, batch_first=True).eval()
    x = torch.rand(2, 5, 8)
    plain = attention(x, x, x, need_weights=False)[0]
    mode = ExplicitAttention()
    with mode:
        out, weights = attention(x, x, x, need_weights=False)
    torch.testing.assert_close(out, plain)
    assert weights is None and len(mode.probabilities) == 1
    q, k, _ = F.linear(x, attention.in_proj_weight, attention.in_proj_bias).chunk(3, dim=-1)
    split = lambda t: t.unflatten(-1, (2, 4)).transpose(1, 2)  # noqa: E731
    expected = torch.softmax(split(q) @ split(k).transpose(-2, -1) / 2.0, dim=-1)
    torch.testing.assert_close(mode.probabilities[0], expected)


class _Similarity(nn.Module):
    """One text's cosine as a (B, 1) logit, for camlens.explain."""

    def __init__(self, model: nn.Module, text: torch.Tensor) -> None:
        super().__init__()
        self.model, self.text = model, text

    def forward(self, x):
        return F.cosine_similarity(self.model.encode_image(x), self.text[None], dim=-1)[:, None]


def test_legrad_of_each_text_equals_camlens_legrad_on_that_cosine(vit):
    import camlens

    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(9))
    result = explain_text(vit, x, TEXTS[:2], ["legrad"])
    with torch.no_grad():
        texts = vit.encode_text(open_clip.tokenize(TEXTS[:2], context_length=16))
    for t in range(2):
        wrapped = _Similarity(vit, texts[t])
        wrapped.patch_size, wrapped.num_prefix_tokens = 8, 1
        expected = camlens.explain(wrapped, x, "legrad", targets=0).raw["legrad"]
        torch.testing.assert_close(result.raw["legrad"][:, t], expected)
    assert bool(result.raw["legrad"].gt(0).any())


def test_explain_similarity_equals_a_hand_written_hook_on_a_trunk():
    from camlens.synthetic import TinyCNN

    torch.manual_seed(10)
    trunk = TinyCNN(width=8, depth=2)
    trunk.fc = nn.Identity()  # the pooled features are the embedding
    trunk.eval()
    x = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(11))
    reference = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(12))
    result = explain_similarity(trunk, x, reference, ["gradcam", "scorecam"])
    assert result.target_layer == "features"  # the map before the pooling
    with torch.no_grad():
        embedding = trunk(reference)[0]
    raw, cosine = _oracle_gradcam(trunk, trunk.features, x, embedding, prefix=0)
    torch.testing.assert_close(result.raw["gradcam"], raw, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(result.similarity, cosine, rtol=1e-5, atol=1e-6)
    assert result["scorecam"].shape == (2, 64, 64)
    by_embedding = explain_similarity(trunk, x, embedding, "gradcam")  # the same reference as a vector
    torch.testing.assert_close(by_embedding.raw["gradcam"], result.raw["gradcam"])


def test_explain_similarity_on_clip_and_dinov2_towers(vit, hf_clip):
    transformers = pytest.importorskip("transformers")
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(13))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a flat map for an image compared with itself is expected
        result = explain_similarity(vit, x, x[:1], "gradcam")
    assert result.target_layer == "visual.transformer.resblocks.1.ln_1"
    assert result.similarity[0] == pytest.approx(1.0, abs=1e-5) and result.raw["gradcam"].shape == (2, 4, 4)
    assert explain_similarity(hf_clip, x, torch.randn(16), "gradcam").target_layer == (
        "vision_model.encoder.layers.1.layer_norm1"
    )
    torch.manual_seed(14)
    config = transformers.Dinov2Config(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                                       image_size=32, patch_size=8)  # fmt: skip
    dino = transformers.Dinov2Model(config).eval()
    result = explain_similarity(dino, x, torch.rand(1, 3, 32, 32), ["gradcam", "legrad"])
    assert result.target_layer == "encoder.layer.1.norm1"
    assert result.explanation.layout.prefix_tokens == 1 and result.raw["legrad"].shape == (2, 4, 4)


def test_a_given_tokenizer_is_used(vit):
    seen = []

    def tokenizer(texts):
        seen.append(list(texts))
        return open_clip.tokenize(texts, context_length=16)

    x = torch.rand(1, 3, 32, 32)
    a = explain_text(vit, x, ["a dog", "a cat"], "gradcam", tokenizer=tokenizer)
    b = explain_text(vit, x, open_clip.tokenize(["a dog", "a cat"], context_length=16), "gradcam")
    with torch.no_grad():
        embeddings = vit.encode_text(open_clip.tokenize(["a dog", "a cat"], context_length=16))
    c = explain_text(vit, x, embeddings, "gradcam")  # the texts' embeddings given: the text tower does not run
    assert seen == [["a dog", "a cat"]]
    torch.testing.assert_close(a.raw["gradcam"], b.raw["gradcam"])
    torch.testing.assert_close(c.raw["gradcam"], b.raw["gradcam"])
    with pytest.raises(ValueError, match="embeddings have 5 dimensions"):
        explain_text(vit, x, torch.rand(2, 5), "gradcam")


def test_bad_input_is_one_clear_error(vit, hf_clip):
    x = torch.rand(1, 3, 32, 32)
    with pytest.raises(ValueError, match="unknown method 'gradcan'.*closest"):
        explain_text(vit, x, TEXTS, "gradcan")
    with pytest.raises(ValueError, match="texts is empty"):
        explain_text(vit, x, [], "gradcam")
    with pytest.raises(ValueError, match="need a tokenizer"):
        explain_text(hf_clip, x, ["a dog"], "gradcam")
    with pytest.raises(ValueError, match="explain_similarity"):
        explain_text(nn.Conv2d(3, 4, 3), x, ["a dog"], "gradcam")
    small = open_clip.model.CLIP(16, dict(layers=1, width=32, patch_size=8, image_size=32, head_width=16),
                                 dict(context_length=8, vocab_size=100, width=16, heads=2, layers=1))  # fmt: skip
    with pytest.raises(ValueError, match="vocabulary has 100"):
        explain_text(small, x, ["a dog"], "gradcam")
    with pytest.raises(ValueError, match="reference must be"):
        explain_similarity(vit, x, torch.rand(3, 3, 3), "gradcam")
    with pytest.raises(ValueError, match="reference has 7 dimensions"):
        explain_similarity(vit, x, torch.rand(7), "gradcam")
    assert {"gradcam", "gscorecam", "gradeclip", "legrad"} <= set(available_text_methods())


@pytest.mark.slow
@pytest.mark.parametrize(
    ("arch", "layer"), [("RN50", "visual.layer4"), ("ViT-B-32", "visual.transformer.resblocks.11.ln_1")]
)
def test_open_clips_own_rn50_and_vit_b_32_with_random_weights(arch, layer):
    """The issue's architectures as open_clip builds them (random weights, offline): the automatic layer and
    Grad-CAM of each prompt's cosine against the hand-written hook."""
    torch.manual_seed(0)
    model = open_clip.create_model(arch, pretrained=None).eval()
    tokenizer = open_clip.get_tokenizer(arch)
    x = torch.rand(1, 3, 224, 224, generator=torch.Generator().manual_seed(4))
    result = explain_text(model, x, TEXTS[:2], ["gradcam"], tokenizer=tokenizer)
    assert result.target_layer == layer
    module = dict(model.named_modules())[layer]
    with torch.no_grad():
        texts = model.encode_text(tokenizer(TEXTS[:2]))
    for t in range(2):
        raw, cosine = _oracle_gradcam(model.encode_image, module, x, texts[t], prefix=1)
        torch.testing.assert_close(result.raw["gradcam"][:, t], raw, rtol=1e-4, atol=1e-6)
        torch.testing.assert_close(result.similarity[:, t], cosine, rtol=1e-5, atol=1e-6)
