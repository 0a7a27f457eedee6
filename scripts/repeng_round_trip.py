"""repeng -> stf_jax.transfer -> steer the other model: the round trip a repeng user makes, measured.

    python scripts/repeng_round_trip.py runs/maps/s2g --trait formality --train 24:56 --eval 56:72 \
        --alphas -8 -4 4 8 --out runs/repeng

1. repeng 0.4 trains a control vector on the map set's source model (transformers loads the shipped GGUF) at
   every source layer of the set, from the trait's shipped pairs in --train (pairs the maps never saw if the
   map run used fewer per trait), with `pca_center` (repeng's default `pca_diff` takes the first component of
   *centered* differences and drops the mean shift uniform contrast pairs carry), and writes it with its own
   `export_gguf`.
2. `python -m stf_jax.transfer apply` carries the file to the target model (relative strength).
3. Both files are scored with `steer eval --vector` on the --eval pairs: propensity at repeng strengths
   (stored scale) in the source model (repeng's own file) and in the target (the carried file), slope CIs.
Needs the test extras (torch, transformers, repeng); stf_jax itself does not.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import numpy as np


def _slice(text: str) -> slice:
    a, b = text.split(":")
    return slice(int(a), int(b))


def train_repeng(source: str, trait: str, rows: slice, hf_layers: list[int], out: Path) -> Path:
    if not hasattr(np, "float_"):  # repeng 0.4.0 annotates with np.float_, removed in NumPy 2
        np.float_ = np.float64
    import repeng
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from stf_jax.data import load_pairs
    from stf_jax.models.registry import resolve

    gguf = Path(resolve(source))
    tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
    pairs = load_pairs("shipped", traits=[trait])[rows]
    dataset = [repeng.DatasetEntry(positive=p.positive, negative=p.negative) for p in pairs]
    vector = repeng.ControlVector.train(model, tok, dataset, hidden_layers=[lay - 1 for lay in hf_layers],
                                        batch_size=16, method="pca_center")
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{trait}_{source}_repeng.gguf"
    vector.export_gguf(str(path))
    print(f"repeng trained {trait} on {source} ({len(pairs)} pairs, blocks {[lay - 1 for lay in hf_layers]}) -> {path}")
    return path


def _cli(*args: str) -> None:
    subprocess.run([sys.executable, "-m", *args], check=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("maps", help="a map set (python -m stf_jax.transfer fit)")
    ap.add_argument("--trait", default="formality")
    ap.add_argument("--train", type=_slice, default=slice(24, 56), help="pairs repeng trains on [24:56]")
    ap.add_argument("--eval", type=_slice, default=slice(56, 72), help="held-out pairs scored [56:72]")
    ap.add_argument("--alphas", nargs="+", default=["-8", "-4", "4", "8"], help="repeng strengths [-8 -4 4 8]")
    ap.add_argument("--out", default="runs/repeng")
    args = ap.parse_args()

    from stf_jax.transfer import load_map_set

    maps = load_map_set(args.maps)
    source, target = maps.source["name"], maps.target["name"]
    out = Path(args.out)
    src_file = train_repeng(source, args.trait, args.train, [a for a, _ in maps.layer_pairs()], out)
    _cli("stf_jax.transfer", "apply", "--map", args.maps, str(src_file), "--out", str(out / "carried"))
    skip, n = str(args.eval.start), str(args.eval.stop - args.eval.start)
    for model, path, name in ((source, src_file, "source"), (target, out / "carried" / src_file.name, "target")):
        print(f"\n== {name}: {model} steered with {path.name}")
        _cli("stf_jax.steer", "eval", "--vector", str(path), "--model", model, "--trait", args.trait, "--skip", skip,
             "--pairs-per-trait", n, "--alphas", *args.alphas, "--out", str(out / f"eval_{name}"))
    s = json.loads((out / "eval_source" / "vector_eval.json").read_text())["slope"]
    t = json.loads((out / "eval_target" / "vector_eval.json").read_text())["slope"]
    print(f"\nslope per unit repeng strength: {source} {s['mean']:.4f} [{s['lo']:.4f}, {s['hi']:.4f}], "
          f"{target} (carried) {t['mean']:.4f} [{t['lo']:.4f}, {t['hi']:.4f}]")


if __name__ == "__main__":
    main()
