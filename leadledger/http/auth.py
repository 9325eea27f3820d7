"""Bearer-token auth: a dependency that lets through only `Authorization: Bearer <token>`."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable
from typing import Annotated

from fastapi import Depends
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.exceptions import HTTPException

# module level: with postponed annotations FastAPI resolves hints in the module's globals
BEARER = HTTPBearer(auto_error=False, scheme_name="bearer",
                    description="Set LEADLEDGER_API_TOKEN on the server; send `Authorization: Bearer <token>`.")
BearerCredentials = Annotated[HTTPAuthorizationCredentials | None, Depends(BEARER)]


def token_check(token: str) -> Callable[..., None]:
    """A dependency that accepts only `Authorization: Bearer <token>`, compared in constant time
    (both sides hashed first, so not even the token's length leaks)."""
    expected = hashlib.sha256(token.encode()).digest()

    def check(credentials: BearerCredentials) -> None:
        given = hashlib.sha256(credentials.credentials.encode() if credentials else b"").digest()
        matches = hmac.compare_digest(given, expected)
        if credentials is None or not matches:
            raise HTTPException(401, "missing or wrong bearer token (send Authorization: Bearer <token>)",
                                headers={"WWW-Authenticate": 'Bearer realm="leadledger"'})

    return check
