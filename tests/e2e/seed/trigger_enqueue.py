import uuid

from iii import TriggerAction


def create_order(input):
    order = {"id": str(uuid.uuid4()), **input}
    result = iii.trigger({
        "function_id": "orders::process-order",
        "payload": order,
        "action": TriggerAction.Enqueue(queue="payment"),
    })
    return {"orderId": order["id"], "messageReceiptId": result["messageReceiptId"]}


iii.register_function("orders::create", create_order)
