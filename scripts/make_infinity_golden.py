"""Make the Infinity test data: a tiny random T5 text encoder and upstream Infinity's own outputs.

Subcommands (run from the repository root):

    python scripts/make_infinity_golden.py t5       # tests/data/infinity_tiny_t5/ (offline, no download)

``t5`` builds a tiny random ``T5EncoderModel`` (flan-t5's architecture: gated-GELU feed-forward,
relative position buckets, final RMS norm; 2 layers, d_model 256, 4 heads of 8, d_ff 64) and a ``T5TokenizerFast`` over a small
hand-made Unigram vocabulary with T5's special tokens (``<pad>`` = 0, ``</s>`` = 1, ``<unk>`` = 2, no
sentinel ids), and saves both in Hugging Face layout (config.json, model.safetensors, tokenizer.json,
tokenizer_config.json). The weights come from ``torch.manual_seed(T5_SEED)`` and
transformers' own initialisation, so a different transformers version may give other numbers: the
committed files are the reference, and the golden cases store the features they give.
"""
from __future__ import annotations

import argparse
import os
import sys

import torch

ROOT = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
DATA = os.path.join(ROOT, "tests", "data")
T5_DIR = os.path.join(DATA, "infinity_tiny_t5")
T5_SEED = 23

# Whole words get a better score than their letters, so a known word is one token and an unknown word
# falls back to single letters (characters outside the vocabulary become <unk>).
T5_WORDS = (
    "a an the of and with in on at by to from under over near behind front top side small big large tiny "
    "red green blue yellow white black orange purple pink brown gray golden silver dark bright "
    "cat dog bird fish horse cow sheep mouse fox bear lion tiger owl duck rabbit "
    "man woman boy girl child person people face eyes hair hat "
    "house tree flower garden forest mountain river lake sea sky cloud sun moon star beach road city street "
    "car bus train boat plane bicycle chair table cup bottle book clock lamp window door "
    "photo painting drawing portrait landscape picture image style art oil watercolor sketch "
    "sitting standing running flying sleeping eating holding looking "
    "very beautiful old new happy quiet soft sharp smooth detailed high quality low blurry ugly "
    "night day morning evening winter summer snow rain light shadow"
).split()
T5_CHARS = list("abcdefghijklmnopqrstuvwxyz0123456789.,!?'-:;()")


def make_t5_tokenizer():
    """A T5TokenizerFast over a fixed Unigram vocabulary, built the way transformers builds T5's pipeline
    (WhitespaceSplit + Metaspace pre-tokenizer, ``$A </s>`` post-processor), so the saved tokenizer.json
    tokenizes the same whether a transformers version reads it as is (4.x) or rebuilds the T5 pipeline
    around its vocabulary (5.x)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import T5TokenizerFast

    vocab = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("\u2581", -2.0)]
    vocab += [("\u2581" + w, -5.0 - 0.01 * i) for i, w in enumerate(T5_WORDS)]
    vocab += [(c, -12.0) for c in T5_CHARS]
    vocab += [("\u2581" + c, -11.0) for c in T5_CHARS]
    tok = Tokenizer(models.Unigram(vocab, unk_id=2, byte_fallback=False))
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.WhitespaceSplit(),
        pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="always", split=True),
    ])
    tok.decoder = decoders.Metaspace(replacement="\u2581", prepend_scheme="always", split=True)
    tok.post_processor = processors.TemplateProcessing(
        single=["$A", "</s>"], pair=["$A", "</s>", "$B", "</s>"], special_tokens=[("</s>", 1)])
    return T5TokenizerFast(tokenizer_object=tok, extra_ids=0, eos_token="</s>", unk_token="<unk>",
                           pad_token="<pad>", model_max_length=512)


def make_t5_config(vocab_size: int):
    from transformers import T5Config

    # d_model 256: Infinity's TextAttentivePool uses Ct5 // 128 heads (flan-t5-xl: 2048 -> 16), so the text
    # width must be a multiple of 128; 256 gives the pool two heads.
    return T5Config(vocab_size=vocab_size, d_model=256, d_kv=8, d_ff=64, num_layers=2, num_decoder_layers=2,
                    num_heads=4, relative_attention_num_buckets=8, relative_attention_max_distance=32,
                    feed_forward_proj="gated-gelu", dropout_rate=0.0, layer_norm_epsilon=1e-6,
                    initializer_factor=1.0, tie_word_embeddings=False, pad_token_id=0, eos_token_id=1,
                    decoder_start_token_id=0)


def make_tiny_t5(out_dir: str = T5_DIR) -> str:
    from transformers import T5EncoderModel

    tokenizer = make_t5_tokenizer()
    config = make_t5_config(len(tokenizer))
    torch.manual_seed(T5_SEED)
    model = T5EncoderModel(config).float().eval()
    os.makedirs(out_dir, exist_ok=True)
    model.save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)
    # check that what was written loads back as both classes and tokenizes as built
    from transformers import T5TokenizerFast

    back = T5TokenizerFast.from_pretrained(out_dir)
    probe = ["a photo of a red cat", "xyz  Q sitting   under the tree!"]
    assert back(probe).input_ids == tokenizer(probe).input_ids, "saved tokenizer tokenizes differently"
    T5EncoderModel.from_pretrained(out_dir)
    return out_dir


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    t5 = sub.add_parser("t5", help="make the tiny random T5 encoder + tokenizer (offline)")
    t5.add_argument("--out", default=T5_DIR)
    args = parser.parse_args(argv)
    if args.command == "t5":
        print("wrote", make_tiny_t5(args.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
