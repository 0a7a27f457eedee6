"""Trained adapters (optax): linear, low-rank and one-hidden-layer MLP maps from source to target vectors.

The closed-form maps (Procrustes, affine) fix the map's form; adapters let the loss choose: `mse` on the
vectors, `cosine` (1 − cos, scale-free, the evaluation metric itself) or `normalized_mse` (MSE against
L2-normalized targets, the Pythia negative result's translator; equal to `mse` when targets are unit steering vectors,
different on raw differences or hidden states). AdamW with weight decay on matrices only, an optional
scale-free orthogonality penalty (a similarity map is its zero set), minibatches drawn from the training
rows, and early stopping on a validation slice of the training split (the parameters with the best
validation loss are returned).

Every adapter centers its input on the source training mean and adds the target training mean to its
output, and starts as the zero map, i.e. at the `mean_target` baseline. Training is one jitted
`lax.while_loop` that `vmap`s over trials (row weights select each trial's train/validation rows).
"""

from __future__ import annotations

import dataclasses
import json
from functools import partial
from pathlib import Path
from typing import Any, Callable, Literal, NamedTuple, get_args

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import struct

from ..options import OptionError, check_options, option
from .ops import mm, safe_div, weighted_mean

Params = dict[str, jax.Array]


class Architecture(NamedTuple):
    """One adapter kind: its parameters, its map of centered inputs, and the Gram matrix of its linear part
    for the orthogonality penalty (None where the map has no single linear part)."""

    init: Callable[["AdapterConfig", int, int, jax.Array], Params]  # zero map at start
    forward: Callable[[Params, jax.Array], jax.Array]  # centered x [..., d_s] -> [..., d_t] (before + y mean)
    gram: Callable[[Params], jax.Array] | None


def _gram(w: jax.Array) -> jax.Array:
    return mm(w.T, w) if w.shape[1] <= w.shape[0] else mm(w, w.T)


ARCHITECTURES: dict[str, Architecture] = {
    "linear": Architecture(
        init=lambda cfg, d_s, d_t, key: {"w": jnp.zeros((d_s, d_t)), "b": jnp.zeros(d_t)},
        forward=lambda p, x: mm(x, p["w"]) + p["b"],
        gram=lambda p: _gram(p["w"])),
    "lowrank": Architecture(  # random U (a zero one would stall), zero V
        init=lambda cfg, d_s, d_t, key: {"u": jax.random.normal(key, (d_s, cfg.rank)) / np.sqrt(d_s),
                                         "v": jnp.zeros((cfg.rank, d_t)), "b": jnp.zeros(d_t)},
        forward=lambda p, x: mm(mm(x, p["u"]), p["v"]) + p["b"],
        # eigenvalues of (UᵀU)(VVᵀ) are the squared singular values of U V
        gram=lambda p: mm(mm(p["u"].T, p["u"]), mm(p["v"], p["v"].T))),
    "mlp": Architecture(
        init=lambda cfg, d_s, d_t, key: {"w1": jax.random.normal(key, (d_s, cfg.hidden)) / np.sqrt(d_s),
                                         "b1": jnp.zeros(cfg.hidden), "w2": jnp.zeros((cfg.hidden, d_t)),
                                         "b2": jnp.zeros(d_t)},
        forward=lambda p, x: mm(jax.nn.gelu(mm(x, p["w1"]) + p["b1"]), p["w2"]) + p["b2"],
        gram=None),
}
KINDS = tuple(ARCHITECTURES)
Loss = Literal["mse", "cosine", "normalized_mse"]
LOSSES = get_args(Loss)


@dataclasses.dataclass(frozen=True)
class AdapterConfig:
    """How to build and train one adapter (hashable: a static jit argument).

    Attributes:
      kind: "linear" (x W + b), "lowrank" (x U V + b, rank `rank`) or "mlp" (gelu, `hidden` units).
      loss: "mse", "cosine" or "normalized_mse".
      learning_rate, weight_decay: AdamW; decay applies to weight matrices, not biases.
      orthogonality: weight of the penalty ‖G / mean eig(G) − I‖²_F / m on the map's m×m Gram (linear,
        lowrank); 0 disables it.
      max_steps: optimizer steps at most; eval_every: steps between validation checks.
      patience: validation checks without improvement before stopping.
      batch_size: rows per step, drawn with replacement from the training rows (0: full batch).
      val_fraction: share of the training split held out for early stopping (a per-trial slice).
      seed: initialization and minibatch seed.
    """

    kind: str = "linear"
    rank: int = option(32, ge=1)
    hidden: int = option(256, ge=1)
    loss: Loss = "mse"
    learning_rate: float = option(1e-3, gt=0)
    weight_decay: float = option(1e-4, ge=0)
    orthogonality: float = option(0.0, ge=0)
    max_steps: int = option(3000, ge=1)
    eval_every: int = option(50, ge=1)
    patience: int = option(8, ge=1)
    batch_size: int = option(256, ge=0)
    val_fraction: float = option(0.1, ge=0, lt=1)
    seed: int = option(0, ge=0)

    def __post_init__(self):
        check_options(self)
        if self.kind not in KINDS:
            raise OptionError(f"adapter kind must be one of {KINDS}, got {self.kind!r}")
        if self.loss not in LOSSES:
            raise OptionError(f"adapter loss must be one of {LOSSES}, got {self.loss!r}")
        if self.orthogonality and ARCHITECTURES[self.kind].gram is None:
            raise OptionError(f"the orthogonality penalty applies to adapters with a linear part "
                             f"({[k for k, a in ARCHITECTURES.items() if a.gram is not None]}), not {self.kind}")
        if self.max_steps < self.eval_every or self.eval_every < 1:
            raise OptionError(f"need 1 <= eval_every ({self.eval_every}) <= max_steps ({self.max_steps})")
        if not 0.0 < self.val_fraction < 1.0:
            raise OptionError(f"val_fraction must lie in (0, 1), got {self.val_fraction}")


class TrainResult(NamedTuple):
    """Best parameters, centering statistics, and the loss curves ([n_checks], NaN after stopping)."""

    params: Params
    stats: Params  # x_mean [d_s], y_mean [d_t]: not trained
    train_curve: jax.Array
    val_curve: jax.Array
    best_check: jax.Array  # index of the check whose parameters were kept
    steps: jax.Array       # optimizer steps taken


def init_params(cfg: AdapterConfig, d_s: int, d_t: int, key: jax.Array) -> Params:
    """Zero map at start (the last matrix is zero), random first matrix where a zero one would stall."""
    return ARCHITECTURES[cfg.kind].init(cfg, d_s, d_t, key)


def apply(kind: str, params: Params, stats: Params, v: jax.Array) -> jax.Array:
    """v: [..., d_s] -> [..., d_t]."""
    return ARCHITECTURES[kind].forward(params, v - stats["x_mean"]) + stats["y_mean"]


def row_loss(kind: str, pred: jax.Array, y: jax.Array) -> jax.Array:
    """[n] per-row loss."""
    if kind == "mse":
        return jnp.mean((pred - y) ** 2, -1)
    if kind == "cosine":
        dot = jnp.sum(pred * y, -1)
        return 1.0 - safe_div(dot, jnp.linalg.norm(pred, axis=-1) * jnp.linalg.norm(y, axis=-1))
    y_unit = y / jnp.maximum(jnp.linalg.norm(y, axis=-1, keepdims=True), 1e-12)
    return jnp.mean((pred - y_unit) ** 2, -1)


def orthogonality_penalty(kind: str, params: Params) -> jax.Array:
    """‖G / (tr G / m) − I‖²_F / m for the map's m×m Gram G: zero iff the map is c·(semi-)orthogonal."""
    gram = ARCHITECTURES[kind].gram
    if gram is None:
        return jnp.zeros(())
    g = gram(params)
    m = g.shape[0]
    g = g / (jnp.trace(g) / m + 1e-12)
    return jnp.sum((g - jnp.eye(m)) ** 2) / m


def _optimizer(cfg: AdapterConfig) -> optax.GradientTransformation:
    decay_mask = lambda p: {name: value.ndim > 1 for name, value in p.items()}  # noqa: E731
    return optax.adamw(cfg.learning_rate, weight_decay=cfg.weight_decay, mask=decay_mask)


@partial(jax.jit, static_argnames=("cfg",))
def train_adapter(cfg: AdapterConfig, x_s: jax.Array, x_t: jax.Array, w_train: jax.Array, w_val: jax.Array,
                  key: jax.Array) -> TrainResult:
    """Fit on rows with w_train = 1 of x_s [n, d_s] -> x_t [n, d_t]; early-stop on rows with w_val = 1.

    vmap over leading axes of (w_train, w_val, key) trains one adapter per trial in one call."""
    n, d_s = x_s.shape
    d_t = x_t.shape[1]
    stats = {"x_mean": weighted_mean(x_s, w_train), "y_mean": weighted_mean(x_t, w_train)}
    k_init, k_steps = jax.random.split(key)
    params = init_params(cfg, d_s, d_t, k_init)
    opt = _optimizer(cfg)
    n_checks = cfg.max_steps // cfg.eval_every
    p_rows = w_train / jnp.sum(w_train)

    def objective(params, rows_x, rows_y, rows_w):
        loss = jnp.sum(row_loss(cfg.loss, apply(cfg.kind, params, stats, rows_x), rows_y) * rows_w) / jnp.sum(rows_w)
        if cfg.orthogonality:
            loss = loss + cfg.orthogonality * orthogonality_penalty(cfg.kind, params)
        return loss

    def step(carry, step_key):
        params, opt_state = carry
        if cfg.batch_size:
            idx = jax.random.choice(step_key, n, (cfg.batch_size,), p=p_rows)
            rows = (x_s[idx], x_t[idx], jnp.ones(cfg.batch_size))
        else:
            rows = (x_s, x_t, w_train)
        grads = jax.grad(objective)(params, *rows)
        updates, opt_state = opt.update(grads, opt_state, params)
        return (optax.apply_updates(params, updates), opt_state), None

    def body(c):
        check, params, opt_state, best, best_val, best_check, since, curves_tr, curves_va = c
        keys = jax.random.split(jax.random.fold_in(k_steps, check), cfg.eval_every)
        (params, opt_state), _ = jax.lax.scan(step, (params, opt_state), keys)
        tr = objective(params, x_s, x_t, w_train)
        va = objective(params, x_s, x_t, w_val)
        better = va < best_val
        best = jax.tree.map(lambda new, old: jnp.where(better, new, old), params, best)
        return (check + 1, params, opt_state, best, jnp.where(better, va, best_val),
                jnp.where(better, check, best_check), jnp.where(better, 0, since + 1),
                curves_tr.at[check].set(tr), curves_va.at[check].set(va))

    def cond(c):
        return (c[0] < n_checks) & (c[6] < cfg.patience)

    nan_curve = jnp.full((n_checks,), jnp.nan)
    init = (jnp.array(0), params, opt.init(params), params, jnp.array(jnp.inf), jnp.array(-1), jnp.array(0),
            nan_curve, nan_curve)
    checks, _, _, best, _, best_check, _, curve_tr, curve_va = jax.lax.while_loop(cond, body, init)
    return TrainResult(best, stats, curve_tr, curve_va, best_check, checks * cfg.eval_every)


@struct.dataclass
class Adapter:
    """A trained adapter: config (static) + parameters (+ centering statistics). Call it on [..., d_s]
    vectors. A pytree: stacks under vmap (one adapter per trial)."""

    config: AdapterConfig = struct.field(pytree_node=False)
    params: Params
    stats: Params

    def __call__(self, v: jax.Array) -> jax.Array:
        return apply(self.config.kind, self.params, self.stats, v)


def save_adapter(path: str | Path, adapter: Adapter, extra: dict[str, Any] | None = None) -> Path:
    """Write `adapter.json` (config, shapes, `extra`) and an orbax checkpoint `state/` under path."""
    import orbax.checkpoint as ocp

    path = Path(path).absolute()
    path.mkdir(parents=True, exist_ok=True)
    state = {"params": adapter.params, "stats": adapter.stats}
    ckpt = ocp.StandardCheckpointer()
    ckpt.save(path / "state", state, force=True)
    ckpt.wait_until_finished()
    shapes = jax.tree.map(lambda a: list(np.shape(a)), state)
    meta = {"config": dataclasses.asdict(adapter.config), "shapes": shapes, **(extra or {})}
    (path / "adapter.json").write_text(json.dumps(meta, indent=1) + "\n")
    return path


def load_adapter(path: str | Path) -> Adapter:
    """Read what save_adapter wrote (leading trial axes, if any, are kept)."""
    import orbax.checkpoint as ocp

    path = Path(path).absolute()
    meta_path = path / "adapter.json"
    if not meta_path.exists():
        raise FileNotFoundError(f"{path}: no adapter.json (not a saved adapter)")
    meta = json.loads(meta_path.read_text())
    target = jax.tree.map(lambda s: jax.ShapeDtypeStruct(tuple(s), jnp.float32), meta["shapes"],
                          is_leaf=lambda x: isinstance(x, list))
    state = ocp.StandardCheckpointer().restore(path / "state", target)
    return Adapter(AdapterConfig(**meta["config"]), state["params"], state["stats"])
