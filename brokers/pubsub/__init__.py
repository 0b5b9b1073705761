"""The pub/sub broker (``iii-pubsub``): ``publish`` and ``subscribe`` triggers, in memory."""
