"""The local stack and the fakes: used by `make run`, the tests and the benchmarks alike.

Nothing here ships to servers (deploy/ holds what does).
"""
