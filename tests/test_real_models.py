"""The two shipped GGUF models against transformers' PyTorch GGUF loading (the reference; transformers' own
reading of each GGUF is kept in the cache after the first run, see stf_jax.testing.transformers_from_gguf)."""

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

import stf_jax
from stf_jax.models.registry import resolve
from stf_jax.testing import transformers_from_gguf

REAL = ["smollm2-135m", "gemma3-270m"]

PROMPTS = [
    "The capital of France is",
    "def fibonacci(n):\n    if n < 2:\n        return n\n    return",
    "Water boils at a temperature of 100 degrees",
    "Once upon a time, in a small village by the sea, there lived",
    "The three primary colors are red, yellow and",
    "To make a cup of tea, first boil the",
    "In 1969, Neil Armstrong became the first person to walk on the",
    "Dear hiring manager, I am writing to apply for the position of",
    "import numpy as np\nx = np.arange(10)\nprint(x.",
    "The quick brown fox jumps over the lazy",
]


def varied_texts() -> list[str]:
    """A few hundred texts covering unicode, numbers, whitespace runs, code and chat markup."""
    base = PROMPTS + [
        "Héllo wörld — ça va? Ünïcödé façade naïve café",
        "日本語のテキストと中文文本，还有한국어 텍스트。",
        "Emoji: 😀🎉👍🏽 and flags 🇫🇷🇯🇵, math ∑∫√∞ ≤ ≥ ≠",
        "Numbers 0 1 12 123 1234 12345 3.14159 -42 1e-10 0x1F 1,000,000 ½ ²",
        "Whitespace   runs\t\ttabs\n\n\nnewlines    and     spaces      end   ",
        "   leading spaces and trailing   ",
        "for (int i = 0; i < n; ++i) { sum += a[i] * b[i]; }  // dot product",
        "SELECT name, COUNT(*) FROM users WHERE age >= 18 GROUP BY name;",
        "<|im_start|>user\nHi there!<|im_end|>\n<|im_start|>assistant\n",
        "<start_of_turn>user\nWhat is 2+2?<end_of_turn>\n<start_of_turn>model\n",
        "URLs: https://example.com/path?q=1&r=two#frag and emails a.b@c.org",
        "Ελληνικά, русский текст, العربية, עברית, हिन्दी",
        "MiXeD CaSe WORDS and CamelCaseIdentifiers snake_case_names kebab-case",
        "''quotes'' \"double\" `backticks` «guillemets» „low“",
        "a" * 50 + " " + "ab" * 20,
        "\n",
        " ",
        "x",
    ]
    texts = list(base)
    for i, b in enumerate(base):
        texts.append(b.upper())
        texts.append(f"{i}: {b} {i * 7919}")
        texts.append(b.replace(" ", "  "))
        texts.append(" " + b)
        texts.append(b + "\n" + base[(i + 1) % len(base)])
    data_dir = Path(stf_jax.__file__).parent / "data" / "contrast_pairs"
    for path in sorted(data_dir.glob("*.jsonl"))[:6]:
        for line in path.read_text().splitlines()[:12]:
            rec = json.loads(line)
            texts += [rec["positive"], rec["negative"]]
    return texts


@pytest.fixture(scope="module", params=REAL)
def real(request):
    """(name, stf_jax model, transformers tokenizer, gguf path) for one shipped model."""
    path = Path(resolve(request.param))
    model = stf_jax.load_model(request.param)
    ref_tok = transformers_from_gguf(path, "tokenizer")
    return request.param, model, ref_tok, path


def test_tokenizer_matches_transformers_gguf_tokenizer(real):
    name, model, ref_tok, _ = real
    texts = varied_texts()
    assert len(texts) >= 200
    mismatches = [t for t in texts if model.tokenizer(t)["input_ids"] != ref_tok(t)["input_ids"]]
    print(f"{name}: {len(texts) - len(mismatches)}/{len(texts)} texts tokenize identically")
    assert not mismatches, mismatches[:5]
    assert model.tokenizer.decode(model.tokenizer("Héllo wörld 😀")["input_ids"], skip_special_tokens=True) == "Héllo wörld 😀"


def test_hidden_states_and_next_token_match_transformers(real):
    import torch

    name, model, ref_tok, path = real
    ref = transformers_from_gguf(path, "model", attn_implementation="eager")
    ids, mask = model.encode(PROMPTS, padding_side="left")
    pos = np.maximum(np.cumsum(mask, -1) - 1, 0)
    with torch.no_grad():
        out = ref(input_ids=torch.as_tensor(ids, dtype=torch.long), attention_mask=torch.as_tensor(mask, dtype=torch.long),
                  position_ids=torch.as_tensor(pos, dtype=torch.long), output_hidden_states=True)
    logits, states = model.logits(ids, mask, layers="all")
    states = np.asarray(states)
    valid = mask.astype(bool)
    errors = []
    for i, ref_h in enumerate(out.hidden_states):
        r = ref_h.numpy()[valid]
        errors.append(float(np.abs(states[i][valid] - r).max() / np.abs(r).max()))
    print(f"{name}: max rel hidden-state error over {len(errors)} layers {max(errors):.2e}")
    assert max(errors) <= 1e-3, errors
    ours_next = np.asarray(logits)[:, -1].argmax(-1)
    ref_next = out.logits[:, -1].numpy().argmax(-1)
    agree = int((ours_next == ref_next).sum())
    print(f"{name}: greedy next token agrees on {agree}/{len(PROMPTS)} prompts")
    assert agree >= 8 and agree == len(PROMPTS)


def test_runtime_path_works_without_torch(tmp_path):
    """load -> tokenize -> forward for both shipped models with torch made unimportable."""
    script = textwrap.dedent(
        f"""
        import sys
        sys.modules["torch"] = None
        import numpy as np
        import stf_jax
        for name in {REAL!r}:
            model = stf_jax.load_model(name)
            ids, mask = model.encode(["Hello there, how are you?", "Short"], padding_side="left")
            h = np.asarray(model.hidden_states(ids, mask, [-6, -1]))
            assert h.shape[:2] == (2, 2) and np.isfinite(h).all(), h.shape
            print(name, "ok", h.shape)
        assert "torch" not in sys.modules or sys.modules["torch"] is None
        try:
            import torch  # noqa: F401
        except ImportError:
            print("torch unimportable: ok")
        else:
            raise SystemExit("torch was importable")
        """
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "torch unimportable: ok" in result.stdout
    for name in REAL:
        assert f"{name} ok" in result.stdout
