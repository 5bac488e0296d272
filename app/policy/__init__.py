"""Who may do what: the origin grammar, the allowlist, and admission (one Redis round trip)."""
