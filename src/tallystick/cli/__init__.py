"""The tallystick command line. Needs the ``[server]`` extra.

This module imports nothing of the extra. A plain `pip install tallystick` installs the
`tallystick` script too, which then prints the missing module instead of a traceback.
"""

from __future__ import annotations

import sys


def run() -> None:
    """Run the `tallystick` command, or exit with code 1 and one line when the server extra is missing."""
    try:
        from tallystick.cli.main import app
    except ModuleNotFoundError as error:
        # A missing tallystick module is a broken install or a bug, not a missing extra.
        if error.name is None or error.name.partition(".")[0] == "tallystick":
            raise
        print(
            f"Error: the tallystick command needs the server extra, but the module {error.name!r} is not "
            "installed. Install it with: pip install 'tallystick[server]'",
            file=sys.stderr,
        )
        sys.exit(1)
    app()
