"""Who submits: the Hugging Face username on a Space (OAuth), or the configured local identity.

The server's own accounts (the shipped model's, the paper's and the pathologists' rows) are
reserved: the shipped model's account is maintainer-run, so a Hugging Face user of that name
must not become it.
"""

from __future__ import annotations

from settings import Settings
from store.schema import RESERVED_USERS
from submissions.errors import ReservedAccount


def resolve_user(oauth_username: str | None, settings: Settings) -> str:
    """The Hugging Face username when signed in, else the configured local identity.

    Raises:
        ReservedAccount: the username is one of the server's own accounts (the shipped model's
            is maintainer-run: its scorings are always released).
    """
    if oauth_username in RESERVED_USERS:
        raise ReservedAccount(
            f"The account name '{oauth_username}' is reserved for this server's own entries, "
            "so it cannot submit here; ask the maintainers to add your account another way."
        )
    return oauth_username or settings.local_user
