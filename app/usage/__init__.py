"""The usage stream: the entry schema, the writer, and the readers the CLI uses."""
