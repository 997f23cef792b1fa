"""What every command group shares: the error wrapper, the options that many commands take (declared once), model
loading, and options generated from config dataclasses so a setting cannot exist in one and not the other.

    @app.command()
    @friendly
    @config_options(ScalingConfig)           # one --option per field, help text from the field
    @model_options()                         # --model, --dtype, --device, --revision -> model: ModelRef
    def train(model: ModelRef, cfg: ScalingConfig, ...): ...
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import types
import typing
from pathlib import Path
from typing import Annotated, cast

import typer

from neuronlab.errors import NeuronlabError
from neuronlab.intervene.steer import VARIANTS
from neuronlab.io import check_writable


def friendly(fn):
    """Print a NeuronlabError, or an OSError (a file that cannot be read or written; writes already fail with a
    NeuronlabError), as one `error:` line and exit 2, without a traceback."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except NeuronlabError as err:
            typer.secho(f"error: {err}", fg="red", err=True)
            raise typer.Exit(2) from None
        except OSError as err:
            where = f"{err.filename}: " if err.filename else ""
            typer.secho(
                f"error: {where}{err.strerror or err}: check that path, its permissions and free disk space",
                fg="red",
                err=True,
            )
            raise typer.Exit(2) from None

    return wrapper


def group(help: str) -> typer.Typer:
    return typer.Typer(help=help, no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)


DtypeOpt = Annotated[str | None, typer.Option(help="float32, float16 or bfloat16 (default: the checkpoint's).")]
DeviceOpt = Annotated[str | None, typer.Option(help="Device such as cuda:0; 'auto' spreads a large model.")]
RevisionOpt = Annotated[str | None, typer.Option(help="Branch, tag or commit, e.g. Pythia's step1000.")]
StatsOpt = Annotated[Path, typer.Option("--stats", help="Stats file from `neuronlab record`.")]
OutOpt = Annotated[Path, typer.Option("--out", help="File to write.")]
JsonOutOpt = Annotated[Path | None, typer.Option("--out", help="Write the results as JSON.")]
PlotOpt = Annotated[Path | None, typer.Option("--plot", help="Write the figure (PNG).")]
TextOpt = Annotated[list[str] | None, typer.Option("--text", help="GROUP=FILE, one text per line; repeatable.")]
TextDirOpt = Annotated[Path | None, typer.Option(help="Folder of GROUP.txt files (see --pattern).")]
PatternOpt = Annotated[str, typer.Option(help="File pattern in --text-dir; FLORES: '*.devtest'.")]
BatchOpt = Annotated[int, typer.Option(help="Rows per forward pass.")]
MaxLengthOpt = Annotated[int, typer.Option(help="Tokens per window.")]


@dataclasses.dataclass(frozen=True)
class ModelRef:
    """The shared --model/--dtype/--device/--revision options; loads only when asked (after the cheap checks)."""

    name: str
    dtype: str | None = None
    device: str | None = None
    revision: str | None = None

    def load(self):
        """(model, tokenizer); under torchrun each rank joins the group and takes its own GPU (`setup_run`)."""
        from neuronlab.dist import setup_run
        from neuronlab.models.load import load_model

        return load_model(self.name, dtype=self.dtype, revision=self.revision, **setup_run(self.device))


def model_options(default: str | None = None, help: str = "Hugging Face hub id or local folder."):
    """Give a command --model (required unless `default`), --dtype, --device and --revision, and call it with
    `model=ModelRef(...)`."""
    opt = typer.Option("--model", "-m", help=help)
    params = [
        inspect.Parameter("model", inspect.Parameter.KEYWORD_ONLY, annotation=Annotated[str, opt])
        if default is None
        else inspect.Parameter(
            "model", inspect.Parameter.KEYWORD_ONLY, annotation=Annotated[str | None, opt], default=None
        )
    ]
    for name, annotation in (("dtype", DtypeOpt), ("device", DeviceOpt), ("revision", RevisionOpt)):
        params.append(inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, annotation=annotation, default=None))

    def build(values: dict) -> dict:
        name = values["model"] or default  # --model is required where there is no default
        return {"model": ModelRef(str(name), values["dtype"], values["device"], values["revision"])}

    return lambda fn: _with_params(fn, "model", params, build)


@dataclasses.dataclass(frozen=True)
class SteerRef:
    """The shared steering options (--neurons, --target, --variant, --factor, --stats); files load only when asked."""

    neurons: Path | None
    targets: list[str] | None
    variant: str
    factor: float
    stats: Path | None

    def plans(self, model) -> dict:
        """{target: Plan} checked against `model` ({} without --neurons)."""
        from neuronlab.intervene.steer import target_plans
        from neuronlab.record.stats import Stats
        from neuronlab.select.neuron_set import NeuronSet

        if self.neurons is None:
            if self.targets:
                raise NeuronlabError("--target needs --neurons")
            return {}
        stats = Stats.load(self.stats) if self.stats is not None else None
        return target_plans(model, NeuronSet.load(self.neurons), self.targets, self.variant, stats, self.factor)


def steering_options(variant: str = "p_max", required: bool = False):
    """Give a command the five steering options and call it with `steer=SteerRef(...)`; `required`: --neurons
    must be given."""
    neurons = typer.Option("--neurons", help="Neuron set (JSON) to steer with.")
    kw = inspect.Parameter.KEYWORD_ONLY
    params = [
        inspect.Parameter("neurons", kw, annotation=Annotated[Path, neurons])
        if required
        else inspect.Parameter("neurons", kw, annotation=Annotated[Path | None, neurons], default=None),
        inspect.Parameter(
            "target",
            kw,
            annotation=Annotated[
                list[str] | None,
                typer.Option(help="Language(s) whose neurons to steer (default: every language of --neurons)."),
            ],
            default=None,
        ),
        inspect.Parameter(
            "variant", kw, annotation=Annotated[str, typer.Option(help=f"{VARIANTS.names()}.")], default=variant
        ),
        inspect.Parameter(
            "factor", kw, annotation=Annotated[float, typer.Option(help="Factor for --variant scale.")], default=2.0
        ),
        inspect.Parameter(
            "stats",
            kw,
            annotation=Annotated[Path | None, typer.Option(help="Stats with pooled texts (p_max, p_median).")],
            default=None,
        ),
    ]

    def build(values: dict) -> dict:
        return {
            "steer": SteerRef(values["neurons"], values["target"], values["variant"], values["factor"], values["stats"])
        }

    return lambda fn: _with_params(fn, "steer", params, build)


def texts(
    text: list[str] | None, text_dir: Path | None, pattern: str, limit: int | None = None
) -> dict[str, list[str]]:
    """{group: lines} from --text GROUP=FILE pairs and/or a --text-dir, each cut to its first `limit` lines."""
    from neuronlab.data.corpora import read_groups

    found = read_groups(text or [], text_dir, pattern, limit)
    if not found:
        raise NeuronlabError("no texts: pass --text GROUP=FILE (repeatable) or --text-dir DIR")
    return found


def writable(*paths: Path | None, folder: bool = False) -> None:
    """Check output paths before any work starts (one clear error, nothing lost)."""
    check_writable(*paths, folder=folder)


# ---------------------------------------------------------------- options from config dataclasses


def _cli_type(hint) -> tuple[object, bool]:
    """(type typer understands, whether the field is a tuple given as a repeatable or comma-separated option)."""
    optional = typing.get_origin(hint) in (typing.Union, types.UnionType) and type(None) in typing.get_args(hint)
    inner = next(a for a in typing.get_args(hint) if a is not type(None)) if optional else hint
    if typing.get_origin(inner) is tuple:
        return list[str] | None, True  # parsed by _as_tuple: comma-separated values, or "none" for an empty tuple
    return (inner | None) if optional else inner, False


def config_fields(cls) -> list[dataclasses.Field]:
    return [f for f in dataclasses.fields(cls) if "help" in f.metadata]


def option_name(f: dataclasses.Field) -> str:
    return f.metadata.get("cli") or "--" + f.name.replace("_", "-")


def _tuple_kind(hint) -> type:
    """The element type of a (possibly optional) tuple[X, ...] hint."""
    inner = next((a for a in typing.get_args(hint) if typing.get_origin(a) is tuple), hint)
    return typing.get_args(inner)[0]


def _as_tuple(values: list | None, default, kind: type = str, name: str = "--option"):
    """A repeatable option's values as a tuple of `kind` (each value may also be comma-separated); the default if
    none is given, and an empty tuple for the single value "none"."""
    if not values:
        return default
    parts = [part.strip() for v in values for part in str(v).split(",") if part.strip()]
    if [p.lower() for p in parts] == ["none"]:
        return ()
    try:
        return tuple(kind(p) for p in parts)
    except ValueError:
        raise NeuronlabError(f"{name}: {', '.join(parts)} are not all {kind.__name__} values (or give none)") from None


def _with_params(fn, replaced: str, extra: list[inspect.Parameter], build):
    """`fn` with its parameter `replaced` swapped for the parameters `extra` (which typer turns into options);
    `build(values of extra) -> {name: value}` makes what `fn` receives instead."""
    sig = inspect.signature(fn, eval_str=True)
    own = [p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for name, p in sig.parameters.items() if name != replaced]
    names = [p.name for p in extra]

    @functools.wraps(fn)
    def wrapper(**kwargs):
        values = {name: kwargs.pop(name) for name in names}
        return fn(**build(values), **kwargs)

    params = own + extra
    wrapper.__signature__ = sig.replace(parameters=params)  # type: ignore[attr-defined]
    wrapper.__annotations__ = {p.name: p.annotation for p in params}
    return wrapper


def config_options(cls, skip: tuple[str, ...] = ()):
    """Give a command one option per field of the config dataclass `cls` (help from the field's metadata), and
    call it with `cfg=cls(...)` built from them. Tuple fields take a repeatable option (comma-separated values
    also work)."""
    hints = typing.get_type_hints(cls)
    chosen = [f for f in config_fields(cls) if f.name not in skip]
    extra, is_tuple, kinds = [], {}, {}
    for f in chosen:
        typ, is_tuple[f.name] = _cli_type(hints[f.name])
        if is_tuple[f.name]:
            kinds[f.name] = _tuple_kind(hints[f.name])
        text = f.metadata["help"]
        if is_tuple[f.name] and f.default:
            text += f" (repeatable or comma-separated) [default: {','.join(map(str, cast(tuple, f.default)))}]"
        name = option_name(f)
        if typ is bool or typ == bool | None:  # a switch with its negation (a default of True can be turned off)
            name = f"{name}/--no-{name[2:]}"
        opt = typer.Option(
            name,
            help=text,
            show_default=not is_tuple[f.name],
            metavar=kinds[f.name].__name__.upper() if is_tuple[f.name] else None,
        )
        extra.append(
            inspect.Parameter(
                f.name,
                inspect.Parameter.KEYWORD_ONLY,
                annotation=Annotated[typ, opt],
                default=None if is_tuple[f.name] else f.default,
            )
        )

    def build(values: dict) -> dict:
        return {
            "cfg": cls(
                **{
                    f.name: _as_tuple(values[f.name], f.default, kinds[f.name], option_name(f))
                    if is_tuple[f.name]
                    else values[f.name]
                    for f in chosen
                }
            )
        }

    return lambda fn: _with_params(fn, "cfg", extra, build)
