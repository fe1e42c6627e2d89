"""The local cloud: runs the stack program against local services (``make dev``)."""
