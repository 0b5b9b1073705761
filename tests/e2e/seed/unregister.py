def create_order(data):
    return {"status_code": 201, "body": {"id": "123", "item": data["body"]["item"]}}


fn_ref = iii.register_function("orders::create", create_order)

trigger = iii.register_trigger({
    "type": "http",
    "function_id": "orders::create",
    "config": {"api_path": "/orders", "http_method": "POST"},
})

fn_ref.unregister()
trigger.unregister()
