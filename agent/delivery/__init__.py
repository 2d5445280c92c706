"""Getting notices out: the delivery thread (loop.py) drains the outbox to the channels (channels/)."""
