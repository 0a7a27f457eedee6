"""Judge validity on contrast pairs: how often does a judge rank a pair's positive text above its negative?

For every judged trait present in the pairs: the share of pairs with judge(positive) > judge(negative)
(`accuracy`; ties count as half), the share of exact ties, and the mean difference. A judge that does not
order the hand-written pairs of its own trait cannot be trusted on generated text. Run on the shipped
pairs and on the out-of-distribution pairs (`stf_jax/data/ood_pairs`, other registers and formats).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from . import JUDGES


def validate_judges(pairs: str = "shipped") -> dict[str, Any]:
    from ..data import load_pairs

    loaded = load_pairs(pairs)
    out: dict[str, Any] = {"pairs": str(pairs), "traits": {}}
    for trait, judge in JUDGES.items():
        ps = [p for p in loaded if p.trait == trait]
        if not ps:
            continue
        a, b = judge([p.positive for p in ps]), judge([p.negative for p in ps])
        ok = np.isfinite(a) & np.isfinite(b)
        d = (a - b)[ok]
        out["traits"][trait] = {"judge": judge.name, "n": int(ok.sum()),
                                "accuracy": float(np.mean((d > 0) + 0.5 * (d == 0))) if d.size else float("nan"),
                                "ties": float(np.mean(d == 0)) if d.size else float("nan"),
                                "mean_difference": float(d.mean()) if d.size else float("nan")}
    return out


def markdown(res: dict[str, Any]) -> str:
    lines = [f"Judge validity on `{res['pairs']}`: share of pairs ranked positive > negative (ties = 1/2)", "",
             "| trait | judge | pairs | accuracy | ties | mean difference |", "| --- | --- | --- | --- | --- | --- |"]
    for t, r in res["traits"].items():
        lines.append(f"| {t} | {r['judge']} | {r['n']} | {r['accuracy']:.2f} | {r['ties']:.2f} | "
                     f"{r['mean_difference']:.3f} |")
    return "\n".join(lines) + "\n"
