"""Gemma-2 / Gemma-3 text encoders against transformers (float32, tiny random configs), their key tables, full-size
shapes, and the tokenizer front end."""

from __future__ import annotations

import dataclasses
import json
import warnings

import jax
import numpy as np
import pytest
from flax import nnx

import converters
from converters import gemma as conv
from converters.safetensors_io import open_safetensors, save_safetensors
from sana_jax.errors import CheckpointError, ConfigError, InputError
from sana_jax.models.gemma import Gemma, GemmaConfig
from sana_jax.text.tokenizer import Tokenizer
from tests.parity import check, perturb, save, torch, torch_call

transformers = pytest.importorskip("transformers")

LENGTH = 12  # > 2 × sliding_window: windows, and fully masked rows in sliding layers, happen on both sides
TEXT = dict(vocab_size=300, hidden_size=32, intermediate_size=64, num_attention_heads=4, num_key_value_heads=2,
            head_dim=16, sliding_window=4, query_pre_attn_scalar=16)
VISION = dict(model_type="siglip_vision_model", hidden_size=16, intermediate_size=32, num_hidden_layers=1,
              num_attention_heads=2, image_size=28, patch_size=14)


def _randomize(model, seed=0):
    """Larger-than-init weights (and non-zero norm weights) so softcap, windows and norms all matter."""
    perturb(model, 0.5, seed=seed, select=lambda name, p: "norm" in name)
    return perturb(model, 0.15, seed=seed + 1, select=lambda name, p: "norm" not in name)


def _inputs(side: str):
    ids = np.random.default_rng(1).integers(0, 300, (2, LENGTH))
    mask = np.ones((2, LENGTH), np.int64)
    if side == "right":
        mask[1, 5:] = 0
    else:
        mask[1, :6] = 0
    return ids, mask


def _reference(ref, ids, mask):
    out = torch_call(ref, input_ids=ids, attention_mask=mask, output_hidden_states=True)
    return [np.asarray(h) for h in out.hidden_states]


def _compare(model, ref, side, what):
    """Every hidden state, the last one and the plain forward's output against transformers' hidden states."""
    ids, mask = _inputs(side)
    want = _reference(ref, ids, mask)
    last, hidden = model(ids, mask, output_hidden_states=True)
    assert len(hidden) == len(want) == model.config.num_hidden_layers + 1
    for i, (h, w) in enumerate(zip(hidden, want)):
        check(h, w, what=f"{what}, hidden state {i}")
    check(last, want[-1], what=f"{what}, last hidden state")
    check(model(ids, mask), want[-1], what=f"{what}, output")


@pytest.fixture(scope="module")
def gemma2(tmp_path_factory):
    cfg = transformers.Gemma2Config(num_hidden_layers=3, attn_logit_softcapping=1.0, **TEXT)
    ref = _randomize(transformers.Gemma2ForCausalLM(cfg))
    return ref, save(ref, tmp_path_factory.mktemp("gemma2"))


@pytest.fixture(scope="module")
def gemma3(tmp_path_factory):
    cfg = transformers.Gemma3Config(text_config=dict(num_hidden_layers=7, **TEXT,
                                                     rope_scaling={"rope_type": "linear", "factor": 8.0}),
                                    vision_config=VISION, mm_tokens_per_image=1)
    ref = _randomize(transformers.Gemma3ForConditionalGeneration(cfg))
    return ref, save(ref, tmp_path_factory.mktemp("gemma3"))


@pytest.mark.parametrize("side", ["right", "left"])
def test_gemma2_matches_transformers(gemma2, side):
    ref, folder = gemma2
    model = conv.load_folder(folder)
    assert model.config.layer_types == ("sliding_attention", "full_attention", "sliding_attention")
    _compare(model, ref, side, f"gemma2 {side} padding")


@pytest.mark.parametrize("side", ["right", "left"])
def test_gemma3_matches_transformers(gemma3, side):
    ref, folder = gemma3
    model = conv.load_folder(folder)
    assert model.config.layer_types.count("full_attention") == 1 and model.config.rope_scaling_factor == 8.0
    _compare(model, ref, side, f"gemma3 {side} padding")


def test_gemma3_eager_padded_rows(gemma3):
    """transformers' eager attention averages all values in a row without visible keys; fully_masked_rows='mean'."""
    ref, folder = gemma3
    ref.config.text_config._attn_implementation = ref.config._attn_implementation = "eager"
    try:
        ref.model.language_model.config._attn_implementation = "eager"
        cfg = json.loads((folder / "config.json").read_text())
        cfg["text_config"]["fully_masked_rows"] = "mean"
        model = conv.load(open_safetensors(folder / "model.safetensors"), GemmaConfig.from_hf(cfg), where="t")
        _compare(model, ref, "left", "gemma3 eager, left padding")
    finally:
        ref.config.text_config._attn_implementation = ref.config._attn_implementation = "sdpa"
        ref.model.language_model.config._attn_implementation = "sdpa"


def test_gemma2_bare_layout_and_jit(gemma2, tmp_path):
    """``Gemma2Model`` keys (no prefix) load the same; the jitted split/merge forward equals the eager one."""
    ref, _ = gemma2
    save(ref.model, tmp_path)
    assert "embed_tokens.weight" in open_safetensors(tmp_path / "model.safetensors")
    model = conv.load_folder(tmp_path)
    ids, mask = _inputs("right")
    graphdef, state = nnx.split(model)
    jitted = jax.jit(lambda s, i, m: nnx.merge(graphdef, s)(i, m))(state, ids, mask)
    check(jitted, _reference(ref.model, ids, mask)[-1], what="gemma2 Gemma2Model layout, jitted")


def _prefixed_sharded(folder, tmp_path):
    """The checkpoint rewritten with transformers-5 names (``model.language_model.``) in two shards."""
    src = open_safetensors(folder / "model.safetensors")
    renamed = {}
    for k in src:
        k2 = k.replace("language_model.model.", "model.language_model.", 1)
        k2 = "model." + k2 if k2.startswith(("vision_tower.", "multi_modal_projector.")) else k2
        renamed[k2] = np.asarray(src[k])
    names = sorted(renamed)
    shards = {"a.safetensors": names[::2], "b.safetensors": names[1::2]}
    for shard, keys in shards.items():
        save_safetensors({k: renamed[k] for k in keys}, tmp_path / shard)
    weight_map = {k: s for s, keys in shards.items() for k in keys}
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    return tmp_path / "model.safetensors.index.json", renamed


def test_gemma3_prefixed_sharded_through_converters_load(gemma3, tmp_path):
    ref, folder = gemma3
    index, renamed = _prefixed_sharded(folder, tmp_path)
    text = conv.text_source(open_safetensors(index))
    assert any(k.startswith("model.vision_tower.") for k in text.dropped)
    assert "model.multi_modal_projector.mm_input_projection_weight" in text.dropped
    assert not any("language_model" in k for k in text.dropped)
    config = GemmaConfig.from_json(folder / "config.json")
    model = converters.load(index, config=config)
    _compare(model, ref, "left", "gemma3 model.language_model. sharded")

    saved = converters.save_orbax(model, tmp_path / "orbax")  # the family works with the orbax path too
    again = converters.load(saved)
    assert again.config == config
    ids, mask = _inputs("right")
    np.testing.assert_array_equal(np.asarray(again(ids, mask)), np.asarray(model(ids, mask)))

    bad = dict(renamed, **{"model.language_model.layers.0.extra.weight": np.zeros(3, np.float32)})
    del bad["model.language_model.layers.6.mlp.up_proj.weight"]
    with pytest.raises(CheckpointError, match=r"unexpected keys.*extra.*not in the checkpoint.*up_proj"):
        conv.load(bad, config, where="bad")


def test_config_parsing():
    g2 = GemmaConfig.from_hf({"architectures": ["Gemma2ForCausalLM"], "model_type": "gemma2", "hidden_act":
                              "gelu_pytorch_tanh", "rope_theta": 10000.0, "head_dim": 256, "sliding_window": 4096,
                              "cache_implementation": "hybrid", "final_logit_softcapping": 30.0})
    assert g2.layer_types[:2] == ("sliding_attention", "full_attention") and g2.attn_logit_softcapping == 50.0
    assert g2.architecture == "Gemma2ForCausalLM" and g2.fully_masked_rows == "mean"
    # google/gemma-3-12b-it's config.json: vocab and RoPE bases come from transformers' defaults
    g3 = GemmaConfig.from_hf({"architectures": ["Gemma3ForConditionalGeneration"], "model_type": "gemma3",
                              "text_config": {"hidden_size": 3840, "intermediate_size": 15360, "model_type":
                                              "gemma3_text", "num_attention_heads": 16, "num_hidden_layers": 48,
                                              "num_key_value_heads": 8, "rope_scaling": {"factor": 8.0, "rope_type":
                                                                                          "linear"},
                                              "sliding_window": 1024}, "vision_config": {}})
    assert g3.vocab_size == 262208 and g3.rope_specs == ((1e4, 1.0), (1e6, 8.0)) and g3.attn_logit_softcapping is None
    assert [i for i, t in enumerate(g3.layer_types) if t == "full_attention"] == list(range(5, 48, 6))
    assert g3.fully_masked_rows == "zero" and g3.sliding_window == 1024
    for cfg in (g2, g3):
        assert GemmaConfig.from_hf(cfg.to_hf()) == cfg
    for bad, match in [({"model_type": "llama"}, "not Gemma"), ({"model_type": "gemma"}, "not Gemma"),
                       ({"model_type": "gemma3_text", "use_bidirectional_attention": True}, "bidirectional"),
                       ({"model_type": "gemma2", "rope_scaling": {"rope_type": "yarn"}}, "yarn")]:
        with pytest.raises(ConfigError, match=match):
            GemmaConfig.from_hf(bad, "cfg.json")


FULL = {
    "gemma2-2b": (dict(model_type="gemma2", hidden_size=2304, num_hidden_layers=26, num_attention_heads=8,
                       num_key_value_heads=4, head_dim=256, intermediate_size=9216, vocab_size=256000),
                  2_614_341_888),
    "gemma3-12b": (dict(model_type="gemma3_text", hidden_size=3840, num_hidden_layers=48, num_attention_heads=16,
                        num_key_value_heads=8, head_dim=256, intermediate_size=15360, vocab_size=262208,
                        sliding_window=1024, rope_scaling={"rope_type": "linear", "factor": 8.0}),
                   11_766_034_176),
}


@pytest.mark.parametrize("name", list(FULL))
def test_full_size_shapes_match_transformers(name):
    hf, count = FULL[name]
    cfg = GemmaConfig.from_hf(hf)
    assert dataclasses.replace(GemmaConfig.preset(name), architecture=cfg.architecture,
                               max_position_embeddings=cfg.max_position_embeddings) == cfg
    _, _, targets = conv.abstract(cfg)
    assert sum(int(np.prod(s)) for s, _ in targets.values()) == count
    with torch.device("meta"):
        if name == "gemma2-2b":
            ref, prefix = transformers.Gemma2ForCausalLM(transformers.Gemma2Config(**hf)), "model."
        else:
            text = {k: v for k, v in hf.items() if k != "model_type"}
            ref = transformers.Gemma3ForConditionalGeneration(transformers.Gemma3Config(text_config=text))
            prefix = "model.language_model."
    theirs = {k: tuple(v.shape) for k, v in ref.state_dict().items() if k.startswith(prefix)}
    assert sum(int(np.prod(s)) for s in theirs.values()) == count
    assert conv.expected_tensors(cfg, prefix) == theirs


# -- tokenizer ---------------------------------------------------------------------------------------------------

WORDS = ["<pad>", "<eos>", "<bos>", "<unk>", "a", "cat", "surfing", "on", "the", "wave", "big", "blue"]


@pytest.fixture(scope="module")
def tok_folder(tmp_path_factory):
    tokenizers = pytest.importorskip("tokenizers")
    tok = tokenizers.Tokenizer(tokenizers.models.WordLevel({w: i for i, w in enumerate(WORDS)}, unk_token="<unk>"))
    tok.pre_tokenizer = tokenizers.pre_tokenizers.Whitespace()
    tok.post_processor = tokenizers.processors.TemplateProcessing(single="<bos> $A", special_tokens=[("<bos>", 2)])
    folder = tmp_path_factory.mktemp("tokenizer")
    tok.save(str(folder / "tokenizer.json"))
    (folder / "tokenizer_config.json").write_text(json.dumps(
        {"pad_token": "<pad>", "bos_token": {"content": "<bos>"}, "eos_token": "<eos>", "padding_side": "right"}))
    return folder


def test_tokenizer_padding_sides_and_empty_prompt(tok_folder):
    tok = Tokenizer.from_folder(tok_folder)
    assert (tok.pad_id, tok.bos_id, tok.eos_id) == (0, 2, 1)
    ids, mask = tok.encode(["a cat surfing", ""], max_length=6)
    assert ids.dtype == np.int32 and mask.dtype == np.int32
    np.testing.assert_array_equal(ids, [[2, 4, 5, 6, 0, 0], [2, 0, 0, 0, 0, 0]])
    np.testing.assert_array_equal(mask, [[1, 1, 1, 1, 0, 0], [1, 0, 0, 0, 0, 0]])
    ids, mask = tok.encode(["a cat surfing", ""], max_length=6, padding_side="left")
    np.testing.assert_array_equal(ids, [[0, 0, 2, 4, 5, 6], [0, 0, 0, 0, 0, 2]])
    np.testing.assert_array_equal(mask, [[0, 0, 1, 1, 1, 1], [0, 0, 0, 0, 0, 1]])
    ids, mask = tok.encode("", add_special_tokens=False)
    assert ids.shape == (1, 0) and mask.shape == (1, 0)
    # same as transformers' fast tokenizer on the same files
    ref = transformers.PreTrainedTokenizerFast(tokenizer_file=str(tok_folder / "tokenizer.json"), pad_token="<pad>")
    for side in ("right", "left"):
        want = ref(["a cat surfing on the big blue wave", "blue"], max_length=5, padding="max_length",
                   truncation=True, padding_side=side)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            got = tok.encode(["a cat surfing on the big blue wave", "blue"], max_length=5, padding_side=side)
        np.testing.assert_array_equal(got[0], want["input_ids"])
        np.testing.assert_array_equal(got[1], want["attention_mask"])


def test_tokenizer_truncation_warns(tok_folder):
    tok = Tokenizer.from_folder(tok_folder)
    with pytest.warns(UserWarning, match=r"1 of 2 prompts .* max_length=4 .* dropped 5 tokens"):
        ids, mask = tok.encode(["a cat surfing on the big blue wave", "cat"], max_length=4)
    np.testing.assert_array_equal(ids, [[2, 4, 5, 6], [2, 5, 0, 0]])
    assert mask[0].all()


def test_tokenizer_errors(tmp_path):
    with pytest.raises(CheckpointError, match=str(tmp_path)):
        Tokenizer.from_folder(tmp_path)
    with pytest.raises(InputError, match="does not exist"):
        Tokenizer.from_folder(tmp_path / "missing")
    try:
        import sentencepiece  # noqa: F401
    except ImportError:
        (tmp_path / "tokenizer.model").write_bytes(b"\0")
        with pytest.raises(CheckpointError, match="sentencepiece"):
            Tokenizer.from_folder(tmp_path)


def test_input_errors():
    model = nnx.eval_shape(lambda: Gemma(GemmaConfig(num_hidden_layers=1, **TEXT), rngs=nnx.Rngs(0)))
    with pytest.raises(InputError, match="attention_mask shape"):
        model(np.zeros((2, 5), np.int32), np.ones((2, 4)))
    with pytest.raises(InputError, match=r"\[0, 300\)"):
        model(np.full((1, 3), 300))
    with pytest.raises(InputError, match="integer"):
        model(np.zeros((2, 5), np.float32))
