"""The order state machine."""

from __future__ import annotations

import pytest

from rrr.execution.orders import TERMINAL, IllegalTransitionError, Orders, is_open
from rrr.shared.errors import RRRError


def test_unseen_order_has_no_status():
    orders = Orders()
    assert orders.status("c1") is None
    assert "c1" not in orders
    assert len(orders) == 0


def test_new_order_can_be_accepted_then_filled():
    orders = Orders()
    orders.transition("c1", "accepted")
    assert orders.status("c1") == "accepted"
    orders.transition("c1", "filled")
    assert orders.status("c1") == "filled"
    assert "c1" in orders


def test_new_order_can_be_rejected():
    orders = Orders()
    orders.transition("c1", "rejected")
    assert orders.status("c1") == "rejected"


@pytest.mark.parametrize(
    ("path", "wanted"),
    [
        ((), "filled"),
        ((), "partially_filled"),
        ((), "canceled"),
        ((), "expired"),
        (("accepted",), "accepted"),
        (("accepted",), "rejected"),
        (("rejected",), "accepted"),
        (("rejected",), "filled"),
        (("rejected",), "rejected"),
        (("rejected",), "canceled"),
        (("accepted", "filled"), "filled"),
        (("accepted", "filled"), "accepted"),
        (("accepted", "filled"), "rejected"),
        (("accepted", "filled"), "canceled"),
        (("accepted", "partially_filled"), "accepted"),
        (("accepted", "partially_filled"), "rejected"),
        (("accepted", "canceled"), "filled"),
        (("accepted", "canceled"), "partially_filled"),
        (("accepted", "canceled"), "expired"),
        (("accepted", "expired"), "canceled"),
        (("accepted", "expired"), "filled"),
    ],
)
def test_illegal_transition_raises_and_leaves_the_status_unchanged(path, wanted):
    orders = Orders()
    for status in path:
        orders.transition("c1", status)
    before = orders.status("c1")
    with pytest.raises(IllegalTransitionError) as info:
        orders.transition("c1", wanted)
    assert orders.status("c1") == before
    assert info.value.client_order_id == "c1"
    assert str(info.value) == f"order c1: cannot go from {before or 'new'} to {wanted}"


def test_illegal_transition_error_is_a_project_error():
    assert issubclass(IllegalTransitionError, RRRError)


def test_orders_are_tracked_independently():
    orders = Orders()
    orders.transition("c1", "accepted")
    orders.transition("c2", "rejected")
    orders.transition("c1", "filled")
    assert (orders.status("c1"), orders.status("c2")) == ("filled", "rejected")
    assert sorted(orders) == ["c1", "c2"]


def test_oldest_order_is_forgotten_once_the_bound_is_reached():
    orders = Orders(max_orders=2)
    orders.transition("c1", "accepted")
    orders.transition("c2", "accepted")
    orders.transition("c3", "accepted")
    assert len(orders) == 2
    assert "c1" not in orders
    assert orders.status("c3") == "accepted"


def test_the_order_updated_longest_ago_is_the_one_forgotten():
    orders = Orders(max_orders=2)
    orders.transition("c1", "accepted")
    orders.transition("c2", "accepted")
    orders.transition("c1", "filled")
    orders.transition("c3", "rejected")
    assert list(orders.items()) == [("c1", "filled"), ("c3", "rejected")]


def test_orders_restored_in_the_order_of_their_items_are_forgotten_in_the_same_order():
    orders = Orders(max_orders=3)
    for order_id in ("c1", "c2", "c3"):
        orders.transition(order_id, "accepted")
    orders.transition("c1", "filled")
    copy = Orders(max_orders=3)
    for order_id, status in orders.items():
        copy.restore(order_id, status)
    for twin in (orders, copy):
        twin.transition("c4", "accepted")
    assert list(copy.items()) == list(orders.items()) == [("c3", "accepted"), ("c1", "filled"), ("c4", "accepted")]


def test_restore_keeps_the_furthest_status_whatever_the_order_read():
    orders = Orders()
    orders.restore("c1", "filled")
    orders.restore("c1", "accepted")  # an older event read after a newer one
    assert orders.status("c1") == "filled"


def test_restore_moves_forward_along_legal_transitions():
    orders = Orders()
    orders.restore("c1", "accepted")
    orders.restore("c1", "filled")
    orders.restore("c2", "rejected")
    assert (orders.status("c1"), orders.status("c2")) == ("filled", "rejected")


def test_restored_filled_order_cannot_be_filled_again():
    orders = Orders()
    orders.restore("c1", "filled")
    with pytest.raises(IllegalTransitionError):
        orders.transition("c1", "filled")


@pytest.mark.parametrize(
    "path",
    [
        ("accepted", "filled"),
        ("accepted", "partially_filled", "filled"),
        ("accepted", "partially_filled", "partially_filled", "filled"),
        ("accepted", "canceled"),
        ("accepted", "partially_filled", "canceled"),
        ("accepted", "expired"),
        ("accepted", "partially_filled", "expired"),
    ],
)
def test_an_order_moves_only_forward_to_one_terminal_state(path):
    orders = Orders()
    for status in path:
        assert is_open(orders.status("c1")) == (orders.status("c1") is not None)
        orders.transition("c1", status)
    assert orders.status("c1") in TERMINAL
    assert not is_open(orders.status("c1"))


def test_restore_of_partial_fills_moves_the_order_to_the_end_as_the_live_update_did():
    orders = Orders(max_orders=2)
    orders.restore("c1", "accepted")
    orders.restore("c2", "accepted")
    orders.restore("c1", "partially_filled")
    orders.restore("c1", "partially_filled")
    orders.restore("c3", "accepted")
    assert list(orders.items()) == [("c1", "partially_filled"), ("c3", "accepted")]


def test_restore_never_moves_a_terminal_order_back_to_open():
    orders = Orders()
    orders.restore("c1", "canceled")
    orders.restore("c1", "partially_filled")
    orders.restore("c1", "accepted")
    assert orders.status("c1") == "canceled"
