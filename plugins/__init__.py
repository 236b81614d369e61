"""Built-in automl-transfer plugins, each registered through an entry point in pyproject.toml."""
