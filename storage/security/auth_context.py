"""Who the call being served is, as its token proved (issue 16, item 3): set by the token check
(user_auth.py) for the call's task, read by what records or logs the call (the user's name, never a token).

No import but the standard library, so any module of the server (the audit log's records included) may read
it without an import cycle.
"""

from __future__ import annotations

import contextvars

# The user of the call being served; "" outside a call, or for a call a certificate alone authenticated.
CURRENT_USER: contextvars.ContextVar[str] = contextvars.ContextVar("sixfold_user", default="")
