"""ucf3d command line: a thin click shell over prep, loader and train (one library call per command)."""

from __future__ import annotations

import functools
import logging
import sys
from collections.abc import Callable
from typing import Any

import click

log = logging.getLogger("ucf3d")


def progress_bar(desc: str, total: int | None = None) -> Callable[[int], None] | None:
    """A tqdm-backed progress callback when stderr is a terminal, else None (library logs)."""
    if not sys.stderr.isatty():
        return None
    from tqdm import tqdm

    bar = tqdm(total=total, desc=desc, unit="video", leave=False)

    def update(n: int = 1, total: int | None = None) -> None:
        if total is not None and bar.total != total:
            bar.total = total
            bar.refresh()
        bar.update(n)

    return update


def library_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Turn the library's expected errors into `Error: ...` and exit 1; --debug shows the traceback."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except (click.ClickException, click.Abort, SystemExit):
            raise
        except (OSError, ValueError, RuntimeError) as e:
            if click.get_current_context().find_root().obj.get("debug"):
                raise
            raise click.ClickException(str(e)) from e

    return wrapper


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--debug", is_flag=True, help="Show tracebacks and debug logging.")
@click.pass_context
def main(ctx: click.Context, debug: bool) -> None:
    """ucf3d: 3D CNNs for action recognition on UCF-101 with PaddlePaddle and NVIDIA DALI."""
    ctx.ensure_object(dict)
    ctx.obj["debug"] = debug
    logging.basicConfig(
        level=logging.DEBUG if debug else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )


@main.group()
def bench() -> None:
    """Benchmarks: each prints one JSON line."""


# ==== prep commands (synth, extract, shard, bench prep) ======================================

# ==== loader commands (bench loader) ==========================================================

# ==== train commands (train, eval, export, predict) ===========================================

# ==== demo and report ========================================================================


if __name__ == "__main__":
    main()
