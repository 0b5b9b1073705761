from iii import HttpInvocationConfig, register_worker
from iii.iii_types import HttpAuthBearer

iii = register_worker("ws://localhost:49134")


iii.register_function(
    "notifications::send",
    HttpInvocationConfig(
        url="https://hooks.provider.example.com/notify",
        method="POST",
        timeout_ms=5000,
        headers={"X-Service": "iii-worker"},
        auth=HttpAuthBearer(token_key="PROVIDER_API_TOKEN"),
    ),
    description="POST notification to Service Provider webhook",
)

iii.trigger({"function_id": "notifications::send", "payload": {"channel": "#alerts", "text": "Deploy succeeded"}})
