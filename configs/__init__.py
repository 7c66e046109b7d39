"""ml_collections configs; each file's `get_config(arg)` docstring holds its command."""
