"""The ``prontodb`` command line.

The console script calls :data:`main`. The forms that scripts run in loops (docs/CLI.md,
"Start-up time", lists them) are parsed by hand in ``_cli_fast`` without importing click, which
alone takes longer than the rest of a ``get``; everything else goes to the click group in
``_cli_click`` (every option, help, usage errors, ``serve``, ``stop``, ``lock``). Both front ends
call the same functions in ``_cli_commands``. The reference is docs/CLI.md.

Imports neither trio nor anyio: ``serve`` loads the broker only when it runs.
"""

from __future__ import annotations

import sys

# No typing (nor collections, which collections.abc imports) at run time: every start imports this.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Sequence
    from typing import Any

    import click


class _Main:
    """The ``prontodb`` entry point: the fast path first, else the click group.

    Every attribute not defined here is the click group's (``main.commands``, ``main.main``, ...),
    so CliRunner and help tests use it as the group itself; only calling it tries the fast path.
    """

    def __call__(self, args: Sequence[str] | None = None, **extra: Any) -> Any:
        argv = list(sys.argv[1:] if args is None else args)
        if not extra:
            from ._cli_fast import run

            status = run(argv)
            if status is not None:
                return status
        extra.setdefault("prog_name", "prontodb")
        return self.group.main(argv, **extra)

    @property
    def group(self) -> click.Group:
        """The click group (imported on first use)."""
        from ._cli_click import cli

        return cli

    def __getattr__(self, name: str) -> Any:
        return getattr(self.group, name)


if TYPE_CHECKING:
    # To type checkers `main` is the click group it stands in for.
    main: click.Group
else:
    main = _Main()


if __name__ == "__main__":
    sys.exit(main())
