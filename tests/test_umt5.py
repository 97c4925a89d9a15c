"""UMT5 encoder (Wan2.1's text encoder) against transformers ``UMT5EncoderModel`` (float32, tiny random config), Wan's
original ``.pth`` layout, the full-size key lists, the T5 tokenizer path and diffusers' ``WanPipeline`` prompt
embedding."""

from __future__ import annotations

import re
import types
import warnings

import numpy as np
import pytest
from flax import nnx

import converters
from converters import umt5 as conv
from converters.loader import FAMILIES
from sana_jax.errors import CheckpointError, ConfigError, InputError
from sana_jax.models.umt5 import UMT5Config, UMT5Encoder, relative_position_buckets
from sana_jax.text import wan_prompt
from sana_jax.text.tokenizer import Tokenizer
from tests.parity import check, perturb, save, state_dict_numpy, torch, torch_call
from tests.released_keys import KEYS, Shapes, read

transformers = pytest.importorskip("transformers")

TINY = dict(vocab_size=300, d_model=64, d_kv=16, d_ff=96, num_layers=3, num_heads=4,
            relative_attention_num_buckets=32, relative_attention_max_distance=128, feed_forward_proj="gated-gelu")
LENGTH = 150  # > max_distance: the logarithmic bins and the last (clamped) bucket are all used
FULL_PARAMS = 5_680_910_336
#: the text_encoder/config.json of Wan-AI/Wan2.1-T2V-*-Diffusers (google/umt5-xxl), keys that matter here
XXL_CONFIG = {"architectures": ["UMT5EncoderModel"], "model_type": "umt5", "d_model": 4096, "d_kv": 64,
              "num_heads": 64, "d_ff": 10240, "num_layers": 24, "num_decoder_layers": 24, "vocab_size": 256384,
              "relative_attention_num_buckets": 32, "relative_attention_max_distance": 128,
              "feed_forward_proj": "gated-gelu", "dense_act_fn": "gelu_new", "is_gated_act": True,
              "layer_norm_epsilon": 1e-6, "dropout_rate": 0.1, "pad_token_id": 0, "eos_token_id": 1,
              "tie_word_embeddings": False, "scalable_attention": True, "torch_dtype": "float32"}


def to_original(state: dict) -> dict:
    """transformers names → Wan ``T5Encoder`` names, written out from the table of Wan's ``wan/modules/t5.py``."""
    table = [(r"shared\.weight", "token_embedding.weight"),
             (r"encoder\.block\.(\d+)\.layer\.0\.layer_norm\.weight", r"blocks.\1.norm1.weight"),
             (r"encoder\.block\.(\d+)\.layer\.0\.SelfAttention\.([qkvo])\.weight", r"blocks.\1.attn.\2.weight"),
             (r"encoder\.block\.(\d+)\.layer\.0\.SelfAttention\.relative_attention_bias\.weight",
              r"blocks.\1.pos_embedding.embedding.weight"),
             (r"encoder\.block\.(\d+)\.layer\.1\.layer_norm\.weight", r"blocks.\1.norm2.weight"),
             (r"encoder\.block\.(\d+)\.layer\.1\.DenseReluDense\.wi_0\.weight", r"blocks.\1.ffn.gate.0.weight"),
             (r"encoder\.block\.(\d+)\.layer\.1\.DenseReluDense\.wi_1\.weight", r"blocks.\1.ffn.fc1.weight"),
             (r"encoder\.block\.(\d+)\.layer\.1\.DenseReluDense\.wo\.weight", r"blocks.\1.ffn.fc2.weight"),
             (r"encoder\.final_layer_norm\.weight", "norm.weight")]
    out = {}
    for name, value in state.items():
        if name == "encoder.embed_tokens.weight":
            continue
        new = next(re.sub(p + r"\Z", r, name) for p, r in table if re.fullmatch(p, name))
        out[new] = value
    return out


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """A random-weight transformers encoder (norm weights moved off one) and its save_pretrained folder."""
    torch.manual_seed(0)
    ref = perturb(transformers.UMT5EncoderModel(transformers.UMT5Config(**TINY)), 0.5, seed=1)
    return ref, save(ref, tmp_path_factory.mktemp("umt5"))


def _inputs():
    ids = np.random.default_rng(1).integers(0, TINY["vocab_size"], (2, LENGTH))
    mask = np.ones((2, LENGTH), np.int64)
    mask[1, 37:] = 0  # right padding (the Wan tokenizer's); row 0 full
    return ids, mask


def _want(ref, ids, mask):
    return torch_call(ref, input_ids=ids, attention_mask=mask).last_hidden_state.numpy()


def test_buckets_match_transformers(reference):
    ref, _ = reference
    attn = ref.encoder.block[0].layer[0].SelfAttention
    ours = relative_position_buckets(700, 700, 32, 128)
    rel = torch.arange(700)[None, :] - torch.arange(700)[:, None]
    np.testing.assert_array_equal(ours, attn._relative_position_bucket(rel).numpy())


def test_matches_transformers_and_jit(reference):
    ref, folder = reference
    model = converters.load(folder)
    assert model.config == UMT5Config(**TINY)
    ids, mask = _inputs()
    want = _want(ref, ids, mask)
    check(model(ids, mask), want, tol=1e-5, what="umt5 eager, padded batch")
    check(wan_prompt.prompt_encoder(model)(ids, mask), want * (np.arange(LENGTH) < mask.sum(1)[:, None])[..., None],
          tol=1e-5, what="umt5 jitted prompt encoder")
    np.testing.assert_array_equal(conv.export(model)["shared.weight"], state_dict_numpy(ref)["shared.weight"])


def test_export_round_trip(reference, tmp_path):
    """``export_safetensors`` / ``save_orbax`` write folders that load back to the same encoder."""
    _, folder = reference
    model = converters.load(folder)
    ids, mask = _inputs()
    want = np.asarray(model(ids, mask))
    for again in (converters.load(converters.export_safetensors(model, tmp_path / "st")),
                  converters.load(converters.save_orbax(model, tmp_path / "orbax"))):
        assert again.config == model.config
        np.testing.assert_array_equal(np.asarray(again(ids, mask)), want)


def test_wan_original_layout(reference, tmp_path):
    """Wan's ``.pth`` names (written with torch.save, read without torch): detected, configured from shapes, and
    loaded to the same parameters as the transformers layout."""
    ref, folder = reference
    original = to_original(state_dict_numpy(ref))
    path = tmp_path / "models_t5_umt5-xxl-enc-bf16.pth"
    torch.save({k: torch.from_numpy(v) for k, v in original.items()}, path)
    model = converters.load(path)
    assert model.config == UMT5Config(**TINY)
    ids, mask = _inputs()
    np.testing.assert_array_equal(np.asarray(model(ids, mask)), np.asarray(converters.load(folder)(ids, mask)))
    exported = conv.export_original(model)
    assert exported.keys() == original.keys()
    for k in original:
        np.testing.assert_array_equal(exported[k], original[k], err_msg=k)


def test_tied_decoder_and_bad_layouts(reference):
    """Only the tied ``encoder.embed_tokens.weight``; a full encoder–decoder state dict; damaged ones."""
    ref, _ = reference
    state = state_dict_numpy(ref)
    ids, mask = _inputs()
    want = _want(ref, ids, mask)
    cfg = UMT5Config(**TINY)
    only_tied = {k: v for k, v in state.items() if k != "shared.weight"}
    check(conv.load(only_tied, cfg, where="tied")(ids, mask), want, tol=1e-5, what="only the tied embedding")
    full = transformers.UMT5ForConditionalGeneration(transformers.UMT5Config(**TINY, num_decoder_layers=1))
    full_state = {k: v for k, v in state_dict_numpy(full).items() if not k.startswith(("encoder.", "shared."))}
    full_state.update(state)
    assert any(k.startswith("decoder.") for k in full_state) and "lm_head.weight" in full_state
    check(conv.load(full_state, conv.config_from_checkpoint(full_state, "full"), where="full")(ids, mask), want,
          tol=1e-5, what="UMT5ForConditionalGeneration layout")
    missing = {k: v for k, v in state.items() if "block.2.layer.1.DenseReluDense.wo" not in k}
    with pytest.raises(CheckpointError, match=r"not in the checkpoint: layers.mlp.wo.kernel layers \[2\]"):
        conv.load(missing, cfg, where="bad")
    with pytest.raises(CheckpointError, match="differ in shape"):
        conv.as_hf({**state, "encoder.embed_tokens.weight": np.zeros((3, 64), np.float32)})
    with pytest.raises(CheckpointError, match="not a UMT5 encoder"):
        conv.as_hf({"x.weight": np.zeros(2)}, "nothing")


def test_full_size_keys_match_released_lists():
    cfg = UMT5Config.from_diffusers(XXL_CONFIG, "text_encoder/config.json")
    assert cfg == UMT5Config()
    hf, original = read("umt5_xxl_encoder.txt"), read("umt5_xxl_wan_original.txt")
    assert conv.expected_tensors(cfg) == hf and len(hf) == 243
    assert conv.expected_original_tensors(cfg) == original and len(original) == 242
    unique = conv.expected_tensors(cfg, tied=False)
    assert sum(int(np.prod(s)) for s in unique.values()) == FULL_PARAMS
    # the released name map (each line 'wan_name (shape) -> transformers name') is the converter's
    lines = (KEYS / "umt5_xxl_wan_original.txt").read_text().splitlines()[1:]
    pairs = {line.split(" ", 1)[0]: line.rsplit(" -> ", 1)[1] for line in lines}
    assert to_original({v: 0 for v in pairs.values()}) == {k: 0 for k in pairs}
    renamed = conv.as_hf(Shapes(original), "wan")
    assert {k: renamed.shape(k) for k in renamed} == unique
    for layout in (Shapes(hf), Shapes(original)):  # configuration from the shapes alone
        assert conv.config_from_checkpoint(layout, "shapes") == cfg
        assert [f.FAMILY for f in FAMILIES.values() if f.detect(layout)] == ["umt5"]


def test_config_reading_and_errors():
    cfg = UMT5Config(**TINY)
    written = cfg.to_diffusers()
    assert UMT5Config.from_diffusers(written) == cfg
    theirs = transformers.UMT5Config(**{k: v for k, v in written.items() if not k.startswith("_")})
    assert all(getattr(theirs, k) == v for k, v in TINY.items()) and theirs.dense_act_fn == "gelu_new"
    for bad, match in [({"feed_forward_proj": "relu"}, "feed_forward_proj"), ({"model_type": "t5"}, "classic T5"),
                       ({"architectures": ["T5EncoderModel"]}, "not a UMT5"), ({"dense_act_fn": "relu"}, "relu"),
                       ({"relative_attention_num_buckets": 6}, "multiple of 4"), ({"d_kv": 0}, "d_kv")]:
        with pytest.raises(ConfigError, match=match):
            UMT5Config.from_diffusers({**XXL_CONFIG, **bad}, "cfg.json")
    tiny = UMT5Encoder(cfg, rngs=nnx.Rngs(0))
    with pytest.raises(InputError, match="attention_mask shape"):
        tiny(np.zeros((2, 5), np.int32), np.ones((2, 4)))
    with pytest.raises(InputError, match=r"\[0, 300\)"):
        tiny(np.full((1, 3), 300))


# -- tokenizer and prompt embedding ------------------------------------------------------------------------------

PIECES = ["▁a", "▁cat", "▁surf", "ing", "▁on", "▁the", "▁wave", "▁big", "▁blue", "▁&", "▁", "a", "c", "t", "s", "u",
          "r", "f", "i", "n", "g", "o", "e", "h", "w", "v", "b", "l", "色", "调", "艳", "丽"]
PROMPTS = ["  a cat   surfing\ton the\n big blue wave ", "blue &amp;amp; the wave", "色调艳丽，the cat",
           "a cat surfing on the big blue wave a cat surfing on the big blue wave a cat surfing"]


@pytest.fixture(scope="module")
def t5_tokenizer(tmp_path_factory):
    """A tiny T5 (Unigram, ``</s>`` appended) tokenizer built by transformers' own T5 class, saved as a folder."""
    vocab = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0)] + [(p, -1.0 - i / 10) for i, p in enumerate(PIECES)]
    tok = transformers.T5TokenizerFast(vocab=vocab, extra_ids=0)
    folder = tmp_path_factory.mktemp("umt5_tokenizer")
    tok.save_pretrained(folder)
    return tok, folder


def test_prompt_clean_matches_diffusers():
    from diffusers.pipelines.wan.pipeline_wan import prompt_clean

    for text in [*PROMPTS, "\u3000a\u00a0b\u2028c  ", "&lt;b&gt; &amp;lt;", ""]:
        assert wan_prompt.prompt_clean(text) == prompt_clean(text), repr(text)


def test_tokenizer_matches_transformers(t5_tokenizer):
    tok, folder = t5_tokenizer
    ours = Tokenizer.from_folder(folder)
    assert (ours.pad_id, ours.eos_id) == (0, 1)
    reloaded = transformers.AutoTokenizer.from_pretrained(folder)
    cleaned = [wan_prompt.prompt_clean(p) for p in PROMPTS]
    for ref in (tok, reloaded):
        want = ref(cleaned, padding="max_length", max_length=16, truncation=True, add_special_tokens=True)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the last prompt is truncated (ours warns)
            ids, mask = wan_prompt.tokenize(ours, PROMPTS, 16)
        np.testing.assert_array_equal(ids, want["input_ids"])
        np.testing.assert_array_equal(mask, want["attention_mask"])
    assert ids[3, -1] == 1 and mask[3].all()  # truncated: </s> kept last
    ours._encode_fn = lambda texts, specials, max_length=None: [[5, 6] for _ in texts]  # no post-processor
    with pytest.raises(CheckpointError, match="does not append its eos"):
        wan_prompt.tokenize(ours, ["a cat"], 16)


def test_encode_wan_prompts_matches_diffusers(reference, t5_tokenizer):
    """``encode_wan_prompts`` against the real ``WanPipeline._get_t5_prompt_embeds`` (tokenizer + text encoder)."""
    from diffusers import WanPipeline

    ref, folder = reference
    tok, tok_folder = t5_tokenizer
    length = 24
    pipe = types.SimpleNamespace(tokenizer=tok, text_encoder=ref, _execution_device=torch.device("cpu"))
    want = torch_call(WanPipeline._get_t5_prompt_embeds, pipe, PROMPTS[:3], max_sequence_length=length,
                      device=torch.device("cpu"), dtype=torch.float32)
    encode = wan_prompt.prompt_encoder(converters.load(folder))
    got = np.asarray(wan_prompt.encode_wan_prompts(PROMPTS[:3], Tokenizer.from_folder(tok_folder), encode, length))
    assert got.shape == (3, length, TINY["d_model"])
    check(got, want, tol=1e-5, what="encode_wan_prompts vs WanPipeline._get_t5_prompt_embeds")
    _, mask = wan_prompt.tokenize(Tokenizer.from_folder(tok_folder), PROMPTS[:3], length)
    for row, n in enumerate(mask.sum(1)):
        assert 1 < n < length and (got[row, n:] == 0).all() and (got[row, :n] != 0).any()
    with pytest.raises(InputError, match="non-empty list of strings"):
        wan_prompt.preprocess([])
    assert wan_prompt.WAN_NEGATIVE_PROMPT.startswith("色调艳丽，过曝") and wan_prompt.WAN_NEGATIVE_PROMPT.endswith("倒着走")
