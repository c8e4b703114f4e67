"""Code generated for the package."""
