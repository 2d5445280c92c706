"""What the wire means: journal, rules, alert lifecycle, delivery, daemon."""

__version__ = "0.1.0"
