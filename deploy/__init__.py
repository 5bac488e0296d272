"""Deployment: gunicorn, nginx and systemd configuration, and `make run`."""
