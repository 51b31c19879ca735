"""Regenerate the initial Alembic migration from the ORM models.

Until the first release the schema is one migration, rewritten from the models whenever they
change. After a release, add new revisions with `alembic revision --autogenerate` instead.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from alembic import command

from tallystick.server.migrate import MIGRATIONS_DIR, alembic_config

REVISION_ID = "0001"


def main() -> int:
    versions = MIGRATIONS_DIR / "versions"
    versions.mkdir(exist_ok=True)
    for old in versions.glob(f"{REVISION_ID}_*.py"):
        old.unlink()
    with tempfile.TemporaryDirectory() as folder:
        url = f"sqlite:///{Path(folder) / 'empty.db'}"
        command.revision(
            alembic_config(url), message="initial schema", autogenerate=True, rev_id=REVISION_ID
        )
    print(f"wrote {next(versions.glob(f'{REVISION_ID}_*.py'))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
