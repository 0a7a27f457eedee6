"""Flags derived from config dataclasses (stf_jax.options): types, defaults, negation, several values."""

from __future__ import annotations

import argparse
import dataclasses

import pytest

from stf_jax.options import add_fields, fields_from_args


@dataclasses.dataclass(frozen=True)
class _Cfg:
    ridge: float = 0.1
    k: int | None = None
    holdout: bool = True
    traits: tuple[str, ...] = ("a", "b")
    name: str = "x"


def _parse(argv):
    p = argparse.ArgumentParser()
    add_fields(p, _Cfg, {f.name: "h" for f in dataclasses.fields(_Cfg)})
    return _Cfg(**fields_from_args(p.parse_args(argv), [f.name for f in dataclasses.fields(_Cfg)]))


def test_defaults_are_the_dataclass_defaults():
    assert _parse([]) == _Cfg()


def test_each_flag_sets_its_field_with_its_type():
    got = _parse(["--ridge", "2", "--k", "7", "--no-holdout", "--traits", "c", "d", "e", "--name", "y"])
    assert got == _Cfg(ridge=2.0, k=7, holdout=False, traits=("c", "d", "e"), name="y")
    assert isinstance(got.ridge, float) and isinstance(got.k, int)


def test_a_bad_value_is_an_argparse_error(capsys):
    with pytest.raises(SystemExit) as exc:
        _parse(["--k", "seven"])
    assert exc.value.code == 2 and "--k: invalid int value" in capsys.readouterr().err


def test_steer_eval_reaches_the_settings_it_could_not_set():
    from stf_jax.steer.evaluate import SteerConfig, add_eval_parser, config_from_args

    p = argparse.ArgumentParser()
    add_eval_parser(p.add_subparsers())
    assert config_from_args(p.parse_args(["eval", "run"])) == SteerConfig()
    cfg = config_from_args(p.parse_args(["eval", "run", "--ridge", "0.5", "--no-holdout-trait", "--test-fraction",
                                         "0.3", "--generation-alpha", "0.1"]))
    assert (cfg.ridge, cfg.holdout_trait, cfg.test_fraction, cfg.generation_alpha) == (0.5, False, 0.3, 0.1)
