"""The pipeline's machinery, below the stages and above the pure method (``mrt_core``).

Generation engine, environment families, RL arms, training helpers, data loading, tracking and
the config models live here; ``tasks/`` holds only the stages that compose them. Nothing here
imports ``tasks`` or ``flows`` (``tests/test_layers.py`` checks it).
"""
