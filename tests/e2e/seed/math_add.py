import os
import uuid

from iii import Logger, register_worker

iii = register_worker(os.environ.get("III_URL", "ws://localhost:49134"))


def add(data):
    logger = Logger()
    result = data["a"] + data["b"]
    id = str(uuid.uuid4())
    iii.trigger({"function_id": "state::set", "payload": {"scope": "math", "key": id, "value": result}})
    logger.info("Math add completed", {"id": id, "result": result})
    return {"id": id, "result": result}


iii.register_function("math::add", add)

# Triggerable from any other function or worker
iii.trigger({"function_id": "math::add", "payload": {"a": 2, "b": 3}})
