"""The one configuration object.

Precedence, lowest to highest: built-in defaults < TOML file (``--config`` or
``KANITTS_CONFIG``) < ``KANITTS_*`` environment variables (nested keys with ``__``, e.g.
``KANITTS_ENGINE__MODE=balanced``) < command-line flags. Everything is validated at
start-up; errors name the offending key (``engine.mode: ...``) so a typo never becomes a
silent default.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Annotated, Any

from pydantic import Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, PydanticBaseSettingsSource, SettingsConfigDict
from pydantic_settings.exceptions import SettingsError

from kanitts.hub import looks_local
from kanitts.config_sections import (  # noqa: F401 - the sections are part of this module's API
    DEFAULT_CODEC,
    CodecSettings,
    EngineConfig,
    GenerationConfig,
    LanguageConfig,
    LongFormConfig,
    ResponseFormat,
    SecurityConfig,
    ServerConfig,
    TextConfig,
    _split_list,
)
from kanitts.voices.settings import VoicesConfig

class ConfigError(ValueError):
    """Invalid configuration; the message names every bad key."""


def _default_languages() -> dict[str, LanguageConfig]:
    return {
        "en": LanguageConfig(model="nineninesix/kani-tts-400m-en", default_voice="andrew"),
        "es": LanguageConfig(model="nineninesix/kani-tts-400m-es", default_voice="nova"),
        "de": LanguageConfig(model="nineninesix/kani-tts-400m-de", voices=["bert", "thorsten"],
                             default_voice="thorsten"),
    }


def _default_aliases() -> dict[str, dict[str, str]]:
    male_en, female_en = "andrew", "katie"
    return {
        "alloy": {"en": female_en, "es": "nova"},
        "ash": {"en": male_en, "es": "ash"},
        "ballad": {"en": male_en, "es": "ballad"},
        "coral": {"en": female_en, "es": "nova"},
        "echo": {"en": male_en, "es": "ash"},
        "fable": {"en": male_en, "es": "ballad"},
        "onyx": {"en": male_en, "es": "ash"},
        "nova": {"en": female_en, "es": "nova"},
        "sage": {"en": female_en, "es": "nova"},
        "shimmer": {"en": female_en, "es": "nova"},
        "verse": {"en": male_en, "es": "ballad"},
        "marin": {"en": female_en, "es": "nova"},
        "cedar": {"en": male_en, "es": "ash"},
    }


class Settings(BaseSettings):
    """Everything configurable. See README "Configuration reference"."""

    model_config = SettingsConfigDict(
        env_prefix="KANITTS_",
        env_nested_delimiter="__",
        extra="forbid",
        validate_assignment=True,
    )

    #: Load every language in ``languages`` and route by detection; else only the default.
    multi_language: bool = True
    default_language: str = "en"
    languages: dict[str, LanguageConfig] = Field(default_factory=_default_languages)
    #: OpenAI voice name -> our voice per language (used when a model lacks that voice).
    voice_aliases: dict[str, dict[str, str]] = Field(default_factory=_default_aliases)
    codec: CodecSettings = Field(default_factory=CodecSettings)
    generation: GenerationConfig = Field(default_factory=GenerationConfig)
    long_form: LongFormConfig = Field(default_factory=LongFormConfig)
    text: TextConfig = Field(default_factory=TextConfig)
    engine: EngineConfig = Field(default_factory=EngineConfig)
    server: ServerConfig = Field(default_factory=ServerConfig)
    security: SecurityConfig = Field(default_factory=SecurityConfig)
    voices: VoicesConfig = Field(default_factory=VoicesConfig)
    #: Bearer keys accepted by the API (``KANITTS_API_KEYS`` may be comma-separated).
    api_keys: Annotated[list[str], NoDecode] = Field(default_factory=list)
    #: File with one key per line (blank lines and ``#`` comments ignored).
    api_keys_file: Path | None = None
    #: Admin keys: accepted like ``api_keys``, and may also share, see and delete any
    #: custom voice.
    admin_api_keys: Annotated[list[str], NoDecode] = Field(default_factory=list)

    @field_validator("api_keys", "admin_api_keys", mode="before")
    @classmethod
    def _split_keys(cls, v: Any) -> Any:
        return _split_list(v)

    @model_validator(mode="after")
    def _check(self) -> "Settings":
        if self.default_language not in self.languages:
            raise ValueError(
                f"default_language {self.default_language!r} has no [languages.{self.default_language}] "
                f"table (configured: {', '.join(sorted(self.languages)) or 'none'})"
            )
        for code, lang in self.languages.items():
            if lang.voices is not None and lang.default_voice and lang.default_voice not in lang.voices:
                raise ValueError(
                    f"languages.{code}.default_voice {lang.default_voice!r} is not in "
                    f"languages.{code}.voices {lang.voices}"
                )
        return self

    # -- derived -------------------------------------------------------------------
    def active_languages(self) -> list[str]:
        """Languages whose models load: all when multi_language, else the default one."""
        if self.multi_language:
            return list(self.languages)
        return [self.default_language]

    def all_api_keys(self) -> list[str]:
        """Every accepted key: ``api_keys``, the lines of ``api_keys_file``, ``admin_api_keys``."""
        keys = [k for k in [*self.api_keys, *self.admin_api_keys] if k]
        if self.api_keys_file is not None:
            try:
                text = Path(self.api_keys_file).expanduser().read_text()
            except OSError as exc:
                raise ConfigError(f"api_keys_file: cannot read {self.api_keys_file}: {exc}") from None
            for line in text.splitlines():
                line = line.strip()
                if line and not line.startswith("#"):
                    keys.append(line)
        return keys

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # init (CLI flags, already merged with the file by load_settings) > env.
        # The file is merged below env inside load_settings so that precedence holds.
        return (_InitOverEnv(settings_cls, init_settings, env_settings),)


class _InitOverEnv(PydanticBaseSettingsSource):
    """Deep-merges: file (lowest) < env < CLI, for nested tables too."""

    def __init__(
        self,
        settings_cls: type[BaseSettings],
        init: PydanticBaseSettingsSource,
        env: PydanticBaseSettingsSource,
    ) -> None:
        super().__init__(settings_cls)
        self._init = init
        self._env = env

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:  # pragma: no cover
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        init = dict(self._init())
        file_layer = init.pop("__file__", {}) or {}
        cli_layer = init
        env_layer = self._env()
        return _deep_merge(_deep_merge(file_layer, env_layer), cli_layer)


def _deep_merge(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in top.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _deep_merge(out[k], v)
        else:
            out[k] = v
    return out


def read_config_file(path: str | Path) -> dict[str, Any]:
    p = Path(path).expanduser()
    try:
        with p.open("rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"config file {p} does not exist") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {p}: invalid TOML: {exc}") from None
    except OSError as exc:
        raise ConfigError(f"config file {p}: {exc}") from None


def _local_path(value: Any, base: Path) -> Any:
    """``value`` joined to ``base`` when it is a relative path: it looks like one
    (:func:`kanitts.hub.looks_local`) or names something that exists under ``base``."""
    if not isinstance(value, str) or not value or value.startswith(("/", "~")):
        return value
    if looks_local(value) or (base / value).exists():
        return str((base / value).resolve())
    return value


def _paths_from_file(layer: dict[str, Any], file_path: Path) -> dict[str, Any]:
    """The config file's layer with its relative paths (``languages.*.model``,
    ``codec.model``, ``api_keys_file``) made relative to the file's folder, not the
    working directory."""
    base = file_path.expanduser().resolve().parent
    out = dict(layer)
    langs = out.get("languages")
    if isinstance(langs, dict):
        out["languages"] = {
            code: ({**t, "model": _local_path(t.get("model"), base)} if isinstance(t, dict) and "model" in t else t)
            for code, t in langs.items()
        }
    codec = out.get("codec")
    if isinstance(codec, dict) and "model" in codec:
        out["codec"] = {**codec, "model": _local_path(codec["model"], base)}
    if "api_keys_file" in out:
        out["api_keys_file"] = _local_path(out["api_keys_file"], base)
    return out


def _format_errors(exc: ValidationError) -> str:
    lines = []
    for err in exc.errors():
        loc = ".".join(str(x) for x in err["loc"]) or "(root)"
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            msg = "unknown key"
        lines.append(f"{loc}: {msg}")
    return "invalid configuration:\n  " + "\n  ".join(lines)


def load_settings(
    config_file: str | Path | None = None,
    cli: dict[str, Any] | None = None,
    *,
    env: bool = True,
) -> Settings:
    """Build the effective :class:`Settings` (defaults < file < env < CLI).

    ``cli`` is a nested dict of values given on the command line (``None`` values are
    dropped so unset flags never override anything).
    """
    file_path = config_file or os.environ.get("KANITTS_CONFIG")
    file_layer = _paths_from_file(read_config_file(file_path), Path(file_path)) if file_path else {}
    cli_layer = _drop_none(cli or {})
    kwargs = dict(cli_layer)
    kwargs["__file__"] = file_layer
    try:
        if env:
            return Settings(**kwargs)
        return _NoEnvSettings(**kwargs)
    except ValidationError as exc:
        raise ConfigError(_format_errors(exc)) from None
    except SettingsError as exc:
        raise ConfigError(f"invalid configuration from the environment: {exc}") from None


class _NoEnvSettings(Settings):
    model_config = SettingsConfigDict(env_prefix="KANITTS_NO_ENV_SOURCE_", extra="forbid")


def _drop_none(d: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            sub = _drop_none(v)
            if sub:
                out[k] = sub
        elif v is not None:
            out[k] = v
    return out


def _flatten(d: Any, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    if isinstance(d, dict):
        for k, v in d.items():
            key = f"{prefix}.{k}" if prefix else str(k)
            if isinstance(v, dict) and v:
                out.update(_flatten(v, key))
            else:
                out[key] = v
    return out


def explain_settings(
    config_file: str | Path | None = None,
    cli: dict[str, Any] | None = None,
    settings: Settings | None = None,
) -> list[tuple[str, Any, str]]:
    """(key, effective value, source) for every leaf key — for ``kanitts config show``.

    The source is the highest layer that set the key (or a parent table of it):
    ``cli``, ``env``, ``file:PATH`` or ``default``. ``settings``: the effective object when
    the caller built it (the CLI does, so ``config show`` shows exactly what ``serve`` uses).
    """
    if settings is None:
        settings = load_settings(config_file, cli)
    file_path = config_file or os.environ.get("KANITTS_CONFIG")
    layers: list[tuple[str, dict[str, Any]]] = [
        ("cli", _flatten(_drop_none(cli or {}))),
        ("env", _flatten(_env_layer())),
    ]
    if file_path:
        layers.append((f"file:{file_path}", _flatten(read_config_file(file_path))))
    rows = []
    for key, value in _flatten(settings.model_dump(mode="json")).items():
        source = "default"
        for name, flat in layers:
            if any(key == k or key.startswith(k + ".") or k.startswith(key + ".") for k in flat):
                source = name
                break
        rows.append((key, value, source))
    return rows


def _env_layer() -> dict[str, Any]:
    from pydantic_settings import EnvSettingsSource

    return EnvSettingsSource(Settings)()
