"""The machinery of an RL round: the arms (``arms``), prefixes and their ``J``, grouping a
step's rollouts, the policy update, validation and the round's resume state."""
