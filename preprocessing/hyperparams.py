"""The config vocabulary: dataclass fields that describe their own flag, the JSON round trip of
recorded configs, and the help texts and defaults several commands share.

Why apart from ``preprocessing.cli``: configs (the matcher's parameters, the trainer's, the
post-processing's) are read by library code that has no command line, so they must not import the
CLI layer (absl). ``preprocessing.cli`` reads what is written here and turns it into flags.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Optional

# Help texts of options that several commands share: written once, so they cannot drift. (Their
# defaults belong to each command's config: a scoring batch and a training batch differ.)
HELP = {
    "seed": "Random seed; the same seed gives the same result.",
    "batch_size": "Images per batch (in training: the global batch, split across replicas).",
    "max_pixels": "Refuse images with more pixels than this, from the header alone (decompression bombs).",
}
# Options that several commands share with one default and one help text: (default, help).
SHARED = {
    "allow_pickle_masks": (False, "Load pickled .npy masks. A pickled file can run code when loaded: trusted "
                                  "data only."),
}


def option(default: Any, help: str, *, choices: Optional[tuple] = None, lower: Optional[float] = None,
           upper: Optional[float] = None, item: type = str, flag: bool = True) -> Any:
    """A dataclass field that also describes its command-line flag (``preprocessing.cli.define_flags``).

    ``choices``: the allowed values (an enum flag); ``lower``/``upper``: inclusive bounds checked
    when the flag is parsed; ``item``: the element type of a tuple (a comma-separated list flag);
    ``flag=False``: a config value that is not a flag (set by code).
    """
    meta = {"help": help, "choices": choices, "lower": lower, "upper": upper, "item": item, "flag": flag}
    if isinstance(default, (list, dict, set)):
        raise TypeError("mutable defaults: use a tuple")
    return dataclasses.field(default=default, metadata=meta)


class Recorded:
    """JSON round trip for config dataclasses kept in metadata files and calibration records;
    unknown keys are ignored so that records written by other versions still load."""

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: Optional[dict]):
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in (d or {}).items() if k in names})


def checked_value(f: dataclasses.Field, value: Any, where: str) -> Any:
    """``value`` for the field ``f`` as read from a file (a metadata.json), checked against the same
    type, choices and bounds as the flag that sets it; ``ValueError`` naming ``where`` otherwise."""
    meta, default = f.metadata, f.default
    kind = type(default) if default is not dataclasses.MISSING and default is not None else None
    if kind is bool and not isinstance(value, bool):
        raise ValueError(f"{where}: {value!r} is not true or false")
    if kind is int and (isinstance(value, bool) or not isinstance(value, (int, float))
                        or float(value) != int(value)):
        raise ValueError(f"{where}: {value!r} is not an integer")
    if kind is float and (isinstance(value, bool) or not isinstance(value, (int, float)) or value != value):
        raise ValueError(f"{where}: {value!r} is not a number")
    if kind is str and not isinstance(value, str):
        raise ValueError(f"{where}: {value!r} is not a string")
    if kind is tuple:
        if not isinstance(value, (list, tuple)):
            raise ValueError(f"{where}: {value!r} is not a list")
        value = tuple(value)
    if kind is int:
        value = int(value)
    if meta.get("choices") and value not in meta["choices"]:
        raise ValueError(f"{where}: {value!r} is not one of {', '.join(map(repr, meta['choices']))}")
    if meta.get("lower") is not None and isinstance(value, (int, float)) and value < meta["lower"]:
        raise ValueError(f"{where}: {value!r} is below the lower bound {meta['lower']}")
    if meta.get("upper") is not None and isinstance(value, (int, float)) and value > meta["upper"]:
        raise ValueError(f"{where}: {value!r} is above the upper bound {meta['upper']}")
    return value


def checked_record(cls, d: Any, where: str) -> dict:
    """The known fields of ``d`` (a dict read from a file) for the dataclass ``cls``, each through
    ``checked_value``: a value a flag would refuse is refused here too, naming ``where.field``."""
    if d is None:
        return {}
    if not isinstance(d, dict):
        raise ValueError(f"{where}: {d!r} is not an object")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    return {k: checked_value(fields[k], v, f"{where}.{k}") for k, v in d.items() if k in fields}


def shared_option(name: str) -> Any:
    """The ``option`` of a shared flag, for a config dataclass field of that name."""
    default, help_text = SHARED[name]
    return option(default, help_text)


def changed_fields(old: dict, new: dict, prefix: str = "") -> list[str]:
    """Dotted names of the fields whose values differ between two nested config dicts."""
    out = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            out += changed_fields(a, b, f"{prefix}{key}.")
        elif (list(a) if isinstance(a, (list, tuple)) else a) != (list(b) if isinstance(b, (list, tuple)) else b):
            out.append(f"{prefix}{key} ({a!r} -> {b!r})")
    return out
