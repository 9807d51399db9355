"""The one loader for settings: a dataclass is the schema, the user's values (a mapping, or a
YAML file) are laid over its defaults by OmegaConf, and every problem is one ThaError line
that names the source, the key and the fix.

Unknown keys are errors that name the closest known key, except those the caller lists in
``ignore``: keys another program's files carry that tha does not implement, dropped with a
warning so such files load as they are. Checks OmegaConf cannot express (ranges, one value
against another) live in the dataclass's ``__post_init__`` and come out as the same one line.
"""
from __future__ import annotations

import difflib
import warnings
from collections.abc import Collection, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import yaml
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ConfigKeyError, OmegaConfBaseException

from tha.models.errors import ThaError

T = TypeVar("T")


def load_settings(cls: type[T], source: Mapping[str, Any] | Path | None, what: str, *, base: T | None = None,
                  ignore: Collection[str] = (), overrides: Sequence[str] = (), fix: str = "") -> T:
    """``base`` (default: ``cls()``) with ``source`` laid over it, then ``overrides`` (``KEY=VALUE``,
    each VALUE read as YAML). ``what`` names the source in every error; ``fix`` ends the errors
    about values (say where the settings are documented).

    A YAML file may use OmegaConf's ``${...}`` interpolation (its author runs it); a mapping,
    which may come from a request, may not."""
    schema = OmegaConf.structured(cls if base is None else base)
    OmegaConf.set_readonly(schema, False)  # a frozen dataclass gives a read-only config
    user = _read_yaml(source, what) if isinstance(source, Path) else _plain(source, what)
    ignored = sorted(str(key) for key in user if key in ignore)
    if ignored:
        warnings.warn(f"{what}: ignoring {', '.join(ignored)}, which tha does not implement", stacklevel=2)
        for key in ignored:
            user.pop(key)
    try:
        merged = OmegaConf.merge(schema, user, OmegaConf.from_dotlist(list(overrides)))
        return OmegaConf.to_object(merged)  # type: ignore[return-value]
    except ConfigKeyError as err:
        raise ThaError(_unknown_key(schema, err, what)) from None
    except OmegaConfBaseException as err:
        key = getattr(err, "full_key", None) or _culprit(schema, user)
        reason = str(err).splitlines()[0]
        raise ThaError(f"{what}: {f'{key}: ' if key else ''}{reason}{f'; {fix}' if fix else ''}") from None
    except ThaError as err:  # a check in cls.__post_init__
        raise ThaError(f"{what}: {err}") from None


def _read_yaml(path: Path, what: str) -> DictConfig:
    try:
        data = OmegaConf.load(path)
    except OSError as err:
        raise ThaError(f"{what} cannot be read ({err.strerror or err})") from None
    except (yaml.YAMLError, UnicodeDecodeError) as err:
        raise ThaError(f"{what} is not valid YAML ({str(err).splitlines()[0]})") from None
    if not isinstance(data, DictConfig):
        raise ThaError(f"{what} must be a mapping of settings (KEY: VALUE lines), not a list")
    return data


def _plain(data: Mapping[str, Any] | None, what: str) -> dict[str, Any]:
    if data is None:
        return {}
    if not isinstance(data, Mapping):
        raise ThaError(f"{what} must be a mapping of settings (a JSON object), not {type(data).__name__}")
    _refuse_interpolation(data, what, "")
    return dict(data)


def _refuse_interpolation(value: Any, what: str, key: str) -> None:
    """OmegaConf resolves ``${oc.env:NAME}`` in any string; from a request body that would copy
    the server's environment into the error reply, so values given as data stay plain."""
    if isinstance(value, str) and "${" in value:
        raise ThaError(f"{what}: {key}: '${{' interpolation is not taken in settings given as data; "
                       "give a plain value")
    items = value.items() if isinstance(value, Mapping) else enumerate(value) if isinstance(value, list) else ()
    for name, item in items:
        _refuse_interpolation(item, what, f"{key}.{name}" if key else str(name))


def _unknown_key(schema: DictConfig, err: ConfigKeyError, what: str) -> str:
    full_key, key = str(err.full_key or err.key), str(err.key)
    parent = full_key[:-len(key)].rstrip(".") if full_key.endswith(key) else ""
    node = OmegaConf.select(schema, parent) if parent else schema
    known = [str(k) for k in node] if isinstance(node, DictConfig) else []
    close = difflib.get_close_matches(key, known, n=1)
    hint = f"did you mean '{close[0]}'?" if close else f"known keys: {', '.join(known)}" if known else "remove it"
    return f"{what}: unknown key '{full_key}'; {hint}"


def _culprit(schema: DictConfig, user: Mapping[str, Any]) -> str | None:
    """The top-level key whose value fails to merge: OmegaConf 2.4's tuple errors name none."""
    for key, value in user.items():
        try:
            OmegaConf.to_object(OmegaConf.merge(schema, {key: value}))
        except OmegaConfBaseException:
            return str(key)
        except ThaError:
            continue
    return None
