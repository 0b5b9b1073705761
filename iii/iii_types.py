"""The wire types of the worker SDK under their public name (``from iii.iii_types import
...``, as the iii docs write it); they live in ``sdk.types``."""
from __future__ import annotations

from sdk.types import (  # noqa: F401
    HTTP_METHODS, HttpAuthApiKey, HttpAuthBearer, HttpAuthConfig, HttpAuthHmac,
    HttpInvocationConfig, HttpMethod, TriggerAction, TriggerActionEnqueue, TriggerActionType,
    TriggerActionVoid, TriggerConfig, action_to_wire, http_auth_from_wire,
)
