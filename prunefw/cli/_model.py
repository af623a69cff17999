"""Building the model named on the command line.

``--model`` takes one of three forms:

* ``package.module:factory``: a callable (a function or an ``nn.Module`` class)
  that takes no arguments and returns the model: ``prunefw.examples:digits_mlp``,
  ``mypackage.models:ResNet``, or a file, ``path/to/models.py:build``. The current
  directory is importable, as with ``python -m``.
* a Hugging Face model directory (an existing directory, or a path ending with
  ``/``, holding ``config.json``): loaded with ``from_pretrained(dir,
  local_files_only=True)`` of the class ``config.json`` names in
  ``architectures`` (else ``AutoModelForCausalLM``, else ``AutoModel``). A
  directory that ``prunefw prune --out DIR/`` wrote with pruning masks is built
  from its config and its masked weights are loaded by the caller
  (:func:`prunefw.cli.report.load_model`).
* a transformers config file (``*.json``): the model it describes, with random
  weights (seeded: the same config gives the same model).

Nothing is ever downloaded, and no model code from a directory is run
(``trust_remote_code`` stays off). transformers is optional (``pip install
'prunefw[transformers]'``) and only imported for the last two forms.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import difflib
import importlib
import importlib.util
import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import torch
from torch import nn

from prunefw.errors import InvalidArgumentError

__all__ = [
    "PIP_TRANSFORMERS",
    "add_model_argument",
    "build_model",
    "check_hf_model",
    "hf_model_path",
    "is_pretrained_model",
    "model_spec",
    "quiet_transformers",
    "save_config_files",
    "save_pretrained_files",
]

#: How to install the optional transformers support (named in error messages).
PIP_TRANSFORMERS = "pip install 'prunefw[transformers]'"

#: The seed of the random weights of a model built from a config file.
CONFIG_SEED = 0


def hf_model_path(text: str) -> Path | None:
    """Return the path if ``text`` names a Hugging Face model directory or config file.

    A Hugging Face model is an existing directory, a path ending with ``/`` (a
    directory that must exist), or a path ending with ``.json`` (a config file);
    anything else is the ``package.module:factory`` form.

    Example:
        >>> hf_model_path("prunefw.examples:digits_mlp") is None
        True
        >>> hf_model_path("models/tiny-llama/config.json")
        PosixPath('models/tiny-llama/config.json')
    """
    if text.endswith(("/", os.sep)) or text.lower().endswith(".json") or Path(text).is_dir():
        return Path(text)
    return None


def model_spec(text: str) -> str:
    """Check the form of ``--model`` (an argparse ``type=``: exit 2 otherwise).

    Example:
        >>> model_spec("prunefw.examples:digits_mlp")
        'prunefw.examples:digits_mlp'
    """
    if hf_model_path(text) is not None:
        return text
    module, sep, attribute = text.rpartition(":")
    if not sep or not module or not attribute or not attribute.replace(".", "_").isidentifier():
        raise argparse.ArgumentTypeError(
            f"{text!r} is not of the form package.module:factory (e.g. "
            "prunefw.examples:digits_mlp, or path/to/models.py:build), nor a Hugging Face "
            "model directory or config .json file"
        )
    return text


def build_model(spec: str, *, weights: bool = True) -> nn.Module:
    """Build the model ``--model`` names: a factory, a Hugging Face directory or config.

    Args:
        spec: The ``--model`` value (see the module docstring).
        weights: For a Hugging Face directory, load its weights; ``False`` builds
            the model from its ``config.json`` with random weights (the caller
            loads weights, e.g. a directory with pruning masks).

    Raises:
        InvalidArgumentError: The model cannot be built: for a factory, the module
            cannot be imported (or exits while imported), has no such attribute,
            the attribute is not callable, calling it failed or exited
            (``sys.exit``), or it did not return an ``nn.Module``; for Hugging
            Face models, transformers is missing, the directory or file is
            missing or has no valid config, transformers does not know the
            model, or loading its weights failed. The message is one line;
            the original exception is chained (``--debug`` shows it).

    Example:
        >>> type(build_model("prunefw.examples:digits_mlp")).__name__
        'DigitsMLP'
    """
    path = hf_model_path(spec)
    if path is None:
        return _build_from_factory(spec)
    return _build_from_hf(path, weights=weights)


# --- Hugging Face models ------------------------------------------------------------------------


def _transformers(what: str) -> ModuleType:
    try:
        import transformers
    except ImportError:
        raise InvalidArgumentError(
            f"{what} needs the optional package transformers: {PIP_TRANSFORMERS}"
        ) from None
    return transformers


@contextlib.contextmanager
def quiet_transformers(transformers: ModuleType) -> Iterator[None]:
    """Silence transformers' warnings and progress bars (restored afterwards).

    prunefw's own messages say what went wrong; transformers' loading bars and
    config warnings would only clutter stderr (and show in pipes and logs).
    """
    logging = transformers.utils.logging
    verbosity = logging.get_verbosity()
    bars = logging.is_progress_bar_enabled()
    logging.set_verbosity_error()
    logging.disable_progress_bar()
    try:
        yield
    finally:
        logging.set_verbosity(verbosity)
        if bars:
            logging.enable_progress_bar()


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__


def _read_config(path: Path) -> dict[str, Any]:
    """Read a config.json as JSON and check that it is a transformers config."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InvalidArgumentError(f"--model: no such file {str(path)!r}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidArgumentError(f"--model: cannot read {path}: {_first_line(exc)}") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InvalidArgumentError(
            f"--model: {path} is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
        ) from None
    except (ValueError, RecursionError) as exc:  # nesting deeper than Python's stack, huge ints
        raise InvalidArgumentError(
            f"--model: {path} is not a usable JSON config: {_first_line(exc)}"
        ) from None
    if not isinstance(data, dict):
        raise InvalidArgumentError(
            f"--model: {path} holds a JSON {type(data).__name__}, not a transformers config "
            '(an object with a "model_type", as config.json written by save_pretrained)'
        )
    if not isinstance(data.get("model_type"), str):
        raise InvalidArgumentError(
            f'--model: {path} has no "model_type", so it is not a transformers config (the '
            "config.json that save_pretrained writes has one)"
        )
    return data


def _custom_code_hint(data: dict[str, Any]) -> str:
    if "auto_map" in data:
        return (
            "; the config points to custom model code (auto_map), which prunefw never runs "
            "(no trust_remote_code)"
        )
    return ""


def _config(transformers: ModuleType, path: Path, data: dict[str, Any]) -> Any:
    model_type = data["model_type"]
    if model_type not in transformers.CONFIG_MAPPING:
        close = difflib.get_close_matches(model_type, list(transformers.CONFIG_MAPPING), n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise InvalidArgumentError(
            f"--model: {path}: unknown model_type {model_type!r}: transformers "
            f"{transformers.__version__} has no such model{hint}{_custom_code_hint(data)}"
        )
    try:
        return transformers.AutoConfig.from_pretrained(str(path), local_files_only=True)
    except Exception as exc:
        raise InvalidArgumentError(
            f"--model: transformers cannot read the config {path}: {_first_line(exc)}"
        ) from exc


def _model_class(transformers: ModuleType, path: Path, config: Any, data: dict[str, Any]) -> Any:
    """The class to build: ``architectures[0]`` if given, else the causal-LM or base auto class."""
    architectures = data.get("architectures")
    if isinstance(architectures, str):
        architectures = [architectures]
    if isinstance(architectures, list) and architectures:
        name = architectures[0]
        try:
            found = getattr(transformers, name, None) if isinstance(name, str) else None
        except Exception as exc:  # the class exists but cannot be imported (a missing extra)
            raise InvalidArgumentError(
                f"--model: {path} names the architecture {name!r}, which transformers cannot "
                f"import: {_first_line(exc)}"
            ) from exc
        if isinstance(found, type) and issubclass(found, transformers.PreTrainedModel):
            return found
        names = [n for n in dir(transformers) if n[:1].isupper() and n.endswith(("Model", "LM"))]
        close = difflib.get_close_matches(str(name), names, n=1)
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        raise InvalidArgumentError(
            f"--model: {path} names the architecture {name!r}, which transformers "
            f"{transformers.__version__} does not have{hint}{_custom_code_hint(data)}; fix "
            '"architectures" in the config, or remove it to use AutoModelForCausalLM'
        )
    for auto in (transformers.AutoModelForCausalLM, transformers.AutoModel):
        if type(config) in auto._model_mapping:
            return auto
    raise InvalidArgumentError(
        f"--model: transformers has neither a causal LM nor a base model for the model_type "
        f'{data["model_type"]!r} of {path}; name the class in the config\'s "architectures"'
    )


def _from_config(cls: Any, config: Any) -> nn.Module:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(CONFIG_SEED)
        if hasattr(cls, "_model_mapping"):  # an auto class
            return cls.from_config(config)
        return cls._from_config(config)


def _config_file(path: Path) -> Path:
    """The config file of ``--model PATH``: ``PATH/config.json`` or ``PATH`` itself."""
    if path.is_dir():
        config_file = path / "config.json"
        if not config_file.is_file():
            raise InvalidArgumentError(
                f"--model: {path} is a directory without config.json, so not a Hugging Face "
                "model directory (write one with model.save_pretrained(directory))"
            )
        return config_file
    if path.suffix.lower() == ".json":
        if not path.is_file():
            raise InvalidArgumentError(f"--model: no such file {str(path)!r}")
        return path
    raise InvalidArgumentError(f"--model: no such directory {str(path)!r}")


def check_hf_model(path: Path) -> None:
    """Check the config of a Hugging Face ``--model`` without building the model.

    Raises:
        InvalidArgumentError: As :func:`build_model`, for the config.
    """
    config_file = _config_file(path)
    data = _read_config(config_file)
    transformers = _transformers(f"--model: {path} is a Hugging Face model; loading it")
    with quiet_transformers(transformers):
        _model_class(transformers, config_file, _config(transformers, config_file, data), data)


def _build_from_hf(path: Path, *, weights: bool) -> nn.Module:
    config_file = _config_file(path)
    weights = weights and path.is_dir()
    data = _read_config(config_file)
    transformers = _transformers(f"--model: {path} is a Hugging Face model; loading it")
    with quiet_transformers(transformers):
        config = _config(transformers, config_file, data)
        cls = _model_class(transformers, config_file, config, data)
        try:
            if not weights:
                return _from_config(cls, config)
            model, info = cls.from_pretrained(
                str(path), local_files_only=True, output_loading_info=True
            )
        except InvalidArgumentError:
            raise
        except Exception as exc:
            action = "load" if weights else "build"
            raise InvalidArgumentError(
                f"--model: transformers cannot {action} {path} as {cls.__name__}: "
                f"{_first_line(exc)}"
            ) from exc
    missing = sorted(info.get("missing_keys") or ()) + sorted(
        str(key[0] if isinstance(key, tuple) else key) for key in info.get("mismatched_keys") or ()
    )
    if missing:
        shown = ", ".join(missing[:5]) + (", ..." if len(missing) > 5 else "")
        raise InvalidArgumentError(
            f"--model: {path} does not hold all the weights of {type(model).__name__}: "
            f"{len(missing)} missing or of another shape ({shown}); transformers would "
            "initialise them at random"
        )
    return model


def is_pretrained_model(model: object) -> bool:
    """Whether ``model`` is a transformers ``PreTrainedModel`` (duck typing, no import).

    Example:
        >>> is_pretrained_model(nn.Linear(1, 1))
        False
    """
    return (
        isinstance(model, nn.Module)
        and callable(getattr(type(model), "save_pretrained", None))
        and callable(getattr(getattr(model, "config", None), "save_pretrained", None))
    )


def save_pretrained_files(model: nn.Module, directory: Path, max_shard_size: int) -> None:
    """``model.save_pretrained(directory)`` (sharded safetensors), quietly."""
    transformers = _transformers(f"writing {type(model).__name__} as a model directory")
    with quiet_transformers(transformers):
        pretrained: Any = model
        pretrained.save_pretrained(str(directory), max_shard_size=max_shard_size)


def save_config_files(model: nn.Module, directory: Path) -> None:
    """Write the ``config.json`` (and ``generation_config.json``) of a transformers model.

    What ``save_pretrained`` writes besides the weights: the config, with
    ``architectures`` naming the model's class (so ``--model DIR`` rebuilds it).
    """
    transformers = _transformers(f"writing {type(model).__name__} as a model directory")
    with quiet_transformers(transformers):
        pretrained: Any = model
        config = copy.deepcopy(pretrained.config)
        config.architectures = [type(model).__name__]
        config.save_pretrained(str(directory))
        generation = getattr(model, "generation_config", None)
        can_generate = getattr(model, "can_generate", None)
        if generation is not None and callable(can_generate) and can_generate():
            generation.save_pretrained(str(directory))


# --- package.module:factory ---------------------------------------------------------------------


def _import(module_name: str) -> ModuleType:
    if module_name.endswith(".py") or os.sep in module_name or "/" in module_name:
        path = Path(module_name)
        if not path.is_file():
            raise InvalidArgumentError(f"--model: no such file {module_name!r}")
        spec = importlib.util.spec_from_file_location(path.stem, path)
        if spec is None or spec.loader is None:  # pragma: no cover - .py files always load
            raise InvalidArgumentError(f"--model: cannot import {module_name!r}")
        module = importlib.util.module_from_spec(spec)
        registered = sys.modules.setdefault(path.stem, module) is module
        try:
            spec.loader.exec_module(module)
        except BaseException as exc:
            if registered:  # no half-run module left behind for the next import
                sys.modules.pop(path.stem, None)
            if isinstance(exc, (KeyboardInterrupt, GeneratorExit)):
                raise
            # SystemExit too: the module's failure, not a reason to exit
            raise InvalidArgumentError(
                f"--model: importing {module_name!r} failed: {_outcome(exc)}"
            ) from exc
        return module
    if "" not in sys.path and os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())  # as `python -m` does: local modules are importable
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        itself = (
            exc.name is None or module_name == exc.name or module_name.startswith(exc.name + ".")
        )
        missing = "" if itself else f" (it needs {exc.name!r}, which is not installed)"
        raise InvalidArgumentError(
            f"--model: cannot import module {module_name!r}{missing}: {exc}; check the "
            "spelling, install the package, or run from the directory that holds it"
        ) from exc
    except (KeyboardInterrupt, GeneratorExit):
        raise
    except BaseException as exc:  # an error, or sys.exit(), while the module runs
        raise InvalidArgumentError(
            f"--model: importing module {module_name!r} failed: {_outcome(exc)}"
        ) from exc


def _outcome(exc: BaseException) -> str:
    """Describe what a factory or its module did instead of returning: one line."""
    if isinstance(exc, SystemExit):
        return f"it called sys.exit({exc.code!r}) (SystemExit)"
    return _first_line(exc)


def _build_from_factory(spec: str) -> nn.Module:
    """Import ``spec`` (``module:attribute``), call it without arguments, return the model.

    Raises:
        InvalidArgumentError: The module cannot be imported, has no such attribute,
            the attribute is not callable, calling it failed or exited (any
            exception, ``SystemExit`` included, but ``KeyboardInterrupt``), or it
            did not return an ``nn.Module``. The message is one line; the original exception is
            chained (``--debug`` shows it).

    """
    module_name, _, attribute = model_spec(spec).rpartition(":")
    module = _import(module_name)
    obj: object = module
    for part in attribute.split("."):
        if not hasattr(obj, part):
            names = [n for n in dir(obj) if not n.startswith("_")]
            close = difflib.get_close_matches(part, names, n=3)
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            raise InvalidArgumentError(
                f"--model: {module_name!r} has no attribute {attribute!r}{hint}"
            )
        obj = getattr(obj, part)
    if not callable(obj):
        raise InvalidArgumentError(
            f"--model: {spec} is not callable ({type(obj).__name__} {obj!r}); name a function "
            "or class that returns the model"
        )
    try:
        model = obj()
    except (KeyboardInterrupt, GeneratorExit):
        raise
    except SystemExit as exc:  # e.g. builtins:exit: exiting is not returning a model
        raise InvalidArgumentError(
            f"--model: calling {spec}() exited instead of returning a model: "
            f"{_outcome(exc)}; the factory must return a torch.nn.Module"
        ) from exc
    except BaseException as exc:
        raise InvalidArgumentError(
            f"--model: calling {spec}() failed: {type(exc).__name__}: {exc} (the factory must "
            "take no arguments)"
        ) from exc
    if not isinstance(model, nn.Module):
        raise InvalidArgumentError(
            f"--model: {spec}() returned a {type(model).__name__}, not a torch.nn.Module"
        )
    return model


def add_model_argument(parser: argparse.ArgumentParser) -> None:
    """Add the ``--model`` option shared by ``prune`` and ``report``."""
    parser.add_argument(
        "--model",
        required=True,
        type=model_spec,
        metavar="MODEL",
        help="MODULE:FACTORY, the import path of a callable that returns the model (e.g. "
        "prunefw.examples:digits_mlp); or a Hugging Face model directory (with config.json); "
        "or a transformers config .json file (random weights)",
    )
