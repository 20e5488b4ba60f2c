"""Apple's rules for a Sign in with Apple configuration, as functions, for services built on the
library (the Apple Connect service's admin panel uses them; ``appleconnect doctor`` is
:func:`run_checks` on the command line).

Each function names what Apple would refuse before Apple answers with no reason at all:

- :func:`validate_team_or_key_id`, :func:`validate_client_id`, :func:`load_private_key`: the
  identifiers and the ``.p8`` key, as :class:`~appleconnect.ClientSecret` checks them;
- :func:`redirect_uri_problem`: why Apple would refuse a redirect URI (or ``None``);
- :func:`run_checks`: every offline check the given settings allow, one :class:`Check` each,
  including a pasted client secret (:data:`SECRET_EXPIRY_WARNING` before it expires);
- :func:`split_list`: the one syntax of a list of identifiers (repeated and/or comma-separated,
  no empty element, no space inside), with an error that shows the accepted forms;
- :func:`decode_unverified`: the header and claims of a JWT *without* verifying anything, to
  read a pasted client secret's expiry or an id_token's audience before it is verified. Never
  trust what it returns: :func:`~appleconnect.verify_identity_token` is the verification.

docs/client.md#checking-a-configuration describes them.
"""

from __future__ import annotations

from ._doctor import SECRET_EXPIRY_WARNING, Check, run_checks
from ._jws import decode_unverified
from ._lists import split_list
from ._redirect_uri import redirect_uri_problem
from ._secret import load_private_key, validate_client_id, validate_team_or_key_id

__all__ = [
    "SECRET_EXPIRY_WARNING",
    "Check",
    "decode_unverified",
    "load_private_key",
    "redirect_uri_problem",
    "run_checks",
    "split_list",
    "validate_client_id",
    "validate_team_or_key_id",
]
