"""The cluster as one node sees it: its lease, the live members, and which jobs are its share.

Pure: no database, no clock of its own (every call is given the time), so each rule has a unit
test with a fake clock (tests/test_cluster.py). ``nodes`` holds the statements that feed it,
the engine applies what it answers.

- **Lease** (fencing). Other nodes declare this node lost when its last heartbeat is older
  than ``LOST_AFTER_SECONDS`` by their clock. So this node may act (claim, run) only while its
  own last *successful* heartbeat is younger than ``LOST_AFTER_SECONDS - margin``: past that,
  somebody may already have taken its jobs over, and it must cancel its runs at once and claim
  nothing until a heartbeat succeeds again. A paused process (SIGSTOP, VM freeze) finds its
  lease expired the moment it wakes up; a node cut off from the database lets it expire while
  it runs. The heartbeat's time is taken *before* the write: the lease never outlives what the
  others saw.
- **Judging** others: a node declares others lost only after it has itself heartbeated without
  a gap for ``LOST_AFTER_SECONDS``. After a database outage everybody's heartbeat is old; the
  first node back must give the others time to beat before it declares them lost.
- **Membership and shares** (rendezvous hashing). The live members are the registered nodes
  neither stopped nor declared lost. Each job belongs to the member with the highest score
  ``hash(member, job)``: every node computes the same owner from the same member list, and a
  member joining or leaving moves only the jobs it wins or held (about 1/n of them). Views
  differ for a heartbeat or so while membership changes; the unique (job, slot) claim keeps
  that safe (two nodes may both try a slot, one wins) and the catch-up on a gained job keeps it
  from missing a slot.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

_MASK = (1 << 64) - 1


def _node_seed(name: str) -> int:
    return int.from_bytes(hashlib.blake2b(name.encode(), digest_size=8).digest(), "big")


def _mix(x: int) -> int:
    """splitmix64's finaliser: a cheap, well-spread 64-bit hash of an integer."""
    x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9 & _MASK
    x = (x ^ (x >> 27)) * 0x94D049BB133111EB & _MASK
    return x ^ (x >> 31)


def score(seed: int, job_id: int) -> int:
    return _mix(seed ^ (job_id * 0x9E3779B97F4A7C15 & _MASK))


def owner(job_id: int, members: list[str]) -> str | None:
    """The member that owns ``job_id`` (highest rendezvous score; ties by name), or None."""
    best: tuple[int, str] | None = None
    for name in members:
        candidate = (score(_node_seed(name), job_id), name)
        if best is None or candidate > best:
            best = candidate
    return best[1] if best else None


@dataclass
class Membership:
    """The live members as last read, and this node's share of the jobs."""

    me: str
    members: tuple[str, ...] = ()
    #: bumped on every change, so callers can tell a changed view
    version: int = 0
    _seeds: list[tuple[int, str]] = field(default_factory=list)
    _my_seed: int = 0

    def __post_init__(self) -> None:
        self.update([self.me])

    def update(self, members: list[str]) -> bool:
        """Take a fresh member list (this node is always in its own view); True if it changed."""
        names = tuple(sorted(set(members) | {self.me}))
        if names == self.members:
            return False
        self.members = names
        self._seeds = [(_node_seed(n), n) for n in names]
        self._my_seed = _node_seed(self.me)
        self.version += 1
        return True

    def rename(self, me: str) -> None:
        """This node rejoined under a new name: drop the old one from the view."""
        others = [n for n in self.members if n != self.me]
        self.me = me
        self.members = ()
        self.update(others)

    def mine(self, job_id: int) -> bool:
        """Whether this node owns ``job_id`` (cheap: one score per member, no allocation)."""
        if len(self._seeds) == 1:
            return True
        mine = (score(self._my_seed, job_id), self.me)
        for seed, name in self._seeds:
            if name != self.me and (score(seed, job_id), name) > mine:
                return False
        return True


@dataclass
class Lease:
    """How long this node may still act, from its last successful heartbeat (monotonic seconds)."""

    lost_after: float
    #: taken off the end of the lease: clock skew between nodes and the time to cancel runs
    margin: float
    #: when the last successful heartbeat was *sent*; None until the first one
    renewed_at: float | None = None
    #: start of the current run of heartbeats without a gap longer than the lease
    continuous_since: float | None = None

    @property
    def length(self) -> float:
        return self.lost_after - self.margin

    def renewed(self, sent_at: float) -> None:
        """A heartbeat sent at ``sent_at`` was written."""
        if self.renewed_at is None or sent_at - self.renewed_at > self.length or self.continuous_since is None:
            self.continuous_since = sent_at
        self.renewed_at = sent_at if self.renewed_at is None else max(self.renewed_at, sent_at)

    def valid(self, now: float) -> bool:
        return self.renewed_at is not None and now - self.renewed_at < self.length

    def expires_in(self, now: float) -> float:
        return (self.renewed_at + self.length - now) if self.renewed_at is not None else 0.0

    def may_judge(self, now: float) -> bool:
        """Whether this node has watched long enough, without a gap, to declare others lost."""
        return self.valid(now) and self.continuous_since is not None and now - self.continuous_since >= self.lost_after

    def reset(self) -> None:
        """Start over (this node rejoined under a new name)."""
        self.renewed_at = None
        self.continuous_since = None
