def double(data):
    # Trigger a function that might be implemented in Node, Rust, or any other language
    result = iii.trigger({"function_id": "math::add", "payload": {"a": data["value"], "b": data["value"]}})
    print(result)  # {'result': 10} if value was 5
    return result


iii.register_function("math::double", double)
