"""The live transcript relay: one monitor socket per call, shared through Redis (relay.py)."""
