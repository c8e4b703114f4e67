"""Checks run by hand: a newcomer's first hour replayed, and the GPU check script."""
