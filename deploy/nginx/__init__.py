"""nginx site template and its renderer."""
