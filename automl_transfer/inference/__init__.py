"""Using a saved model: rebuilding it and classifying images."""
