"""Commented YAML experiment configs, shipped as package data (``omnirl.configs``)."""
