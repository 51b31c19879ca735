"""`tallystick secrets`: keys that encrypt the secrets stored in the database."""

from __future__ import annotations

from typing import Annotated

import typer

from tallystick.cli.output import console, print_error
from tallystick.cli.users import DatabaseUrlOption, _open_store

secrets_app = typer.Typer(help="Encryption of the secrets stored in the database.", no_args_is_help=True)

# (model name, attribute) of every column stored with EncryptedString.
ENCRYPTED_COLUMNS = (
    ("PaymentSettings", "stripe_secret_key"),
    ("PaymentSettings", "stripe_webhook_secret"),
    ("WebhookSigningSecret", "secret"),
    ("ServerSecret", "value"),
)


@secrets_app.command("generate-key")
def generate_key() -> None:
    """Print a new random key for TALLYSTICK_ENCRYPTION_KEYS."""
    from tallystick.server.encryption import generate_key as new_key

    print(new_key())


@secrets_app.command(
    "encrypt",
    # Each help paragraph is one string, because typer prints a docstring's line breaks as they are.
    help="Rewrite every stored secret encrypted with the first key of TALLYSTICK_ENCRYPTION_KEYS.\n\n"
    "Run it after setting the keys for the first time, and after putting a new key first, so that secrets "
    "stored in clear or under an older key are rewritten. It is safe to run again.",
)
def encrypt(
    database_url: DatabaseUrlOption = None,
    quiet: Annotated[bool, typer.Option("--quiet", help="Print nothing on success.")] = False,
) -> None:
    from sqlalchemy import select
    from sqlalchemy.orm.attributes import flag_modified

    from tallystick.cli.main import check_settings
    from tallystick.server import models
    from tallystick.server.encryption import EncryptionKeyError, configured_fernet

    check_settings()
    try:
        if configured_fernet() is None:
            print_error(
                "TALLYSTICK_ENCRYPTION_KEYS is not set; set it to one or more keys from "
                "`tallystick secrets generate-key`, new key first"
            )
            raise typer.Exit(code=1)
        store = _open_store(database_url)
        rewritten = 0
        try:
            with store.transaction() as session:
                for model_name, attribute in ENCRYPTED_COLUMNS:
                    model = getattr(models, model_name)
                    for row in session.scalars(select(model)):
                        if getattr(row, attribute) is not None:
                            flag_modified(row, attribute)
                            rewritten += 1
        finally:
            store.dispose()
    except EncryptionKeyError as error:
        print_error(str(error))
        raise typer.Exit(code=1) from None
    if not quiet:
        noun = "secret" if rewritten == 1 else "secrets"
        console.print(f"Encrypted {rewritten} stored {noun} with the first key.")
