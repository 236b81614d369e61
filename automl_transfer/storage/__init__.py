"""Where a search keeps things: the run dir, the Optuna storage, the best model, atomic files."""
