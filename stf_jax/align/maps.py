"""One interface for every alignment method: a table of fitters, each returning a `Map`.

A map carries vectors of one model's residual stream into another's: `m(v)` for v [..., d_s] gives
[..., d_t]. Every map is a pytree (it stacks under vmap: one map per trial or per held-out trait), and
every method is one entry of `METHODS`, fitted by one signature:

    fit(x_s [n, d_s], x_t [n, d_t], w_train [n], w_val [n], key, settings) -> (Map, info)

w_train marks the training rows (0/1); w_val ⊂ w_train the validation slice that trained adapters hold
out for early stopping (closed-form methods fit on all of w_train). `info` is a pytree of fit
diagnostics (the Procrustes scale, adapter loss curves). The protocol that scores maps
(`evaluate`), leave-one-trait-out carrying (`trait_transfer.transferred_trait_vectors`), steering and
`python -m stf_jax.transfer` all go through this table, so the map that is scored and the map that is
deployed are the same computation; adding a method is one entry.

    from stf_jax.align.maps import FitSettings, fit_map
    m, info = fit_map("affine", x_s, x_t, w_train, settings=FitSettings(ridge=0.1))
    v_t = m(v_s)                                      # [d_t]
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from . import adapters as adapters_lib
from .affine import AffineMap, fit_affine
from ..options import option
from .baselines import identity
from .pca import fit_pca
from .procrustes import ProcrustesMap, fit_procrustes_map


@dataclasses.dataclass(frozen=True)
class FitSettings:
    """Every method's settings in one hashable value (a static jit argument; recorded in map files).

    Attributes:
      k: PCA components for Procrustes (resolved by the caller, e.g. by explained variance).
      ridge: relative ridge of the affine map (0: least squares).
      rotation_only: Procrustes restricted to det(R) = +1.
      adapter: training settings shared by the adapters (their kind is set per method).
      sae, sae_latents, sae_k: s2l's source SAE, its width, and the coefficients a vector keeps.
    """

    k: int = option(64, ge=1)
    ridge: float = option(0.1, ge=0)
    rotation_only: bool = False
    adapter: adapters_lib.AdapterConfig = adapters_lib.AdapterConfig()
    sae: str = ""  # s2l: the source layer's SAE directory (its encoder is copied into the map)
    sae_latents: int = option(0, ge=0)  # s2l: its width (recorded so a map file loads without the SAE)
    sae_k: int = option(32, ge=1)  # s2l: coefficients kept per vector (the SAE's k)

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> "FitSettings":
        """Settings as a map file records them; ValueError names what is missing, unknown or out of range."""
        from ..options import check_options

        if not isinstance(d, dict) or not isinstance(d.get("adapter"), dict):
            raise ValueError("settings.adapter must be an object")
        try:
            out = cls(**{**d, "adapter": adapters_lib.AdapterConfig(**d["adapter"])})
        except TypeError as exc:  # an unknown or missing field
            raise ValueError(f"settings: {exc}") from None
        try:
            check_options(out)
        except ValueError as exc:  # "ridge= must be ...": a recorded setting, not a flag
            raise ValueError(f"settings.{str(exc).replace('= ', ' ', 1)}") from None
        return out


@struct.dataclass
class IdentityMap:
    """Zero-shot transfer (the Preference-Vector idea): the source vector itself, zero-padded or truncated to d_t."""

    d_t: int = struct.field(pytree_node=False)

    def __call__(self, v: jax.Array) -> jax.Array:
        return identity(v, self.d_t)


@struct.dataclass
class S2LMap:
    """SAE coefficients to target states (the LRT paper's s2l): a vector's coefficients in the source SAE,
    then a ridge-affine map from coefficients to the target. A direction's coefficients are the SAE encoder's
    response to it, v @ W_enc (the change of every pre-activation when v is added to a state), of which the
    `k` largest in magnitude are kept (`sparse_code`): what the SAE would say the vector is made of."""

    w_enc: jax.Array  # [d_s, d_sae]
    affine: AffineMap  # [d_sae] -> [d_t]
    k: int = struct.field(pytree_node=False)

    def __call__(self, v: jax.Array) -> jax.Array:
        return self.affine(sparse_code(v, self.w_enc, self.k))


def sparse_code(v: jax.Array, w_enc: jax.Array, k: int) -> jax.Array:
    """[..., d_s] -> [..., d_sae]: v @ W_enc with all but the k largest magnitudes set to zero."""
    c = v @ w_enc
    _, idx = jax.lax.top_k(jnp.abs(c), k)
    return jnp.put_along_axis(jnp.zeros_like(c), idx, jnp.take_along_axis(c, idx, axis=-1), axis=-1, inplace=False)


Map = IdentityMap | ProcrustesMap | AffineMap | adapters_lib.Adapter | S2LMap


class Method(NamedTuple):
    """One alignment method: how it is fitted and on what.

    fit: the fitter (signature in the module docstring). fits_on: "vectors" (paired steering vectors,
    one row per contrast pair) or "token_states" (paired corpus hidden states; the map then carries
    directions, so its bias is dropped). scramble: whether fitting on scrambled pairings is meaningful.
    scorer: how the protocol scores it: "fit" (fit per trial, carry every row) or "kspace" (Procrustes in
    PCA coordinates, no [n, d_t] reconstruction; equal numbers, see align.protocol).
    moments: the fit is a function of the rows' first and second moments (ridge-affine), so a weighted
    mixture of sources can be fitted in bounded memory (`transfer.mixture`); its ridge is `settings.ridge`.
    """

    name: str
    fit: Callable[..., tuple[Any, Any]]
    fits_on: str = "vectors"
    scramble: bool = True
    scorer: str = "fit"
    summary: str = ""
    moments: bool = False
    template: Callable[[int, int, "FitSettings"], Any] | None = None  # the fitted map's structure, when tracing
    # the fitter needs more than shapes (s2l reads its SAE file)
    ridge: float = 0.1  # the default relative ridge (`transfer fit`): wider inputs need more
    needs_sae: bool = False  # carries through the source layer's SAE (settings.sae): `transfer fit --sae`


def _fit_identity(x_s, x_t, w_train, w_val, key, s: FitSettings):
    return IdentityMap(x_t.shape[-1]), {}


def _fit_procrustes(x_s, x_t, w_train, w_val, key, s: FitSettings):
    m = fit_procrustes_map(fit_pca(x_s, w_train, s.k), fit_pca(x_t, w_train, s.k), x_s, x_t, w_train,
                           rotation_only=s.rotation_only)
    return m, {"scale": m.procrustes.scale}


def _fit_affine(x_s, x_t, w_train, w_val, key, s: FitSettings):
    return fit_affine(x_s, x_t, w_train, ridge=s.ridge), {}


def _fit_affine_tokens(x_s, x_t, w_train, w_val, key, s: FitSettings):
    """On paired hidden states the bias is a difference of state means; a steering vector is a difference
    of states, so only the linear part carries it (the LRT paper)."""
    m = fit_affine(x_s, x_t, w_train, ridge=s.ridge)
    return AffineMap(m.weight, jnp.zeros_like(m.bias)), {}


def _fit_s2l(x_s, x_t, w_train, w_val, key, s: FitSettings):
    if not s.sae:
        raise ValueError("s2l needs the source layer's SAE: settings.sae (transfer fit --sae DIR)")
    w_enc = jnp.asarray(source_sae(s.sae)[1])
    return S2LMap(w_enc, fit_affine(sparse_code(x_s, w_enc, s.sae_k), x_t, w_train, ridge=s.ridge), s.sae_k), {}


@functools.lru_cache(maxsize=4)
def source_sae(path: str) -> tuple[Any, np.ndarray]:
    """(SAEConfig, encoder matrix W_enc [d_in, d_sae]) of an SAE directory (stf_jax or sae-lens), read once per
    process: s2l's settings, its fits and the norms they record all ask for it."""
    from ..sae.saelens import load_sae

    cfg, params, _ = load_sae(path)
    return cfg, np.asarray(params.W_enc, np.float32)


def _s2l_template(d_s: int, d_t: int, s: FitSettings) -> S2LMap:
    f32 = jnp.float32
    return S2LMap(jax.ShapeDtypeStruct((d_s, s.sae_latents), f32),
                  AffineMap(jax.ShapeDtypeStruct((s.sae_latents, d_t), f32), jax.ShapeDtypeStruct((d_t,), f32)),
                  s.sae_k)


def adapter_config(kind: str, base: adapters_lib.AdapterConfig) -> adapters_lib.AdapterConfig:
    """The base settings for one adapter kind (the orthogonality penalty is defined for linear maps only)."""
    return dataclasses.replace(base, kind=kind, orthogonality=0.0 if kind == "mlp" else base.orthogonality)


def _adapter_fitter(kind: str):
    def fit(x_s, x_t, w_train, w_val, key, s: FitSettings):
        cfg = adapter_config(kind, s.adapter)
        res = adapters_lib.train_adapter(cfg, x_s, x_t, w_train - w_val, w_val, key)
        info = {"train_curve": res.train_curve, "val_curve": res.val_curve, "best_check": res.best_check,
                "steps": res.steps}
        return adapters_lib.Adapter(cfg, res.params, res.stats), info

    return fit


METHODS: dict[str, Method] = {m.name: m for m in (
    Method("identity", _fit_identity, summary="zero-shot: the source vector itself, padded/truncated"),
    Method("procrustes", _fit_procrustes, scorer="kspace", summary="PCA per model + similarity Procrustes (the seed paper)"),
    Method("affine", _fit_affine, summary="least-squares / ridge affine map on paired vectors (the LRT paper)",
           moments=True),
    Method("s2l", _fit_s2l, template=_s2l_template, moments=True, ridge=1.0, needs_sae=True,
           summary="source SAE coefficients to target states, ridge-affine (the LRT paper's s2l); needs --sae"),
    Method("many_to_one", _fit_affine, fits_on="stacked_vectors", moments=True, ridge=10.0,
           summary="ridge affine map from several source layers at once to one target layer (the LRT paper's "
                   "Appendix A objective)"),
    Method("affine_tokens", _fit_affine_tokens, fits_on="token_states", scramble=False,
           summary="affine map on paired corpus hidden states, applied to directions (the LRT paper)"),
    *(Method(kind, _adapter_fitter(kind), summary=f"optax-trained {kind} adapter, early-stopped")
      for kind in adapters_lib.KINDS),
)}
VECTOR_METHODS = tuple(name for name, m in METHODS.items() if m.fits_on == "vectors" and not m.needs_sae)
SAE_METHODS = tuple(name for name, m in METHODS.items() if m.needs_sae)
STACKED_METHODS = tuple(name for name, m in METHODS.items() if m.fits_on == "stacked_vectors")
MAP_SET_METHODS = VECTOR_METHODS + SAE_METHODS + STACKED_METHODS  # what `transfer fit` fits
TRANSFER_METHODS = tuple(n for n in VECTOR_METHODS if n != "identity")  # learned maps (identity is a control)


def default_ridge(name: str, ridge: float | None = None) -> float:
    """`ridge`, or the method's own default when None (measured on the shipped pairs: README, SAE section)."""
    return method(name).ridge if ridge is None else ridge


def method(name: str) -> Method:
    if name not in METHODS:
        raise ValueError(f"unknown alignment method {name!r}; choose from {list(METHODS)}")
    return METHODS[name]


def fit_map(name: str, x_s, x_t, w_train=None, w_val=None, key=None, settings: FitSettings = FitSettings()):
    """Fit one map of method `name` on paired rows x_s [n, d_s] → x_t [n, d_t] -> (map, info).

    w_train: rows to fit on (default all); w_val: the validation slice adapters early-stop on (default:
    10 % of the training rows, every tenth)."""
    x_s, x_t = jnp.asarray(x_s, jnp.float32), jnp.asarray(x_t, jnp.float32)
    n = x_s.shape[0]
    w_train = jnp.ones(n, jnp.float32) if w_train is None else jnp.asarray(w_train, jnp.float32)
    if w_val is None:
        rows = np.flatnonzero(np.asarray(w_train) > 0)
        w_val = np.zeros(n, np.float32)
        w_val[rows[::10]] = 1.0
    key = jax.random.PRNGKey(settings.adapter.seed) if key is None else key
    return _jitted_fit(name, settings)(x_s, x_t, w_train, jnp.asarray(w_val, jnp.float32), key)


_FITS: dict[tuple[str, FitSettings], Callable] = {}


def _jitted_fit(name: str, settings: FitSettings) -> Callable:
    if (name, settings) not in _FITS:
        fit = method(name).fit
        _FITS[(name, settings)] = jax.jit(lambda *a: fit(*a, settings))
    return _FITS[(name, settings)]


def map_template(name: str, d_s: int, d_t: int, settings: FitSettings):
    """The abstract structure (shapes, dtypes, static fields) of a fitted map, from tracing its fitter: what
    a map file's tensors are unflattened into, for every method alike."""
    if method(name).template is not None:
        return method(name).template(d_s, d_t, settings)
    n = max(settings.k + 2, 8)
    args = (jax.ShapeDtypeStruct((n, d_s), jnp.float32), jax.ShapeDtypeStruct((n, d_t), jnp.float32),
            jax.ShapeDtypeStruct((n,), jnp.float32), jax.ShapeDtypeStruct((n,), jnp.float32),
            jax.ShapeDtypeStruct((2,), jnp.uint32))
    return jax.eval_shape(lambda *a: method(name).fit(*a, settings)[0], *args)


def map_tensors(m) -> dict[str, np.ndarray]:
    """A map's arrays by tree path ("source/mean", "params/w", …): what a map file stores."""
    leaves = jax.tree_util.tree_flatten_with_path(m)[0]
    return {_path_name(path): np.asarray(leaf, np.float32) for path, leaf in leaves}


def map_from_tensors(name: str, tensors: dict[str, np.ndarray], d_s: int, d_t: int, settings: FitSettings):
    """Rebuild a map from `map_tensors` output; shapes are checked against the method's template."""
    template = map_template(name, d_s, d_t, settings)
    paths, treedef = jax.tree_util.tree_flatten_with_path(template)
    leaves = []
    for path, spec in paths:
        key = _path_name(path)
        if key not in tensors:
            raise ValueError(f"the {name} map has no tensor {key!r}")
        arr = tensors[key]
        if spec.shape == () and arr.shape == (1,):  # safetensors writers may store scalars as [1]
            arr = arr.reshape(())
        if tuple(arr.shape) != tuple(spec.shape):
            raise ValueError(f"{name} map tensor {key!r} has shape {arr.shape}, expected {spec.shape}")
        leaves.append(jnp.asarray(arr, spec.dtype))
    extra = sorted(set(tensors) - {_path_name(p) for p, _ in paths})
    if extra:
        raise ValueError(f"the {name} map file has tensors the method does not use: {extra}")
    return jax.tree_util.tree_unflatten(treedef, leaves)


def _path_name(path) -> str:
    parts = []
    for p in path:
        for attr in ("name", "key", "idx"):
            if hasattr(p, attr):
                parts.append(str(getattr(p, attr)))
                break
    return "/".join(parts)
