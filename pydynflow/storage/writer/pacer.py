"""`Pacer`: how many change sets the writer process's next transaction may take.

Each transaction pays a commit (an fsync: fixed, whatever its size), so bigger groups pay it
less often; but every sender in a group waits for the whole group, and a group of the world's
every pending change leaves the world idle while it is written. The pacer takes the middle:
a transaction holds about as many change sets as the writer handles in the time of a few
commits, measured as it goes.
"""

from __future__ import annotations

__all__ = ["GROUP_REQUESTS_MAX", "GROUP_REQUESTS_MIN", "Pacer"]

GROUP_REQUESTS_MIN = 16
"""Change sets a transaction may take at least, whatever the pacer measures."""
GROUP_REQUESTS_MAX = 4096
"""Change sets a transaction may take at most, whatever the pacer measures."""


class Pacer:
    """How many change sets (requests) the next transaction may take.

    A transaction holds about as many requests as the writer handles in the time of
    `COMMITS` commits, so the commit is at most a fifth of a transaction's time and a sender
    waits for the others in its group no longer than a few commits would take. With fast
    commits that is the minimum; on a disk whose fsync takes milliseconds, hundreds. Both
    costs are running averages of what the writer process measures.
    """

    COMMITS = 4
    """A transaction's writing takes about this many commits' time."""
    WEIGHT = 0.2
    """The weight of the newest measurement in the running averages."""

    def __init__(self) -> None:
        self.commit_s = 0.0  # one commit
        self.request_s = 0.0  # writing one request (decode, encode, SQL)

    def budget(self) -> int:
        """Return the requests the next transaction may take."""
        if self.request_s <= 0.0:
            return GROUP_REQUESTS_MAX  # nothing measured yet
        fits = int(self.COMMITS * self.commit_s / self.request_s)
        return max(GROUP_REQUESTS_MIN, min(GROUP_REQUESTS_MAX, fits))

    def observe(self, requests: int, work: float, commit: float) -> None:
        """Take in a transaction of ``requests``: ``work`` seconds writing, ``commit``
        seconds committing."""
        if requests <= 0:
            return
        per_request = max(work, 0.0) / requests
        if self.request_s <= 0.0:
            self.commit_s, self.request_s = commit, per_request
            return
        weight = self.WEIGHT
        self.commit_s += weight * (commit - self.commit_s)
        self.request_s += weight * (per_request - self.request_s)
