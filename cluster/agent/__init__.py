"""`podium agent`: runs jobs and reports metrics for a conductor over the xySat protocol.

It talks to conductors only over WebSocket and HTTP and imports nothing from api/, storage/ or the rest of
cluster/: it runs on machines with no access to the store.
"""
