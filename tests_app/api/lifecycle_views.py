"""start, next, run, end, stop, get, archive; and benchmark search."""


class LifecycleActions:
    pass


class BenchmarkActions:
    pass
