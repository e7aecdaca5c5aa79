"""Turn a config dataclass into a click command: one option per field, the field's docstring as its help.

Why not tyro or jsonargparse: click is small and already a dependency, commands load lazily, and this keeps
exact control of help, of `--config FILE` with CLI flags overriding, and of the `error: ...` / exit-2 contract.

Rules (CONVENTIONS.md, "Configs are the CLI"):
- field `max_seq_len` -> `--max-seq-len`; bool -> `--flag/--no-flag`; Literal -> a choice; list/tuple -> the
  option repeated or one comma list (`--features 1,2,7-9`: int lists also take ranges); dict -> JSON text;
  Optional[X] is X with "none" accepted where None is the default.
- A field without a default is a required option, unless `--config` gives it.
- `--config FILE.yaml|json` gives field values (a `config.json` written by `mmsae.io.write_config` works as is);
  options given on the command line override them; an unknown key is an error naming it.
- Only the values given (file or flags) reach the dataclass; the rest keep the dataclass's own defaults, so a
  default_factory runs only when needed.
- ValueError / FileNotFoundError (from `__post_init__` or from the run) -> `error: ...` on stderr, exit code 2.
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
import json
import textwrap
import types
import typing
from pathlib import Path
from typing import Any, Callable

import click
from click.core import ParameterSource

NONE_WORDS = ("none", "null")


def field_docs(cls: type) -> dict[str, str]:
    """{field name: the string literal right after the field's line} over the class and its dataclass bases."""
    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if not dataclasses.is_dataclass(klass) or klass is object:
            continue
        try:
            tree = ast.parse(textwrap.dedent(inspect.getsource(klass)))
        except (OSError, TypeError, SyntaxError):
            continue
        body = tree.body[0].body if tree.body and isinstance(tree.body[0], ast.ClassDef) else []
        for node, nxt in zip(body, body[1:]):
            if (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and isinstance(nxt, ast.Expr)
                    and isinstance(nxt.value, ast.Constant) and isinstance(nxt.value.value, str)):
                docs[node.target.id] = " ".join(nxt.value.value.split())
    return docs


def class_summary(cls: type) -> str:
    """The first paragraph of the class docstring (a dataclass without one gets a generated signature)."""
    doc = cls.__dict__.get("__doc__") or ""
    if doc.startswith(f"{cls.__name__}("):  # dataclass's automatic docstring
        return ""
    return inspect.cleandoc(doc).split("\n\n")[0].replace("\n", " ")


# -- types ----------------------------------------------------------------------------------------------

def _unwrap_optional(tp: Any) -> tuple[Any, bool]:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) < len(typing.get_args(tp)):
            return (args[0] if len(args) == 1 else typing.Union[tuple(args)]), True
    return tp, False


def _scalar(tp: Any, text: str, name: str) -> Any:
    """One CLI word as a value of `tp`; ValueError names the field."""
    origin = typing.get_origin(tp)
    if origin is typing.Literal:
        for choice in typing.get_args(tp):
            if str(choice) == text:
                return choice
        raise ValueError(f"{name} must be one of {', '.join(map(str, typing.get_args(tp)))}, got {text!r}")
    if tp is bool:
        low = text.lower()
        if low in ("1", "true", "yes", "on"):
            return True
        if low in ("0", "false", "no", "off"):
            return False
        raise ValueError(f"{name} must be true or false, got {text!r}")
    if tp in (int, float):
        try:
            return tp(text)
        except ValueError:
            raise ValueError(f"{name} must be {'an integer' if tp is int else 'a number'}, got {text!r}") from None
    if tp is Path:
        return Path(text)
    if tp in (str, Any):
        return text
    raise TypeError(f"{name}: no CLI conversion for type {tp!r}")


def _sequence(elem: Any, words: list[str], name: str) -> list:
    """Comma lists and repeated options, flattened; int lists also take ranges such as 7-9."""
    out: list = []
    for word in words:
        for item in filter(None, (t.strip() for t in word.split(","))):
            lo, dash, hi = item.partition("-")
            if elem is int and dash and lo.isdigit() and hi.isdigit():
                if int(hi) < int(lo):
                    raise ValueError(f"{name}: range {item!r} ends before it starts")
                out.extend(range(int(lo), int(hi) + 1))
            else:
                out.append(_scalar(elem, item, name))
    return out


class FieldSpec:
    """How one dataclass field reads from the CLI and from a config file."""

    def __init__(self, f: dataclasses.Field, tp: Any, doc: str):
        self.name, self.doc = f.name, doc
        self.flag = "--" + f.name.replace("_", "-")
        self.base, self.optional = _unwrap_optional(tp)
        self.required = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        self.default = f.default
        self.dynamic = f.default_factory is not dataclasses.MISSING
        origin = typing.get_origin(self.base)
        self.kind = ("bool" if self.base is bool else "seq" if origin in (list, tuple) or self.base in (list, tuple)
                     else "dict" if origin is dict or self.base is dict else "scalar")
        self.container = tuple if (origin is tuple or self.base is tuple) else list
        args = [a for a in typing.get_args(self.base) if a is not Ellipsis]
        self.elem = args[0] if args else str
        self.fixed_len = len(args) if origin is tuple and Ellipsis not in typing.get_args(self.base) and len(args) > 1 else None

    def from_words(self, words: list[str] | str) -> Any:
        """The value from what the CLI gave (a list for sequences, else one string)."""
        if self.kind == "seq":
            if self.optional and len(words) == 1 and words[0].lower() in NONE_WORDS:
                return None
            return self._check_len(self.container(_sequence(self.elem, list(words), self.name)))
        if self.optional and isinstance(words, str) and words.lower() in NONE_WORDS:
            return None
        if self.kind == "dict":
            try:
                value = json.loads(words)
            except json.JSONDecodeError as err:
                raise ValueError(f"{self.name} must be a JSON object, got {words!r} ({err})") from None
            if not isinstance(value, dict):
                raise ValueError(f"{self.name} must be a JSON object, got {words!r}")
            return value
        return _scalar(self.base, words, self.name)

    def from_file(self, value: Any) -> Any:
        """A value from a JSON/YAML config: strings are read as on the CLI, lists element by element."""
        if value is None:
            if not self.optional:
                raise ValueError(f"{self.name} must not be null")
            return None
        if self.kind == "seq":
            items = value if isinstance(value, list) else [value]
            words = [str(v) for v in items]
            return self._check_len(self.container(_sequence(self.elem, words, self.name)))
        if self.kind == "dict":
            if not isinstance(value, dict):
                raise ValueError(f"{self.name} must be a mapping, got {value!r}")
            return value
        if self.kind == "bool" and isinstance(value, bool):
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool) and self.base in (int, float):
            if self.base is int and value != int(value):
                raise ValueError(f"{self.name} must be an integer, got {value!r}")
            return self.base(value)
        return _scalar(self.base, str(value), self.name)

    def _check_len(self, value):
        if self.fixed_len is not None and len(value) != self.fixed_len:
            raise ValueError(f"{self.name} takes {self.fixed_len} values, got {len(value)}")
        return value

    def help(self) -> str:
        parts = [self.doc] if self.doc else []
        if self.required:
            parts.append("[required]")
        elif self.dynamic:
            parts.append("[default: computed]")
        elif self.kind != "bool" and self.default is not None:
            shown = ",".join(map(str, self.default)) if isinstance(self.default, (list, tuple)) else self.default
            parts.append(f"[default: {shown}]")
        return " ".join(parts)

    def option(self) -> click.Option:
        if self.kind == "bool":
            no = "--no-" + self.flag[2:]
            default = bool(self.default) if isinstance(self.default, bool) else False
            return click.Option([f"{self.flag}/{no}", self.name], default=default, help=self.help()
                                + (f" [default: {self.flag if default else no}]" if not self.required else ""))
        metavar = self._metavar()
        if self.kind == "seq":
            return click.Option([self.flag, self.name], multiple=True, metavar=metavar, help=self.help())
        return click.Option([self.flag, self.name], default=None, metavar=metavar, help=self.help())

    def _metavar(self) -> str:
        if typing.get_origin(self.base) is typing.Literal:
            return "[" + "|".join(map(str, typing.get_args(self.base))) + "]"
        if self.kind == "seq":
            return f"{getattr(self.elem, '__name__', 'TEXT').upper()},..."
        if self.kind == "dict":
            return "JSON"
        return {int: "INT", float: "FLOAT", Path: "PATH"}.get(self.base, "TEXT")


def field_specs(cls: type) -> list[FieldSpec]:
    hints = typing.get_type_hints(cls)
    docs = field_docs(cls)
    return [FieldSpec(f, hints[f.name], docs.get(f.name, "")) for f in dataclasses.fields(cls) if f.init]


# -- config files ---------------------------------------------------------------------------------------

def load_config_file(path: Path, cls: type) -> dict[str, Any]:
    """The mapping in a .json / .yaml / .yml file; the `config` key written by write_config is checked and dropped."""
    text = Path(path).read_text()
    if Path(path).suffix.lower() in (".yaml", ".yml"):
        import yaml

        data = yaml.safe_load(text) or {}
    elif Path(path).suffix.lower() == ".json":
        data = json.loads(text)
    else:
        raise ValueError(f"config {path}: expected a .json, .yaml or .yml file")
    if not isinstance(data, dict):
        raise ValueError(f"config {path}: expected a mapping of field names to values")
    names = {f.name for f in dataclasses.fields(cls)}
    if "config" in data and "config" not in names:
        if data["config"] != cls.__name__:
            raise ValueError(f"config {path} is a {data['config']}, this command takes a {cls.__name__}")
        data = {k: v for k, v in data.items() if k != "config"}
    return {k.replace("-", "_"): v for k, v in data.items()}


def build_config(cls: type, specs: list[FieldSpec], given: dict[str, Any], file_values: dict[str, Any],
                 source: str) -> Any:
    """The dataclass from file values overridden by CLI values; UsageError for unknown or missing fields."""
    by_name = {s.name: s for s in specs}
    unknown = sorted(set(file_values) - set(by_name))
    if unknown:
        raise click.UsageError(f"unknown key {unknown[0]!r} in {source} (fields of {cls.__name__}: "
                               f"{', '.join(by_name)})")
    values = {k: by_name[k].from_file(v) for k, v in file_values.items()}
    values.update(given)
    missing = [s.flag for s in specs if s.required and s.name not in values]
    if missing:
        raise click.UsageError(f"Missing option '{missing[0]}' (give it on the command line or in --config).")
    return cls(**values)


# -- the command ----------------------------------------------------------------------------------------

def _errors() -> tuple[type[BaseException], ...]:
    from mmsae.data import Reject  # a record the data cannot give (bad image, missing file)

    return (ValueError, FileNotFoundError, ImportError, Reject)


def config_command(name: str, cls: type, run: Callable[[Any], Any], formatter: Callable | None = None,
                   help: str | None = None) -> click.Command:
    """A click command whose options are `cls`'s fields; it builds the config, calls `run(cfg)` and prints the
    result: through `formatter(result, cfg) -> str | (str, exit_code)` when given (`--json` prints the result
    as JSON instead), else as JSON."""
    specs = field_specs(cls)
    params: list[click.Parameter] = [s.option() for s in specs]
    params.append(click.Option(["--config", "config_file"], type=click.Path(exists=True, dir_okay=False, path_type=Path),
                               help="JSON or YAML file of field values; options given here override it."))
    if formatter is not None:
        params.append(click.Option(["--json", "as_json"], is_flag=True, help="Print the result as JSON."))

    def callback(**kwargs: Any) -> None:
        ctx = click.get_current_context()
        as_json = kwargs.pop("as_json", formatter is None)
        config_file = kwargs.pop("config_file")
        given: dict[str, Any] = {}
        try:
            for s in specs:
                src = ctx.get_parameter_source(s.name)
                if src in (ParameterSource.COMMANDLINE, ParameterSource.ENVIRONMENT, ParameterSource.PROMPT):
                    raw = kwargs[s.name]
                    given[s.name] = raw if s.kind == "bool" else s.from_words(list(raw) if s.kind == "seq" else raw)
            file_values = load_config_file(config_file, cls) if config_file else {}
            cfg = build_config(cls, specs, given, file_values, str(config_file or "the options"))
            result = run(cfg)
        except click.UsageError:
            raise
        except _errors() as err:
            click.echo(f"error: {err}", err=True)
            ctx.exit(2)
        code = 0
        if as_json or formatter is None:
            click.echo(json.dumps(result, indent=1, default=str))
        else:
            text = formatter(result, cfg)
            if isinstance(text, tuple):
                text, code = text
            if text:
                click.echo(text)
        ctx.exit(code)

    return click.Command(name, params=params, callback=callback, help=help if help is not None else class_summary(cls))
