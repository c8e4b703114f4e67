"""What regenerates the docs' figures and tables."""
