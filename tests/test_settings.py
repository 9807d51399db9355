"""The one settings loader (tha.models.settings): defaults, a base, overrides, ignored keys and
every kind of bad input as one ThaError line that names the source and the key."""
from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from tha.models.errors import ThaError
from tha.models.settings import load_settings


@dataclass
class Inner:
    beta: float = 0.3


@dataclass(frozen=True)
class Settings:
    rate: float = 1.0
    name: str = "x"
    seed: int | None = None
    inner: Inner = field(default_factory=Inner)

    def __post_init__(self) -> None:
        if self.rate < 0:
            raise ThaError(f"rate={self.rate} must be >= 0")


def test_values_lay_over_the_defaults_or_a_base_then_overrides():
    assert load_settings(Settings, None, "s") == Settings()
    assert load_settings(Settings, {"rate": 2, "inner": {"beta": 1}}, "s") == Settings(rate=2.0, inner=Inner(1.0))
    base = Settings(rate=3.0, seed=7)
    assert load_settings(Settings, {"name": "y"}, "s", base=base) == Settings(rate=3.0, name="y", seed=7)
    assert load_settings(Settings, {"rate": 2}, "s", overrides=["rate=5", "inner.beta=0.5"]) == \
        Settings(rate=5.0, inner=Inner(0.5))


def test_ignored_keys_warn_and_other_unknown_keys_name_the_closest():
    with pytest.warns(UserWarning, match="s: ignoring crop, glow, which tha does not implement"):
        assert load_settings(Settings, {"glow": 1, "rate": 2, "crop": 0}, "s", ignore={"crop", "glow"}) == \
            Settings(rate=2.0)
    with pytest.raises(ThaError, match="^s: unknown key 'rat'; did you mean 'rate'\\?$"):
        load_settings(Settings, {"rat": 1}, "s", ignore={"crop"})
    with pytest.raises(ThaError, match="^s: unknown key 'inner.bta'; did you mean 'beta'\\?$"):
        load_settings(Settings, {"inner": {"bta": 1}}, "s")
    with pytest.raises(ThaError, match="^s: unknown key 'zzz'; known keys: rate, name, seed, inner$"):
        load_settings(Settings, {"zzz": 1}, "s")


@pytest.mark.parametrize("data, message", [
    ({"rate": "fast"}, "s: rate: Value 'fast' of type 'str' could not be converted to Float; see the docs"),
    ({"seed": 1.5}, "s: seed: Value '1.5' of type 'float' could not be converted to Integer; see the docs"),
    ({"rate": -1}, "s: rate=-1.0 must be >= 0"),
    ({"inner": 3}, "s: "),
    ([1], "s must be a mapping of settings"),
    ({"name": "${oc.env:HOME}"}, "s: name: '${' interpolation is not taken in settings given as data"),
    ({"inner": {"beta": "${oc.env:HOME}"}}, "s: inner.beta: '${' interpolation"),
])
def test_bad_values_are_one_line(data, message):
    with pytest.raises(ThaError) as err:
        load_settings(Settings, data, "s", fix="see the docs")
    assert str(err.value).startswith(message) and "\n" not in str(err.value)


def test_yaml_files_load_and_may_interpolate(tmp_path, monkeypatch):
    """A file is its author's own: OmegaConf's ${...} works there, as in any OmegaConf YAML."""
    path = tmp_path / "s.yaml"
    monkeypatch.setenv("THA_TEST_RATE", "4")
    path.write_text("rate: ${oc.env:THA_TEST_RATE}\nname: ${rate}\n")
    assert load_settings(Settings, path, str(path)) == Settings(rate=4.0, name="4.0")
    for text, message in [("rate: [1", "is not valid YAML"), ("[1, 2]", "must be a mapping"),
                          ("rat: 1", "unknown key 'rat'; did you mean 'rate'?")]:
        path.write_text(text)
        with pytest.raises(ThaError, match=f"^{path}") as err:
            load_settings(Settings, path, str(path))
        assert message in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(ThaError, match="cannot be read"):
        load_settings(Settings, tmp_path / "missing.yaml", "missing.yaml")
