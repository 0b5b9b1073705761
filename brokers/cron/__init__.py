"""The cron broker (``iii-cron``): the ``cron`` trigger type, one timer heap for every job."""
