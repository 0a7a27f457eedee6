"""Per-layer hidden-state statistics: a quick look at what a model's residual stream does."""

from __future__ import annotations

from typing import Sequence

import numpy as np

from .model import Model

DEFAULT_SENTENCES = (
    "The committee will review the proposal next week.",
    "hey, u coming to the party tonight??",
    "Photosynthesis converts light energy into chemical energy stored in glucose.",
    "I'm so sorry for your loss; please let me know if there is anything I can do.",
)


def layer_stats(model: Model, sentences: Sequence[str] = DEFAULT_SENTENCES) -> list[dict]:
    """One row per hidden-state index: mean token norm, std, max |h| and the mean cosine between
    the sentences' last-token states (how much the layer separates them)."""
    ids, mask = model.encode(sentences, padding_side="left")
    states = np.asarray(model.hidden_states(ids, mask, "all"), dtype=np.float32)  # [L+1, B, S, D]
    valid = mask.astype(bool)
    rows = []
    for i, h in enumerate(states):
        tokens = h[valid]  # [n_tokens, D]
        last = h[:, -1]  # left padding: last column is every sentence's last token
        unit = last / np.linalg.norm(last, axis=-1, keepdims=True)
        cos = unit @ unit.T
        off = cos[~np.eye(len(cos), dtype=bool)]
        rows.append({
            "layer": i,
            "mean_norm": float(np.linalg.norm(tokens, axis=-1).mean()),
            "std": float(tokens.std()),
            "max_abs": float(np.abs(tokens).max()),
            "last_token_cos": float(off.mean()),
        })
    return rows


def format_stats(name: str, model: Model, rows: list[dict]) -> str:
    cfg = model.config
    head = (f"{name}: {cfg.family}, {cfg.n_layers} blocks, d_model {cfg.d_model}, "
            f"{cfg.n_heads} heads / {cfg.n_kv_heads} kv, dtype {model.dtype}")
    lines = [head, f"{'layer':>5} {'mean |h|':>10} {'std':>9} {'max |h|':>10} {'last-token cos':>15}"]
    for r in rows:
        lines.append(f"{r['layer']:>5} {r['mean_norm']:>10.3f} {r['std']:>9.4f} {r['max_abs']:>10.2f} "
                     f"{r['last_token_cos']:>15.4f}")
    return "\n".join(lines)
