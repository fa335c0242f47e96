"""Training helpers below the stages: base-policy traces for ``train_base``, the warm-start
data and TRL settings for ``sft_warmstart``."""
