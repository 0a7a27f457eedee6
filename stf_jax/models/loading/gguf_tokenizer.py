"""Build a `tokenizers.Tokenizer` from a GGUF file's metadata, without transformers or torch.

A GGUF carries the vocabulary, merges (byte-level BPE) or scores (sentencepiece) and the special
token ids under llama.cpp's key names. We rebuild the same pipeline transformers' GGUF tokenizer
uses (its GPT-2 / Gemma / Llama sentencepiece shapes), so token ids agree with that reference;
the result is cached as `tokenizer.json` by the loader.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors

_CONTROL, _USER_DEFINED = 3, 4

_LLAMA3_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
# Qwen2/2.5/3 (HF tokenizer.json and llama.cpp's QWEN2 pre-tokenizer): Llama 3's split, but one digit at a time
_QWEN2_SPLIT = _LLAMA3_SPLIT.replace(r"\p{N}{1,3}", r"\p{N}")
# llama.cpp pre-tokenizer names whose split regex differs from GPT-2's
_PRE_SPLITS = {name: _LLAMA3_SPLIT for name in ("llama3", "llama-v3", "llama-bpe", "smaug-bpe", "dbrx")}
_PRE_SPLITS["qwen2"] = _QWEN2_SPLIT


@lru_cache(maxsize=1)
def _byte_alphabet() -> dict[int, str]:
    """GPT-2's reversible byte -> printable-unicode map."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs)))


def _merges_from_vocab(vocab: dict[str, int], rank: dict[str, float]) -> list[tuple[str, str]]:
    """Sentencepiece-BPE merges implied by a vocabulary: every split of a token into two known
    tokens, ordered by the merged token's rank (higher first), then piece lengths."""
    merges = []
    for token, score in rank.items():
        local = [(token[:i], token[i:], score) for i in range(1, len(token)) if token[:i] in vocab and token[i:] in vocab]
        local.sort(key=lambda m: (vocab[m[0]], vocab[m[1]]))
        merges.extend(local)
    merges.sort(key=lambda m: (m[2], len(m[0]), len(m[1])), reverse=True)
    return [(a, b) for a, b, _ in merges]


def _byte_level(tokens: list[str], merges: list[str], pre: str | None) -> Tokenizer:
    alphabet = _byte_alphabet()
    spelled = set(alphabet.values())
    vocab = {
        (t if set(t) <= spelled else "".join(alphabet[b] for b in t.encode("utf-8"))): i for i, t in enumerate(tokens)
    }
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[tuple(m.split(" ")) for m in merges], dropout=None,
                               continuing_subword_prefix="", end_of_word_suffix="", fuse_unk=False))
    split = _PRE_SPLITS.get(pre or "")
    if split:
        tok.pre_tokenizer = pre_tokenizers.Sequence(
            [pre_tokenizers.Split(Regex(split), behavior="isolated"),
             pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)]
        )
    else:
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    return tok


def _sentencepiece(tokens: list[str], scores: list[float] | None, merges: list[str] | None, gemma: bool,
                   unk: str | None) -> Tokenizer:
    if gemma:  # Gemma stores multi-space tokens as spaces and orders merges by file position
        tokens = ["▁" * len(t) if " " in t and not t.strip() else t for t in tokens]
        rank = {t: -i for i, t in enumerate(tokens)}
    else:
        rank = dict(zip(tokens, scores or [0.0] * len(tokens)))
    vocab = {t: i for i, t in enumerate(tokens)}
    pairs = [tuple(m.split(" ")) for m in merges] if merges else _merges_from_vocab(vocab, rank)
    tok = Tokenizer(models.BPE(vocab=vocab, merges=pairs, dropout=None, unk_token=unk, fuse_unk=True, byte_fallback=True))
    tok.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse()])
    if gemma:
        tok.normalizer = normalizers.Replace(" ", "▁")
        tok.pre_tokenizer = pre_tokenizers.Split(pattern=" ", behavior="merged_with_previous", invert=False)
    else:
        tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first", split=False)
        tok.decoder = decoders.Sequence(
            [decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(), decoders.Strip(content=" ", left=1)]
        )
    return tok


def tokenizer_from_gguf(meta: dict[str, Any]) -> tuple[Tokenizer, dict[str, Any]]:
    """(tokenizer, tokenizer_config) where the config has special tokens, add_bos and chat template."""
    kind = meta.get("tokenizer.ggml.model")
    tokens = list(meta.get("tokenizer.ggml.tokens") or [])
    if not tokens:
        raise ValueError("GGUF metadata has no tokenizer vocabulary (tokenizer.ggml.tokens)")
    arch = meta.get("general.architecture", "")

    def special(key):
        idx = meta.get(f"tokenizer.ggml.{key}_token_id")
        return tokens[int(idx)] if idx is not None and 0 <= int(idx) < len(tokens) else None

    if kind == "gpt2":
        tok = _byte_level(tokens, list(meta.get("tokenizer.ggml.merges") or []), meta.get("tokenizer.ggml.pre"))
        add_bos_default = False
    elif kind == "llama":
        tok = _sentencepiece(tokens, meta.get("tokenizer.ggml.scores"), meta.get("tokenizer.ggml.merges"),
                             gemma=arch.startswith("gemma"), unk=special("unknown"))
        add_bos_default = True
    else:
        raise ValueError(f"GGUF tokenizer model {kind!r} is not supported (supported: gpt2, llama)")

    types = list(meta.get("tokenizer.ggml.token_type") or [])
    spelled = set(_byte_alphabet().values()) if kind == "gpt2" else None
    control = [t for t, ty in zip(tokens, types) if ty == _CONTROL and (spelled is None or set(t) <= spelled)]
    tok.add_special_tokens([AddedToken(t, normalized=False, special=True) for t in control])
    vocab = tok.get_vocab()
    user = [t for t, ty in zip(tokens, types) if ty == _USER_DEFINED and t in vocab]
    tok.add_tokens([AddedToken(t, normalized=False, special=False) for t in user])

    bos, eos = special("bos"), special("eos")
    add_bos = bool(meta.get("tokenizer.ggml.add_bos_token", add_bos_default))
    add_eos = bool(meta.get("tokenizer.ggml.add_eos_token", False))
    if (add_bos and bos) or (add_eos and eos):
        b = f"{bos}:0 " if add_bos and bos else ""
        e = f" {eos}:0" if add_eos and eos else ""
        special_ids = [(t, tok.token_to_id(t)) for t in {bos if add_bos else None, eos if add_eos else None} if t]
        tok.post_processor = processors.TemplateProcessing(
            single=f"{b}$A:0{e}", pair=f"{b}$A:0{e} {b.replace(':0', ':1')}$B:1{e.replace(':0', ':1')}",
            special_tokens=special_ids,
        )
    config = {
        "bos_token": bos,
        "eos_token": eos,
        "unk_token": special("unknown"),
        "pad_token": special("padding"),
        "add_bos_token": add_bos,
        "add_eos_token": add_eos,
        "chat_template": meta.get("tokenizer.chat_template"),
    }
    return tok, config
