"""iii-http-functions: functions the engine serves by calling an HTTP endpoint."""
