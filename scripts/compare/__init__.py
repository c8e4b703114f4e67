"""cnnbench beside peers' own code and recipes, on the same machine and data."""
