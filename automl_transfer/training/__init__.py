"""Training one trial: its parameters, the fit loop, evaluation, optimiser and regularisation."""
