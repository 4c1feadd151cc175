"""The one-time code that verifies a caller ID.

A number is trusted as an account's caller ID once an SMS from it brings back the code
sent to it (:meth:`IStore.issue_caller_id_code
<callbackd.store.interface.IStore.issue_caller_id_code>`,
:meth:`~callbackd.store.interface.IStore.confirm_caller_id_code`). The SMS front issues
one for ``R.<number>``, the web portal for a number added on its caller-ID page; both
make it here, so the code reads the same whichever front sent it.
"""

from __future__ import annotations

import secrets
from typing import Final

__all__ = ["CODE_DIGITS", "new_caller_id_code"]

#: the digits of a caller-ID code
CODE_DIGITS: Final = 6


def new_caller_id_code() -> str:
    """A fresh caller-ID code: :data:`CODE_DIGITS` random decimal digits, zeros kept."""
    return f"{secrets.randbelow(10**CODE_DIGITS):0{CODE_DIGITS}d}"
