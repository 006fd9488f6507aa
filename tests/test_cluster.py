"""The cluster rules, in process with a fake clock: rendezvous shares, membership, the lease."""

from __future__ import annotations

from collections import Counter

from scheduler_app.cluster import Lease, Membership, owner

NODES = ["a:1:x", "b:2:y", "c:3:z"]
JOBS = range(1, 3001)


def shares(members: list[str]) -> dict[int, str | None]:
    return {job: owner(job, members) for job in JOBS}


def test_every_node_computes_the_same_owner_whatever_the_order_of_the_member_list():
    assert shares(NODES) == shares(list(reversed(NODES))) == shares([NODES[1], NODES[2], NODES[0]])


def test_jobs_are_divided_about_evenly():
    counts = Counter(shares(NODES).values())
    assert set(counts) == set(NODES)
    assert all(800 <= n <= 1200 for n in counts.values()), counts


def test_a_node_that_leaves_hands_over_only_its_own_jobs():
    before, after = shares(NODES), shares(NODES[:2])
    moved = {job for job in JOBS if before[job] != after[job]}
    assert moved == {job for job in JOBS if before[job] == NODES[2]}


def test_a_node_that_joins_takes_about_a_quarter_and_only_for_itself():
    before, after = shares(NODES), shares([*NODES, "d:4:w"])
    moved = [job for job in JOBS if before[job] != after[job]]
    assert all(after[job] == "d:4:w" for job in moved)
    assert 600 <= len(moved) <= 900, len(moved)


def test_no_members_no_owner():
    assert owner(7, []) is None


def test_membership_says_which_jobs_are_mine_like_owner_does():
    views = [Membership(name) for name in NODES]
    for view in views:
        assert view.update(NODES)
    for job in JOBS:
        mine = [view.me for view in views if view.mine(job)]
        assert mine == [owner(job, NODES)]


def test_a_lone_node_owns_everything_and_always_counts_itself():
    view = Membership("a:1:x")
    assert all(view.mine(job) for job in JOBS)
    assert view.update(["b:2:y"])  # a list read without this node (it just registered)
    assert view.members == ("a:1:x", "b:2:y")
    assert not view.update(["b:2:y", "a:1:x"]), "the same members: no change"


def test_membership_changes_bump_the_version():
    view = Membership("a:1:x")
    v = view.version
    view.update(NODES)
    assert view.version == v + 1
    view.update(NODES[:2])
    assert view.version == v + 2


def test_a_renamed_node_drops_its_old_name():
    view = Membership("a:1:x")
    view.update(NODES)
    view.rename("a:1:new")
    assert view.members == ("a:1:new", "b:2:y", "c:3:z")
    assert {job for job in JOBS if view.mine(job)} == {
        job for job in JOBS if owner(job, ["a:1:new", "b:2:y", "c:3:z"]) == "a:1:new"
    }


def test_the_lease_lasts_lost_after_minus_the_margin_from_the_heartbeat_sent():
    lease = Lease(lost_after=3.0, margin=0.5)
    assert not lease.valid(100.0), "no heartbeat yet: not allowed to act"
    lease.renewed(100.0)
    assert lease.valid(102.4)
    assert not lease.valid(102.5)
    assert lease.expires_in(101.0) == 1.5


def test_a_heartbeat_keeps_the_lease_and_a_late_one_renews_it():
    lease = Lease(lost_after=3.0, margin=0.5)
    lease.renewed(100.0)
    lease.renewed(100.5)
    assert lease.valid(102.9)
    assert not lease.valid(110.0), "paused: expired when it wakes up"
    lease.renewed(110.0)
    assert lease.valid(110.1)


def test_an_older_heartbeat_answered_late_does_not_shorten_the_lease():
    lease = Lease(lost_after=3.0, margin=0.5)
    lease.renewed(101.0)
    lease.renewed(100.5)
    assert lease.renewed_at == 101.0


def test_a_node_judges_others_only_after_watching_without_a_gap_for_lost_after():
    lease = Lease(lost_after=3.0, margin=0.5)
    t = 100.0
    lease.renewed(t)
    while t < 102.5:
        t += 0.5
        lease.renewed(t)
        assert not lease.may_judge(t)
    t += 0.5
    lease.renewed(t)
    assert lease.may_judge(t)
    # a database outage: heartbeats fail for 10 s; everybody's heartbeat is old when it returns
    t += 10
    lease.renewed(t)
    assert lease.valid(t)
    assert not lease.may_judge(t), "first give the others time to beat"
    assert lease.may_judge(t + 3.0) is False, "no heartbeat since: not valid, no judging"
    for step in range(1, 7):
        lease.renewed(t + step * 0.5)
    assert lease.may_judge(t + 3.0)


def test_a_reset_lease_forbids_acting_until_the_next_heartbeat():
    lease = Lease(lost_after=3.0, margin=0.5)
    lease.renewed(100.0)
    lease.reset()
    assert not lease.valid(100.1)
    lease.renewed(100.2)
    assert lease.valid(100.3)
