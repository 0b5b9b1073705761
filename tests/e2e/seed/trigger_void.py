from iii import TriggerAction


def calculate_async(data):
    iii.trigger({"function_id": "math::add", "payload": {"a": data["a"], "b": data["b"]}, "action": TriggerAction.Void()})


iii.register_function("math::calculate-async", calculate_async)
