import json
from dataclasses import dataclass, field
from typing import Literal

import pytest

from privagg.config import config_to_dict, load_config, override, read_toml
from privagg.errors import ConfigurationError
from privagg.registry import Registry
from privagg.report import Figure, Report, Section


@dataclass(frozen=True)
class Inner:
    alpha: float = 0.5
    mode: Literal["a", "b"] = "a"

    def __post_init__(self):
        if self.alpha <= 0:
            raise ConfigurationError("must be > 0", field="alpha")


@dataclass(frozen=True)
class Outer:
    seed: int = 0
    hidden: tuple[int, ...] = (64,)
    inner: Inner = field(default_factory=Inner)
    extra: dict | None = None


def test_load_nested_and_override():
    cfg = load_config(Outer, {"seed": 3, "hidden": [8, 8], "inner": {"alpha": 2}})
    assert cfg == Outer(seed=3, hidden=(8, 8), inner=Inner(alpha=2.0))
    assert override(cfg, {"inner": {"mode": "b"}}).inner == Inner(alpha=2.0, mode="b")
    assert config_to_dict(cfg)["hidden"] == [8, 8]


@pytest.mark.parametrize(
    ("data", "field_name", "fragment"),
    [
        ({"sed": 1}, "sed", "accepted: extra, hidden, inner, seed"),
        ({"seed": "x"}, "seed", "expected an integer"),
        ({"seed": True}, "seed", "expected an integer"),
        ({"hidden": 3}, "hidden", "expected a list"),
        ({"inner": {"mode": "c"}}, "inner.mode", "'a', 'b'"),
        ({"inner": {"alpha": -1}}, "inner.alpha", "must be > 0"),
        ({"inner": 5}, "inner", "expected a table"),
    ],
)
def test_errors_name_the_field(data, field_name, fragment):
    with pytest.raises(ConfigurationError) as ei:
        load_config(Outer, data)
    assert ei.value.field == field_name
    assert fragment in str(ei.value)


def test_read_toml_errors(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("[x\n")
    with pytest.raises(ConfigurationError, match="not valid TOML"):
        read_toml(bad)
    with pytest.raises(ConfigurationError, match="cannot read"):
        read_toml(tmp_path / "missing.toml")


def test_registry_lists_known_names():
    reg: Registry[int] = Registry("widget")
    reg.register("a")(1)
    with pytest.raises(ValueError):
        reg.register("a")(2)
    with pytest.raises(ConfigurationError, match=r"unknown widget 'z' \(accepted: a\)"):
        reg.get("z")


def test_report_is_written_atomically(tmp_path):
    def ok(path):
        path.write_bytes(b"\x89PNG fake")

    def boom(path):
        raise RuntimeError("drawing failed")

    r = Report("t", top={"final_accuracy": 0.5, "x": float("nan")})
    r.add(Section("s", "S", data={"v": 1}, figures=[Figure("a.png", "A", ok)], tables=[("T", ["h"], [[1.5]])]))
    out = r.write(tmp_path / "rep")
    d = json.loads((out / "report.json").read_text())
    assert d["final_accuracy"] == 0.5 and d["x"] is None and d["sections"]["s"] == {"v": 1}
    assert "a.png" in (out / "report.html").read_text()

    r2 = Report("t")
    r2.add(Section("s", "S", figures=[Figure("b.png", "B", boom)]))
    with pytest.raises(RuntimeError):
        r2.write(tmp_path / "rep")
    # the previous report is untouched and no temporary directory is left behind
    assert (tmp_path / "rep" / "a.png").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rep"]
    with pytest.raises(ValueError):
        r.add(Section("s", "dup"))


@dataclass(frozen=True)
class Pair:
    channels: tuple[int, int] = (16, 32)


def test_fixed_length_tuples():
    assert load_config(Pair, {"channels": [1, 2]}) == Pair((1, 2))
    with pytest.raises(ConfigurationError, match="expected 2 items"):
        load_config(Pair, {"channels": [1]})
    with pytest.raises(ConfigurationError, match=r"channels\[1\]: expected an integer"):
        load_config(Pair, {"channels": [1, "x"]})


@dataclass(frozen=True)
class WithOptional:
    inner: Inner | None = None
    count: int | None = None
    either: int | str | None = None


def test_optional_nested_dataclass_keeps_precise_errors():
    assert load_config(WithOptional, {}) == WithOptional()
    assert load_config(WithOptional, {"inner": None}).inner is None
    cfg = load_config(WithOptional, {"inner": {"alpha": 2}})
    assert cfg.inner == Inner(alpha=2.0)
    assert load_config(WithOptional, config_to_dict(cfg)) == cfg
    assert override(WithOptional(), {"inner": {"mode": "b"}}).inner == Inner(mode="b")
    for data, field_name, fragment in [
        ({"inner": {"alpha": -1}}, "inner.alpha", "must be > 0"),
        ({"inner": {"mode": "c"}}, "inner.mode", "'a', 'b'"),
        ({"inner": {"beta": 1}}, "inner.beta", "unknown setting"),
        ({"inner": 5}, "inner", "expected a table"),
        ({"count": "x"}, "count", "expected an integer"),
        ({"either": 1.5}, "either", "accepted: int or str or NoneType"),
    ]:
        with pytest.raises(ConfigurationError) as ei:
            load_config(WithOptional, data)
        assert ei.value.field == field_name
        assert fragment in str(ei.value)


@dataclass(frozen=True)
class _Absolute:
    """Validates with an absolute field name, like protocols.fedavg.DataConfig."""

    n: int = 1

    def __post_init__(self) -> None:
        if self.n < 1:
            raise ConfigurationError("must be >= 1", field="data.n")


@dataclass(frozen=True)
class _Run:
    data: _Absolute = field(default_factory=_Absolute)


@dataclass(frozen=True)
class _Case:
    run: _Run = field(default_factory=_Run)


def test_nested_errors_name_each_field_once():
    with pytest.raises(ConfigurationError) as e:
        load_config(_Run, {"data": {"n": 0}})
    assert e.value.field == "data.n"
    with pytest.raises(ConfigurationError) as e:
        load_config(_Case, {"run": {"data": {"n": 0}}})
    assert e.value.field == "run.data.n"
