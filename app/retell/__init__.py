"""Retell's API, behind one client per concern: calls today (chat, webhooks, monitor next)."""
