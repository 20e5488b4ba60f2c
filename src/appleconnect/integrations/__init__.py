"""Sign in with Apple inside your own web app: thin adapters over the client library.

:class:`AppleSignIn` is the framework-neutral core (the web flow, the account mapping,
notifications, deletion); :mod:`.fastapi`, :mod:`.flask` and :mod:`.django` adapt it to each
framework, one extra each (``appleconnect[fastapi]``...). They use the library only: never the
Apple Connect service, never the emulator. See docs/integrations.md.
"""

from __future__ import annotations

from ._crypto import EncryptionKeyError, TokenCipher
from ._flow import AppleSignIn, Finished, SignInError, Started, from_environ, safe_next_path
from ._records import AppleAccount, CompletedSignIn, PendingSignIn
from ._store import MemoryStore, SignInStore

__all__ = [
    "AppleAccount",
    "AppleSignIn",
    "CompletedSignIn",
    "EncryptionKeyError",
    "Finished",
    "MemoryStore",
    "PendingSignIn",
    "SignInError",
    "SignInStore",
    "Started",
    "TokenCipher",
    "from_environ",
    "safe_next_path",
]
