"""The one registry of reward-model methods, and the torch-free list of their names.

A method is one object (:class:`embrm.rm.methods.Method`): its name, net shape,
standardisation default, its part of ``--tune``'s grid, train, score, save, load and the
files a run of it holds. Every list of method names in embrm comes from here: the CLI's
choices, the run-format check, ``load_run``, ``--tune`` and ``reproduce`` (a test fails
if a list is written out anywhere else).

Where methods come from, in the order a name is looked up:

1. the built-in ones (:data:`BUILTIN`, name -> ``module:attr``, imported when used, so
   that listing names imports neither torch nor LightGBM);
2. methods registered in this process (:func:`register`, or ``--method module:attr``);
3. ``module:attr`` references in ``$EMBRM_METHODS`` (comma-separated): how an operator
   makes ``embrm serve`` score runs of a method that is not installed as a package;
4. installed packages' entry points in the group ``embrm.methods`` (name = the
   method's name, value = ``module:attr``).

Why not resolve ``module:attr`` found in a run's ``config.json``: runs arrive over the
network (push, upload), and a name in a file must never make embrm import a module
that the person running it did not choose. A run names its method; the method must be
one this process knows.
"""
from __future__ import annotations

import importlib
import os
import re
from typing import Any

from embrm.errors import EmbrmError

#: The built-in methods, by name: the only place their names are written out.
BUILTIN: dict[str, str] = {
    "bt": "embrm.rm.methods:BT",
    "clf": "embrm.rm.methods:CLF",
    "linear": "embrm.rm.methods:LINEAR",
    "lgbm": "embrm.rm.methods:LGBM",
    "logreg": "embrm.rm.methods:LOGREG",
    "logreg-clf": "embrm.rm.methods:LOGREG_CLF",
    "tune": "embrm.rm.methods:TUNE",  # --tune's grid on the given split, then the chosen setting
}
GROUP = "embrm.methods"
ENV = "EMBRM_METHODS"
NAME = re.compile(r"[a-z0-9][a-z0-9_\-]{0,39}")
REF = re.compile(r"[A-Za-z_][\w.]*:[A-Za-z_]\w*")

_registered: dict[str, Any] = {}
_env_loaded: str | None = None


def _entry_points() -> dict[str, Any]:
    from importlib.metadata import entry_points

    return {ep.name: ep for ep in entry_points(group=GROUP)}


def names() -> tuple[str, ...]:
    """Every method name this process can use: built-in, registered, from $EMBRM_METHODS
    and installed entry points (read from package metadata: nothing is imported but the
    references in $EMBRM_METHODS)."""
    _load_env()
    extra = sorted((set(_registered) | set(_entry_points())) - set(BUILTIN))
    return (*BUILTIN, *extra)


def builtin_names() -> tuple[str, ...]:
    return tuple(BUILTIN)


def _load_ref(ref: str) -> Any:
    """Import ``module:attr`` and return the method object (an instance, or a class that is
    instantiated with no arguments)."""
    if not REF.fullmatch(ref):
        raise EmbrmError(f"{ref!r} is not a method reference: use module:attr (e.g. mypkg.ridge:RidgeBT)")
    module, attr = ref.split(":")
    try:
        obj = getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError) as e:
        raise EmbrmError(f"cannot load method {ref} ({type(e).__name__}: {e}); is the module on the path?") from None
    if isinstance(obj, type):
        obj = obj()
    return obj


def _check(obj: Any, where: str) -> Any:
    for need in ("name", "train", "score", "save", "load", "files"):
        if not hasattr(obj, need):
            raise EmbrmError(f"{where} is not an embrm method: it has no {need!r} (subclass embrm.rm.methods.Method)")
    if not isinstance(obj.name, str) or not NAME.fullmatch(obj.name):
        raise EmbrmError(f"{where}: method name {obj.name!r} must be lower-case letters, digits, '-' or '_' "
                         "(at most 40)")
    return obj


def register(method: Any) -> str:
    """Make a method object known to this process under its ``name``; returns the name.
    A built-in name cannot be taken over."""
    _check(method, repr(method))
    if method.name in BUILTIN and not type(method).__module__.startswith("embrm."):
        raise EmbrmError(f"method name {method.name!r} is a built-in method's; give the plug-in another name")
    _registered[method.name] = method
    return method.name


def resolve(name_or_ref: str) -> str:
    """A method name from a name or a ``module:attr`` reference (imported and registered:
    the user chose it on the command line)."""
    if ":" in name_or_ref:
        return register(_check(_load_ref(name_or_ref), name_or_ref))
    get(name_or_ref)
    return name_or_ref


def _load_env() -> None:
    global _env_loaded
    refs = os.environ.get(ENV, "")
    if refs == _env_loaded:
        return
    _env_loaded = refs
    for ref in (r.strip() for r in refs.split(",") if r.strip()):
        register(_check(_load_ref(ref), f"{ENV} entry {ref}"))


def get(name: str) -> Any:
    """The method object of ``name`` (see the module's docstring for where it is looked up)."""
    if name in BUILTIN:
        if name not in _registered:
            _registered[name] = _load_ref(BUILTIN[name])
        return _registered[name]
    _load_env()
    if name in _registered:
        return _registered[name]
    eps = _entry_points()
    if name in eps:
        try:
            obj = eps[name].load()
        except Exception as e:  # a broken plug-in is the plug-in's fault: one line naming it
            raise EmbrmError(f"the entry point of method {name!r} ({eps[name].value}) does not load: "
                             f"{type(e).__name__}: {e}") from None
        obj = _check(obj() if isinstance(obj, type) else obj, f"entry point {name} ({eps[name].value})")
        if obj.name != name:
            raise EmbrmError(f"entry point {name!r} gives a method named {obj.name!r}; the names must agree")
        _registered[name] = obj
        return obj
    raise EmbrmError(f"unknown method {str(name)[:60]!r}; use one of {', '.join(names())}, install a plug-in "
                     f"(entry point group {GROUP}), or give --method module:attr")


def known(name: str) -> bool:
    try:
        get(name)
    except EmbrmError:
        return False
    return True


def tunable() -> tuple[str, ...]:
    """The methods ``--tune`` searches by default: those that have a part of its grid."""
    return tuple(n for n in names() if getattr(get(n), "tune_kind", None) is not None)
