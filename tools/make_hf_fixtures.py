#!/usr/bin/env python3
"""Builds the Hugging Face transformers fixtures under tests/data/hf/.

For each architecture tpkit claims, a tiny model is initialised from a fixed seed, saved with
save_pretrained (float32 and bfloat16 safetensors), and run through transformers to record the
oracle: prompt ids, float32 logits at every position, and a greedy continuation from generate().
Mixture-of-experts fixtures (Mixtral, Qwen2-MoE, Qwen3-MoE) must also route decisively: at every
layer and position, the last chosen expert's probability leads the first unchosen one's.
It also runs ../shared/models/stories260K_hf through LlamaForCausalLM for the five golden prompts.

CI never runs this: the outputs are committed. Running it again rewrites them byte for byte.

    python3 -m venv ../venv-hf && ../venv-hf/bin/pip install -r tools/requirements.txt
    ../venv-hf/bin/python tools/make_hf_fixtures.py [--models ../shared/models] [--only NAME ...]
"""
import argparse
import hashlib
import json
import math
import os
import shutil
import struct

import torch
import transformers
from safetensors.torch import save_file
from transformers import (LlamaConfig, LlamaForCausalLM, MistralConfig, MistralForCausalLM, MixtralConfig,
                          MixtralForCausalLM, Qwen2Config, Qwen2ForCausalLM, Qwen2MoeConfig, Qwen2MoeForCausalLM,
                          Qwen3Config, Qwen3ForCausalLM, Qwen3MoeConfig, Qwen3MoeForCausalLM)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "tests", "data", "hf")
NEW_TOKENS = 32
SIZE_LIMIT = 1000 * 1000  # bytes per fixture directory

# Tiny configs. Head counts allow uneven TP splits (4 heads at TP 3, 6 heads at TP 4); 2 KV heads
# are replicated at TP 3 and 4. Each option a real checkpoint uses is switched on somewhere.
COMMON = dict(vocab_size=256, num_hidden_layers=2, bos_token_id=1, eos_token_id=2, rms_norm_eps=1e-5)
FIXTURES = [
    # Llama-2 style: head_dim from hidden / heads, untied head.
    ("llama2", LlamaConfig, LlamaForCausalLM,
     dict(hidden_size=64, intermediate_size=128, num_attention_heads=4, num_key_value_heads=2,
          max_position_embeddings=128, rope_theta=10000.0, tie_word_embeddings=False)),
    # Llama-3: llama3 RoPE scaling with original_max_position_embeddings small enough that the
    # scaled and the smoothed frequency bands both change the logits at these positions; tied
    # embeddings (as Llama-3.2 1B); attention_bias (q/k/v and o_proj biases).
    ("llama3", LlamaConfig, LlamaForCausalLM,
     dict(hidden_size=96, intermediate_size=96, num_attention_heads=6, num_key_value_heads=2,
          max_position_embeddings=1024, rope_theta=10000.0, tie_word_embeddings=True, attention_bias=True,
          rope_scaling=dict(rope_type="llama3", factor=8.0, low_freq_factor=1.0, high_freq_factor=4.0,
                            original_max_position_embeddings=64))),
    # Mistral: sliding window shorter than every sequence, explicit head_dim != hidden / heads.
    ("mistral", MistralConfig, MistralForCausalLM,
     dict(hidden_size=64, intermediate_size=128, num_attention_heads=6, num_key_value_heads=2, head_dim=16,
          max_position_embeddings=128, rope_theta=10000.0, tie_word_embeddings=False, sliding_window=8)),
    # Qwen2: q/k/v biases, tied embeddings, and a sliding window on layers >= max_window_layers.
    ("qwen2", Qwen2Config, Qwen2ForCausalLM,
     dict(hidden_size=64, intermediate_size=128, num_attention_heads=4, num_key_value_heads=2,
          max_position_embeddings=128, rope_theta=1000000.0, tie_word_embeddings=True, use_sliding_window=True,
          sliding_window=6, max_window_layers=1)),
    # Qwen3: per-head q/k RMSNorm, explicit head_dim 32 with 6 heads over hidden 64, untied head.
    ("qwen3", Qwen3Config, Qwen3ForCausalLM,
     dict(hidden_size=64, intermediate_size=96, num_attention_heads=6, num_key_value_heads=2, head_dim=32,
          max_position_embeddings=128, rope_theta=1000000.0, tie_word_embeddings=False)),
    # Qwen3-MoE: 6 experts (uneven over 4 ranks), top 2, norm_topk_prob, every layer sparse.
    ("qwen3_moe", Qwen3MoeConfig, Qwen3MoeForCausalLM,
     dict(hidden_size=64, intermediate_size=96, moe_intermediate_size=32, num_experts=6, num_experts_per_tok=2,
          norm_topk_prob=True, num_attention_heads=6, num_key_value_heads=2, head_dim=16,
          max_position_embeddings=128, rope_theta=1000000.0, tie_word_embeddings=False)),
    # Qwen3-MoE without norm_topk_prob, top 3 of 8, decoder_sparse_step 2 over 4 layers and
    # layer 3 in mlp_only_layers: layers 0, 2, 3 dense, layer 1 sparse.
    ("qwen3_moe_sparse_step", Qwen3MoeConfig, Qwen3MoeForCausalLM,
     dict(num_hidden_layers=4, hidden_size=64, intermediate_size=32, moe_intermediate_size=16, num_experts=8,
          num_experts_per_tok=3, norm_topk_prob=False, decoder_sparse_step=2, mlp_only_layers=[3],
          num_attention_heads=4, num_key_value_heads=2, head_dim=16, max_position_embeddings=128,
          rope_theta=1000000.0, tie_word_embeddings=False)),
    # Qwen2-MoE: a shared expert with its sigmoid gate, q/k/v biases, top 3 of 6 unnormalised.
    ("qwen2_moe", Qwen2MoeConfig, Qwen2MoeForCausalLM,
     dict(hidden_size=64, intermediate_size=96, moe_intermediate_size=32, shared_expert_intermediate_size=48,
          num_experts=6, num_experts_per_tok=3, norm_topk_prob=False, num_attention_heads=4, num_key_value_heads=2,
          max_position_embeddings=128, rope_theta=1000000.0, tie_word_embeddings=True)),
    # Mixtral: 6 experts, top 2 (always renormalised), Mistral's sliding window.
    ("mixtral", MixtralConfig, MixtralForCausalLM,
     dict(hidden_size=64, intermediate_size=32, num_local_experts=6, num_experts_per_tok=2, num_attention_heads=4,
          num_key_value_heads=2, max_position_embeddings=128, rope_theta=1000000.0, tie_word_embeddings=False,
          sliding_window=8)),
]
PROMPT_LENGTHS = (7, 13)
# The greedy oracle must be decisive: every continuation token leads the runner-up logit by at
# least this much (in float32, and for the bf16 weights computed in float32), which is over 100
# times the logit error the C++ tests allow. Seeds are tried in order until one qualifies.
MIN_MARGIN = 0.02
# Routing must be as decisive: a near-tie between the last chosen and the first unchosen expert
# could go either way under a rounding difference and change a token's output wholesale. 1e-3 in
# probability is over 1000 times float32's error in these softmaxes.
MIN_ROUTING_MARGIN = 1e-3
GOLDEN_PROMPTS = ["Once upon a time", "Lily and Tom", "The little dog", "One day, a girl named Sue",
                  "Sam wanted a big red ball because"]
GOLDEN_TOKENS = 64


def randomize(model, seed):
    """Replaces every parameter: transformers' own init zeroes biases and sets norms to one,
    which would let a loader that skips them pass."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in sorted(model.named_parameters()):
            if name.endswith("norm.weight"):
                p.copy_(torch.rand(p.shape, generator=g) * 0.8 + 0.6)
            elif name.endswith(".bias"):
                p.copy_(torch.randn(p.shape, generator=g) * 0.5)
            elif p.dim() == 2 and "embed_tokens" in name:
                p.copy_(torch.randn(p.shape, generator=g))
            elif name == "lm_head.weight":  # logits of a few units, like a trained model's
                p.copy_(torch.randn(p.shape, generator=g) * 4 / math.sqrt(p.shape[1]))
            else:  # nn.Linear [out, in]: unit-variance outputs
                p.copy_(torch.randn(p.shape, generator=g) / math.sqrt(p.shape[1]))


def full_logits(model, ids):
    with torch.no_grad():
        return model(torch.tensor([ids])).logits[0].float()


def routing_margin(model, ids):
    """The smallest gap, over every sparse layer and position, between the probabilities of the
    top_k-th and the next expert (inf for a dense model)."""
    config = model.config
    top_k = getattr(config, "num_experts_per_tok", None)
    if top_k is None:
        return float("inf")
    with torch.no_grad():
        out = model(torch.tensor([ids]), output_router_logits=True)
    margin = float("inf")
    for logits in out.router_logits:
        probs = torch.softmax(logits.float(), dim=-1).sort(dim=-1, descending=True).values
        margin = min(margin, float((probs[:, top_k - 1] - probs[:, top_k]).min()))
    return margin


def greedy(model, ids, n):
    # eos_token_id=None: the continuation runs its full length even if EOS is the argmax.
    with torch.no_grad():
        out = model.generate(torch.tensor([ids]), max_new_tokens=n, min_new_tokens=n, do_sample=False,
                             eos_token_id=None, pad_token_id=0, top_k=None, top_p=None, temperature=None)
    return out[0, len(ids):].tolist()


def top2_margin(logits):
    top = torch.topk(logits, 2, dim=-1).values
    return float((top[:, 0] - top[:, 1]).min())


def save_model(model, directory):
    model.save_pretrained(directory, safe_serialization=True)


def build(config, model_cls, seed):
    """A randomised model, its bf16 copy, and the oracle for it."""
    torch.manual_seed(seed)
    model = model_cls(config).eval()
    randomize(model, seed)
    model_bf16 = model_cls(config).eval()
    model_bf16.load_state_dict(model.state_dict())
    model_bf16 = model_bf16.to(torch.bfloat16)
    # The bf16 checkpoint's weights, computed in float32: what tpkit at f32 compute must match.
    model_bf16_f32 = model_cls(config).eval()
    model_bf16_f32.load_state_dict(model_bf16.state_dict())
    model_bf16_f32 = model_bf16_f32.to(torch.float32)

    g = torch.Generator().manual_seed(seed + 1000)
    tensors, prompts, margin = {}, [], float("inf")
    for k, length in enumerate(PROMPT_LENGTHS):
        ids = torch.randint(3, config.vocab_size, (length,), generator=g).tolist()
        tokens = greedy(model, ids, NEW_TOKENS)
        logits = full_logits(model, ids + tokens[:-1])  # row p predicts position p + 1
        # generate() and one full forward pass must agree, or the oracle is itself unsound.
        assert logits[length - 1:].argmax(-1).tolist() == tokens
        tokens_bf16 = greedy(model_bf16_f32, ids, NEW_TOKENS)
        logits_bf16 = full_logits(model_bf16_f32, ids + tokens_bf16[:-1])
        assert logits_bf16[length - 1:].argmax(-1).tolist() == tokens_bf16
        tensors[f"prompt.{k}"] = torch.tensor(ids, dtype=torch.int32)
        tensors[f"f32.tokens.{k}"] = torch.tensor(tokens, dtype=torch.int32)
        tensors[f"f32.logits.{k}"] = logits.contiguous()
        tensors[f"bf16.tokens.{k}"] = torch.tensor(tokens_bf16, dtype=torch.int32)
        tensors[f"bf16.logits.{k}"] = logits_bf16[:length].contiguous()
        f32_margin, bf16_margin = top2_margin(logits[length - 1:]), top2_margin(logits_bf16[length - 1:])
        routing = min(routing_margin(model, ids + tokens[:-1]), routing_margin(model_bf16_f32, ids + tokens_bf16[:-1]))
        # A routing near-tie disqualifies the seed like a greedy near-tie does.
        margin = min(margin, f32_margin, bf16_margin, MIN_MARGIN if routing >= MIN_ROUTING_MARGIN else 0.0)
        entry = {"length": length, "f32_min_top2_margin": round(f32_margin, 4),
                 "bf16_weights_min_top2_margin": round(bf16_margin, 4),
                 "bf16_weights_tokens_equal_f32": tokens_bf16 == tokens}
        if routing != float("inf"):
            entry["min_routing_margin"] = round(routing, 5)
        prompts.append(entry)
    return model, model_bf16, tensors, {"seed": seed, "prompts": prompts}, margin


def make_fixture(name, config_cls, model_cls, kwargs, base_seed):
    directory = os.path.join(OUT, name)
    shutil.rmtree(directory, ignore_errors=True)
    config = config_cls(**{**COMMON, **kwargs})
    for seed in range(base_seed, base_seed + 100):
        model, model_bf16, tensors, summary, margin = build(config, model_cls, seed)
        if margin >= MIN_MARGIN:
            break
    else:
        raise RuntimeError(f"{name}: no seed gives a decisive greedy oracle")
    save_model(model, os.path.join(directory, "f32"))
    save_model(model_bf16, os.path.join(directory, "bf16"))
    save_file(tensors, os.path.join(directory, "reference.safetensors"), metadata={"generator": "make_hf_fixtures.py"})
    size = sum(os.path.getsize(os.path.join(d, f)) for d, _, files in os.walk(directory) for f in files)
    assert size < SIZE_LIMIT, f"{name}: {size} bytes"
    summary["bytes"] = size
    return summary


def llama2c_encode(vocab, scores, text):
    """llama2.c's BPE encode (BOS, dummy prefix, byte fallback, best-score merges), written from
    its run.c description; independent of tpkit's C++ tokenizer."""
    index = {piece: i for i, piece in enumerate(vocab)}
    ids = [index[b" "]] if text else []
    for ch in text:
        b = ch.encode("utf-8")
        ids.extend([index[b]] if b in index else [x + 3 for x in b])
    while True:
        best, best_score = None, -1e10
        for i in range(len(ids) - 1):
            merged = vocab[ids[i]] + vocab[ids[i + 1]]
            if merged in index and scores[index[merged]] > best_score:
                best, best_score = i, scores[index[merged]]
        if best is None:
            return [1] + ids
        ids[best:best + 2] = [index[vocab[ids[best]] + vocab[ids[best + 1]]]]


def read_llama2c_tokenizer(path, vocab_size):
    with open(path, "rb") as f:
        data = f.read()
    offset, vocab, scores = 4, [], []
    for _ in range(vocab_size):
        score, length = struct.unpack_from("<fi", data, offset)
        offset += 8
        vocab.append(data[offset:offset + length])
        scores.append(score)
        offset += length
    return vocab, scores


def make_stories_golden(models):
    directory = os.path.join(models, "stories260K_hf")
    model = LlamaForCausalLM.from_pretrained(directory, torch_dtype=torch.float32).eval()
    vocab, scores = read_llama2c_tokenizer(os.path.join(models, "stories260K", "tok512.bin"),
                                           model.config.vocab_size)
    out = {"model": "stories260K_hf", "generator": "make_hf_fixtures.py", "transformers": transformers.__version__,
           "torch": torch.__version__, "prompts": []}
    for text in GOLDEN_PROMPTS:
        ids = llama2c_encode(vocab, scores, text)
        out["prompts"].append({"text": text, "ids": ids, "greedy": greedy(model, ids, GOLDEN_TOKENS)})
    with open(os.path.join(OUT, "stories260K_golden.json"), "w") as f:
        json.dump(out, f, indent=1)
        f.write("\n")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default=os.path.join(ROOT, "..", "shared", "models"))
    parser.add_argument("--only", nargs="*", help="rewrite only these fixtures (the manifest keeps the others)")
    args = parser.parse_args()
    torch.set_num_threads(1)  # reductions in one fixed order: byte-for-byte reproducible logits
    torch.use_deterministic_algorithms(True)
    os.makedirs(OUT, exist_ok=True)
    manifest = {"transformers": transformers.__version__, "torch": torch.__version__, "fixtures": {}}
    manifest_path = os.path.join(OUT, "manifest.json")
    if args.only and os.path.exists(manifest_path):
        with open(manifest_path) as f:
            manifest["fixtures"] = json.load(f)["fixtures"]
    for index, (name, config_cls, model_cls, kwargs) in enumerate(FIXTURES):
        if not args.only or name in args.only:
            manifest["fixtures"][name] = make_fixture(name, config_cls, model_cls, kwargs, 100 * (index + 1))
    if not args.only:
        make_stories_golden(args.models)
    with open(os.path.join(OUT, "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=1)
        f.write("\n")
    for d, _, files in sorted(os.walk(OUT)):
        for f in sorted(files):
            path = os.path.join(d, f)
            with open(path, "rb") as fh:
                print(hashlib.sha256(fh.read()).hexdigest()[:16], os.path.relpath(path, ROOT))


if __name__ == "__main__":
    main()
