"""Watching the inputs themselves: a wire gone silent, a printer tap that sees no transaction, a terminal
whose clock is wrong. Each turns into one staff notice and a doctor check, never into silence."""
