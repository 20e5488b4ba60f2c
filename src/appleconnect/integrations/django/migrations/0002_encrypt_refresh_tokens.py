"""Apple's refresh tokens encrypted at rest: the new column ``encrypted_refresh_token`` gets the
tokens of ``refresh_token`` encrypted with ``APPLE_SIGN_IN["ENCRYPTION_KEY"]``, then the clear
column is dropped. Reversible (the tokens are decrypted back)."""

from typing import Any

from django.db import migrations, models


def _cipher() -> Any:
    from appleconnect.integrations import TokenCipher
    from appleconnect.integrations.django.conf import encryption_keys

    return TokenCipher(encryption_keys())


def encrypt_tokens(apps: Any, schema_editor: Any) -> None:
    identities = apps.get_model("appleconnect_apple", "AppleIdentity").objects
    pending = identities.exclude(refresh_token="")
    if not pending.exists():
        return
    cipher = _cipher()  # only needed (and required) when there are tokens to encrypt
    for identity in pending.iterator():
        identity.encrypted_refresh_token = cipher.encrypt(identity.refresh_token)
        identity.refresh_token = ""
        identity.save(update_fields=["encrypted_refresh_token", "refresh_token"])


def decrypt_tokens(apps: Any, schema_editor: Any) -> None:
    identities = apps.get_model("appleconnect_apple", "AppleIdentity").objects
    pending = identities.exclude(encrypted_refresh_token="")
    if not pending.exists():
        return
    cipher = _cipher()
    for identity in pending.iterator():
        identity.refresh_token = cipher.decrypt(identity.encrypted_refresh_token)
        identity.save(update_fields=["refresh_token"])


class Migration(migrations.Migration):
    dependencies = [("appleconnect_apple", "0001_initial")]

    operations = [
        migrations.AddField(
            model_name="appleidentity",
            name="encrypted_refresh_token",
            field=models.TextField(blank=True, default=""),
        ),
        migrations.RunPython(encrypt_tokens, decrypt_tokens),
        migrations.RemoveField(model_name="appleidentity", name="refresh_token"),
    ]
