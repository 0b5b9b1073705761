def aggregation(_):
    logger = Logger()
    results = iii.trigger({"function_id": "state::list", "payload": {"scope": "math"}})
    values = [r for r in results if isinstance(r, (int, float))]
    total = sum(values)
    agg = {"count": len(values), "sum": total, "average": total / len(values) if values else 0}
    logger.info("Math aggregation completed", agg)
    return agg


iii.register_function("math::aggregation", aggregation)

iii.register_trigger({
    "type": "cron",
    "function_id": "math::aggregation",
    "config": {"expression": "0 */30 * * * * *"},  # every 30 minutes
})
