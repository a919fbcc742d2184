"""What every command line of ssl_gen shares: flag parsing whose mistakes are one line, the
one-line error for a `UserError`, `--print_config`, `--list_variants`, the exit statuses.

    python -m ssl_gen.train.main --config=experiments/vae.py:digits --workdir=DIR \
        [--config.x.y=v ...] [--print_config] [--list_variants]

Exit statuses, the same from every CLI:
  0        done (or `--print_config` / `--list_variants`)
  1        `error: ...` — a `ssl_gen.errors.UserError`: bad config, workdir holding another
           run, unknown dataset, non-finite loss; nothing was trained past the last save
  2        `error: ...` — the command line itself (a flag, an unknown config key, a value
           that does not parse); nothing ran
  130/143  stopped by Ctrl-C / SIGTERM after saving a checkpoint (`ssl_gen.preemption`);
           the same command resumes
A traceback means a bug in ssl_gen, never a mistake of the user's.

Written by hand: absl prints flag errors as two lines and ml_collections' override errors
as tracebacks, and neither knows the config's keys for a "did you mean".
"""

from __future__ import annotations

import difflib
import importlib.util
import logging
import os
import re
import sys
from collections.abc import Callable, Sequence

from absl import app, flags

from ssl_gen.errors import UserError

_PRINT_CONFIG = flags.DEFINE_bool(
    "print_config", False, "Print the resolved config (after every --config.x=y) and exit.")
_LIST_VARIANTS = flags.DEFINE_bool(
    "list_variants", False, "List the variants (the `:arg` words) of --config's file and exit.")


def fail(message: str, status: int = 1):
    """Prints `error: <message>` (its first line) on stderr and exits with `status`."""
    lines = str(message).strip().splitlines() or [""]
    sys.stderr.write(f"error: {lines[0]}\n")
    sys.stderr.flush()
    raise SystemExit(status)


def _config_arg(argv: Sequence[str], name: str = "config") -> str | None:
    for i, a in enumerate(argv):
        m = re.match(rf"^--?{name}(=(.*))?$", a)
        if m:
            return m.group(2) if m.group(1) else (argv[i + 1] if i + 1 < len(argv) else None)
    return None


def _split_spec(spec: str) -> tuple[str, str | None]:
    """'experiments/vae.py:digits,runlocal' -> ('experiments/vae.py', 'digits,runlocal')."""
    path, sep, arg = spec.partition(".py:")
    return (path + ".py", arg) if sep else (spec, None)


def _load_module(path: str):
    spec = importlib.util.spec_from_file_location("ssl_gen_cli_config", path)
    if spec is None or not os.path.exists(path):
        raise FileNotFoundError(path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _explain_override(argv: Sequence[str]) -> str | None:
    """The first `--config.a.b=v` that does not name a settable field of the loaded config,
    said with a did-you-mean; None when every override path resolves."""
    spec = _config_arg(argv)
    if not spec:
        return None
    path, arg = _split_spec(spec)
    try:
        config = _load_module(path).get_config(arg)
    except FileNotFoundError:
        return f"--config={spec}: no such file {path}"
    except Exception as e:  # noqa: BLE001 - the config file's own one-line error
        text = str(e).strip().splitlines()
        return f"--config={spec}: {text[0] if text else type(e).__name__}"
    for a in argv:
        m = re.match(r"^--?config\.([\w.]+)(=|$)", a)
        if not m:
            continue
        node, where = config, "config"
        for key in m.group(1).split("."):
            keys = list(node.keys()) if hasattr(node, "keys") else []
            if key not in keys:
                near = difflib.get_close_matches(key, keys, n=1)
                hint = (f"; did you mean {near[0]!r}?" if near
                        else f"; known: {', '.join(sorted(keys))}" if keys else "")
                return f"{where}: unknown key {key!r}{hint} (--config.{m.group(1)})"
            node, where = node[key], f"{where}.{key}"
        if node is None:
            return (f"{where} is None in {path} and so has no type to parse "
                    f"--config.{m.group(1)} into (the config must declare it with "
                    "ml_collections.config_dict.placeholder(type))")
    return None


def _list_variants(argv: Sequence[str]) -> None:
    spec = _config_arg(argv)
    if not spec:
        fail("--list_variants needs --config=experiments/<name>.py", status=2)
    path, _ = _split_spec(spec)
    try:
        doc = _load_module(path).__doc__ or ""
    except FileNotFoundError:
        fail(f"--config={spec}: no such file {path}", status=2)
    m = re.search(r"^Variants:\n(.*?)(?:\n\s*\n|\Z)", doc, flags=re.M | re.S)
    print(f"{path} variants (combine with commas, e.g. --config={path}:a,b):")
    print(m.group(1) if m else "  (its docstring lists no variants)")
    raise SystemExit(0)


def parse_flags(argv: Sequence[str]) -> list[str]:
    """absl's flag parsing with every mistake said in one line (exit status 2)."""
    if any(re.match(r"^--?list_variants(=true|=1)?$", a, flags=re.I) for a in argv):
        _list_variants(argv)
    spec = _config_arg(argv)
    if spec and not os.path.exists(_split_spec(spec)[0]):
        fail(f"--config={spec}: no such file {_split_spec(spec)[0]} (run from the repository "
             "root, or give the config file's path)", status=2)
    try:
        return flags.FLAGS(list(argv))
    except Exception as e:  # noqa: BLE001 - flag errors of absl or ml_collections alike
        explained = _explain_override(argv)
        text = str(e).strip().replace("\\n", "\n")
        fail(explained or text, status=2)


def print_config(config) -> None:
    """The resolved config, as the run will see it (JSON, keys in config order)."""
    print(config.to_json_best_effort(indent=2))


def run(main: Callable[[list[str]], int | None]) -> None:
    """`app.run(main)` with one-line errors: a `UserError` raised by `main` prints
    `error: <message>` and exits 1; `main`'s return value is the exit status."""
    def wrapped(argv):
        logging.getLogger("absl").setLevel(logging.WARNING)
        logging.getLogger("jax").setLevel(logging.WARNING)  # not "Unable to initialize 'tpu'"
        try:
            status = main(argv)
        except UserError as e:
            fail(str(e), status=1)
        raise SystemExit(status or 0)

    app.run(wrapped, flags_parser=parse_flags)


def print_config_requested() -> bool:
    return _PRINT_CONFIG.value
