"""Flags derived from config dataclasses (stf_jax.options): types, defaults, negation, several values."""

from __future__ import annotations

import argparse
import dataclasses
from typing import Literal

import pytest

from stf_jax.options import add_fields, fields_from_args


@dataclasses.dataclass(frozen=True)
class _Cfg:
    ridge: float = 0.1
    k: int | None = None
    holdout: bool = True
    traits: tuple[str, ...] = ("a", "b")
    name: str = "x"


@dataclasses.dataclass(frozen=True)
class _Pooled:
    pooling: Literal["last", "mean"] = "last"


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


def test_an_old_flag_spelling_still_works_and_says_the_new_one(capsys):
    p = argparse.ArgumentParser(prog="prog")
    add_fields(p, _Cfg, {"k": "h"}, renamed={"top-k": "k"})
    assert p.parse_args(["--top-k", "5"]).k == 5
    assert "--top-k is deprecated; use --k" in capsys.readouterr().err
    assert p.parse_args([]).k is None


def test_a_literal_field_becomes_a_flag_with_choices(capsys):
    p = argparse.ArgumentParser()
    add_fields(p, _Pooled, {"pooling": "h"})
    assert p.parse_args(["--pooling", "mean"]).pooling == "mean"
    with pytest.raises(SystemExit):
        p.parse_args(["--pooling", "max"])
    assert "invalid choice: 'max'" in capsys.readouterr().err


def _extract_options(argv, tmp_path, yaml_text=None):
    from stf_jax.extract import ExtractOptions
    from stf_jax.extract.__main__ import _OPTION_FLAGS, parse_args
    from stf_jax.options import fields_from_args

    base = ["--models", "m", "--pairs", "shipped", "--out", str(tmp_path / "o")]
    if yaml_text is not None:
        (tmp_path / "c.yaml").write_text(yaml_text)
        base = ["--config", str(tmp_path / "c.yaml")]
    args = parse_args(base + argv)
    return ExtractOptions(layers=str(args.layers), **fields_from_args(args, _OPTION_FLAGS))


def test_extract_flags_and_yaml_keys_are_the_option_fields(tmp_path, capsys):
    from stf_jax.extract import ExtractOptions

    assert _extract_options([], tmp_path) == ExtractOptions(layers="-6")
    want = ExtractOptions(layers="-6", truncate=False, progress=False, batch_size=8, pooling="mean")
    assert _extract_options(["--no-truncate", "--no-progress", "--batch-size", "8", "--pooling", "mean"],
                            tmp_path) == want
    yaml_new = "models: [m]\npairs: shipped\nout: o\ntruncate: false\nprogress: false\nbatch_size: 8\npooling: mean\n"
    assert _extract_options([], tmp_path, yaml_new) == want
    assert "deprecated" not in capsys.readouterr().err
    # the spelling of earlier releases (argparse names) still reads, and says what to write instead
    yaml_old = "models: [m]\npairs: shipped\nout: o\nno_truncate: true\nno_progress: true\nbatch_size: 8\npooling: mean\n"
    assert _extract_options([], tmp_path, yaml_old) == want
    assert "key no_truncate: true is deprecated; write truncate: false" in capsys.readouterr().err
    # the command line wins over the file
    assert _extract_options(["--batch-size", "4"], tmp_path, yaml_new).batch_size == 4


def test_extract_config_with_both_spellings_is_refused(tmp_path):
    from stf_jax.extract.__main__ import ExtractConfigError

    with pytest.raises(ExtractConfigError, match="give truncate or no_truncate, not both"):
        _extract_options([], tmp_path, "models: [m]\npairs: shipped\nout: o\ntruncate: true\nno_truncate: true\n")


def test_align_flags_are_the_protocol_and_adapter_fields(capsys):
    from stf_jax.align.__main__ import build_parser, config_from_args
    from stf_jax.align.adapters import AdapterConfig
    from stf_jax.align.evaluate import EvalConfig

    parse = build_parser().parse_args
    assert config_from_args(parse(["run", "--out", "o"])) == EvalConfig()
    cfg = config_from_args(parse(["run", "--out", "o", "--k", "12", "--learning-rate", "0.01", "--adapter-batch-size",
                                  "0", "--solver", "svd", "--no-rotation-only", "--scramble", "--seed", "3"]))
    assert cfg == EvalConfig(k=12, variance=None, solver="svd", scramble=(), seed=3,
                             adapter=AdapterConfig(learning_rate=0.01, batch_size=0, seed=3))
    old = config_from_args(parse(["run", "--out", "o", "--lr", "0.01", "--adapter-batch", "0", "--seed", "3",
                                  "--scramble"]))
    assert old.adapter == cfg.adapter
    err = capsys.readouterr().err
    assert "--lr is deprecated; use --learning-rate" in err and "--adapter-batch is deprecated" in err
