def calculate(data):
    result = iii.trigger({"function_id": "math::add", "payload": {"a": data["a"], "b": data["b"]}})
    print(result)  # {'result': 5}
    return result


iii.register_function("math::calculate", calculate)
