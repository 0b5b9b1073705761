def multiply(req):
    logger = Logger()
    a, b = req["body"]["a"], req["body"]["b"]
    result = a * b
    logger.info("Math multiply", {"a": a, "b": b, "result": result})
    return {
        "status_code": 200,
        "body": {"result": result},
        "headers": {"Content-Type": "application/json"},
    }


iii.register_function("math::multiply", multiply)

iii.register_trigger({
    "type": "http",
    "function_id": "math::multiply",
    "config": {"api_path": "/math/multiply", "http_method": "POST"},
})
