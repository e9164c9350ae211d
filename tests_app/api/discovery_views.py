"""search, docs, refresh, export."""


class DiscoveryActions:
    pass
