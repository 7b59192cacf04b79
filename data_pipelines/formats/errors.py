"""Errors raised by the dataset readers: one exception type that names the file and the problem."""

from __future__ import annotations


class BadExampleError(ValueError):
    """A malformed example; the message names the offending file and the problem.

    `reason` is a short machine-readable key (e.g. "missing_file", "corrupt_image", "bad_rle") used by
    the readers' `skipped` counters; `path` is the file (or "file:key") at fault.
    """

    def __init__(self, path: object, problem: str, reason: str = "bad_example"):
        self.path = str(path)
        self.problem = problem
        self.reason = reason
        super().__init__(f"{self.path}: {problem} [{reason}]")

    def __reduce__(self):  # keep pickling (grain workers) working with the custom signature
        return (type(self), (self.path, self.problem, self.reason))
