"""A simulated shop day and terminal, for the demo, tests and rule evaluation."""
