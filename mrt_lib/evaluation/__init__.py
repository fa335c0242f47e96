"""Evaluation machinery: rows per model and budget, meta-prover curves and token efficiency
(``metrics``), the comparison of RL arms (``comparison``), and the figures evaluate and report draw."""
