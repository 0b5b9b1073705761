"""The stream worker (``iii-stream``): ``stream::*``, stream triggers and the subscriber socket."""
