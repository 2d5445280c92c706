"""What the wire says: byte transports and sans-I/O protocol decoders.

Nothing in this package imports ``agent``; full card numbers never leave it.
"""
