"""What plugins and the core agree on: the hooks, the objects plugins hand over, option parsing.

Nothing here imports torch, timm or optuna, so loading plugins stays cheap. Plugin authors
import these names from :mod:`automl_transfer.plugin`.
"""
