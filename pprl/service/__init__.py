"""Parties that talk over the network: each party's service and the client that calls it.

The signed documents stay the messages; HTTP only carries them. Design and
deployment: docs/deployment.md.
"""
