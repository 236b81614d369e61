"""Search-space presets (YAML) shipped with automl-transfer."""
