"""Config files (YAML or TOML, one schema): global options, a `models` list with per-model
overrides, and a `batch` section. Validated with pydantic; every error names the file and the
field path.

    bits: 4
    per_channel: true
    models:
      - input: models/resnet18.onnx
        output: quantized/resnet18_int4.onnx
        bits: 8                      # per-model override
    batch:
      input_dir: "models/*.onnx"     # a glob, a folder, or a list of them
      output_dir: quantized/
      skip_existing: true

Relative paths are relative to the config file's folder; batch.skip_existing, continue_on_error
and jobs apply to every model the file names. Precedence, highest first: a
command-line flag, the model's own setting, the file's global setting, the built-in default.
"""

from __future__ import annotations

import dataclasses
import tomllib
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from quantrs.config import QuantizeConfig, options
from quantrs.errors import ConfigError, first_line

if TYPE_CHECKING:
    from quantrs.batch import Job

__all__ = ["Options", "ModelEntry", "BatchSection", "ConfigFile", "load_config", "resolve", "jobs_from_config"]


_NO_MODEL = "the config names no model: add a `models` list or a `batch` section"


def _set_fields(self: Options) -> dict[str, Any]:
    """The options this layer sets (None means "not set here")."""
    return {f.name: getattr(self, f.name) for f in dataclasses.fields(Options) if getattr(self, f.name) is not None}


def _options_class() -> type:
    """Every QuantizeConfig option, optional, typed as config files give them (derived from
    QuantizeConfig's declaration, so the schema follows every new option)."""
    hints = typing.get_type_hints(QuantizeConfig)
    fields = [(f.name, spec.file_type or hints[f.name], None) for f, spec in options()]
    fields = [(name, typing.Optional[kind], dataclasses.field(default=default)) for name, kind, default in fields]  # noqa: UP045
    cls = dataclasses.make_dataclass(
        "Options",
        fields,
        namespace={"set_fields": _set_fields, "__pydantic_config__": {"extra": "forbid"}, "__module__": __name__},
        frozen=True,
        kw_only=True,
    )
    cls.__doc__ = 'Every QuantizeConfig option, optional: None means "not set here".'
    return cls


if TYPE_CHECKING:  # the class is built at run time from QuantizeConfig's declaration

    @dataclass(frozen=True, kw_only=True)
    class Options:
        def set_fields(self) -> dict[str, Any]: ...

else:
    Options = _options_class()


@dataclass(frozen=True, kw_only=True)
class ModelEntry(Options):
    __pydantic_config__ = {"extra": "forbid"}

    input: str
    output: str


@dataclass(frozen=True, kw_only=True)
class BatchSection:
    __pydantic_config__ = {"extra": "forbid"}

    input_dir: str | list[str]
    output_dir: str
    skip_existing: bool = False
    continue_on_error: bool = False
    jobs: int = 1


@dataclass(frozen=True, kw_only=True)
class ConfigFile(Options):
    __pydantic_config__ = {"extra": "forbid"}

    models: list[ModelEntry] = field(default_factory=list)
    batch: BatchSection | None = None


def load_config(path: str | Path) -> ConfigFile:
    """Read and validate a .yaml/.yml or .toml config file (one that names no model is refused)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: no such config file")
    suffix = path.suffix.lower()
    try:
        if suffix in (".yaml", ".yml"):
            import yaml

            raw = yaml.safe_load(path.read_text(encoding="utf-8"))
        elif suffix == ".toml":
            with open(path, "rb") as f:
                raw = tomllib.load(f)
        else:
            raise ConfigError(f"{path}: unknown config format {suffix!r} (use .yaml, .yml or .toml)")
    except ConfigError:
        raise
    except Exception as exc:  # yaml.YAMLError, tomllib.TOMLDecodeError, UnicodeDecodeError
        raise ConfigError(f"{path}: not valid {suffix[1:].upper()} ({first_line(exc)})") from None
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of settings")
    return _validate(raw, path)


def _validate(raw: dict, path: Path) -> ConfigFile:
    from pydantic import TypeAdapter, ValidationError

    try:
        config = TypeAdapter(ConfigFile).validate_python(raw)
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            where = ".".join(str(part) for part in error["loc"]) or "(top level)"
            message = "unknown key" if error["type"] == "unexpected_keyword_argument" else error["msg"]
            problems.append(f"{where}: {message}")
        raise ConfigError(f"{path}: " + "; ".join(problems)) from None
    for where, layer in [("(top level)", config)] + [(f"models.{i}", m) for i, m in enumerate(config.models)]:
        try:
            QuantizeConfig(**layer.set_fields())
        except ConfigError as exc:
            raise ConfigError(f"{path}: {where}: {exc}") from None
    if not config.models and config.batch is None:
        raise ConfigError(f"{path}: {_NO_MODEL}")
    return config


def resolve(*layers: Options | dict[str, Any] | None) -> QuantizeConfig:
    """A QuantizeConfig from option layers, lowest precedence first (later layers win)."""
    merged: dict[str, Any] = {}
    for layer in layers:
        if layer is None:
            continue
        merged.update(layer.set_fields() if isinstance(layer, Options) else {k: v for k, v in layer.items() if v is not None})
    return QuantizeConfig(**merged)


def jobs_from_config(
    config: ConfigFile, base: Path, cli: dict[str, Any] | None = None, *, file: str | Path | None = None
) -> list[Job]:
    """Every model the file names: its `models` entries, then what its `batch` section matches.

    Each job's options: defaults < the file's globals < the model's own < `cli` (flags given on
    the command line). Relative paths are taken from `base`, the config file's folder.
    """
    from quantrs.batch import Job, expand_inputs, make_jobs

    source = f"{file}: " if file is not None else ""

    def at(p: str) -> Path:
        return Path(p) if Path(p).is_absolute() else base / p

    jobs = [
        Job(at(m.input), at(m.output), resolve(config, m, cli), origin=f"{source}models.{i}") for i, m in enumerate(config.models)
    ]
    if config.batch is not None:
        patterns = [config.batch.input_dir] if isinstance(config.batch.input_dir, str) else config.batch.input_dir
        found = make_jobs(expand_inputs(patterns, base), at(config.batch.output_dir), resolve(config, cli))
        jobs += [dataclasses.replace(job, origin=f"{source}(top level)") for job in found]
    if not jobs:  # a ConfigFile built in code (load_config refuses such a file)
        raise ConfigError(_NO_MODEL, file=file)
    return jobs
