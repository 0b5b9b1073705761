"""The queue broker (``iii-queue``): named queues, durable topics, DLQ, on LMDB."""
