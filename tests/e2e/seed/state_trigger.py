from iii import HttpInvocationConfig

iii.register_function(
    "orders::webhook",
    HttpInvocationConfig(url=os.environ["WEBHOOK_URL"], method="POST", timeout_ms=5000),
)

iii.register_trigger({
    "type": "state",
    "function_id": "orders::webhook",
    "config": {"scope": "orders", "key": "status"},
})
