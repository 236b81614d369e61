"""The network a trial trains: source models, their weights, freezing, and the backbone + head model."""
