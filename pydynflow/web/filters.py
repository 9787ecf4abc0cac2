"""The plan list's query string, checked against lists: what is not on a list is a 400.

Every parameter has a fixed set of allowed values (states, results, orders, directions, page
sizes, the root action classes stored) or a bounded shape (a label, a search text, a page
number); an unknown parameter, a repeated single one, or a value outside its list is
refused with `BadRequest` (HTTP 400), never passed on to SQL, which takes values only as
parameters anyway.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Sequence
from urllib.parse import urlencode

from pydynflow.states import PlanState, Result
from pydynflow.storage.listing import LIST_ORDERS, PlanQuery

__all__ = [
    "ANY_STATE",
    "DEFAULT_STATES",
    "PAGE_SIZES",
    "BadRequest",
    "ListView",
    "parse_list",
]

ANY_STATE = "any"
"""``state=any``: every state (the default leaves out ``stopped``, as Dynflow's console)."""
DEFAULT_STATES = tuple(state.value for state in PlanState if state != PlanState.STOPPED)
PAGE_SIZES = (10, 25, 50, 100)
MAX_TEXT = 200
"""The longest label or search text taken."""
MAX_PAGE = 1_000_000
_PLAN_ID = re.compile(r"^[0-9A-Za-z][0-9A-Za-z._:-]{0,63}$")
_SINGLE = ("label", "q", "action", "caller", "caller_action", "order", "dir", "page", "per_page")
_MULTI = ("state", "result")


class BadRequest(Exception):  # noqa: N818 - named after the HTTP status it becomes
    """A query the console refuses (HTTP 400); the message says why."""


@dataclasses.dataclass(frozen=True)
class ListView:
    """A checked plan-list request: the storage query and how to link to its neighbours."""

    query: PlanQuery
    states: tuple[str, ...]
    """The states asked for (empty: any state)."""
    results: tuple[str, ...]
    label: str
    search: str
    action_class: str
    caller: str
    caller_action: str
    order_by: str
    desc: bool
    page: int | None
    """None: the last page (``page=last``), resolved once the total is known."""
    per_page: int

    def params(self, **changes: object) -> dict[str, object]:
        """Return the query parameters of this view, with ``changes`` (None drops one)."""
        params: dict[str, object] = {}
        if not self.states:
            params["state"] = ANY_STATE
        elif self.states != DEFAULT_STATES:
            params["state"] = list(self.states)
        if self.results:
            params["result"] = list(self.results)
        for name, value in (
            ("label", self.label),
            ("q", self.search),
            ("action", self.action_class),
            ("caller", self.caller),
            ("caller_action", self.caller_action),
        ):
            if value:
                params[name] = value
        if self.order_by != "started_at" or not self.desc:
            params["order"] = self.order_by
            params["dir"] = "desc" if self.desc else "asc"
        if self.per_page != 50:
            params["per_page"] = self.per_page
        if self.page not in (1, None):
            params["page"] = self.page
        if self.page is None:
            params["page"] = "last"
        for key, change in changes.items():
            if change is None:
                params.pop(key, None)
            else:
                params[key] = change
        return params

    def query_string(self, **changes: object) -> str:
        """Return `params` as a query string (with a leading ``?``, or empty)."""
        text = urlencode(self.params(**changes), doseq=True)
        return f"?{text}" if text else ""

    def order_link(self, column: str) -> str:
        """Return the query string that orders by ``column`` (reversed if it is the order)."""
        desc = not self.desc if column == self.order_by else column in ("started_at", "ended_at")
        return self.query_string(order=column, dir="desc" if desc else "asc", page=None)


def parse_list(
    items: Sequence[tuple[str, str]], action_classes: Callable[[], Sequence[str]]
) -> ListView:
    """Check a plan list's query string (its ``(name, value)`` pairs) and return the view.

    ``action_classes()`` returns the classes an ``action`` filter may name; it is called
    only when one is given.

    Raises:
        BadRequest: for anything outside the lists.
    """
    single: dict[str, str] = {}
    multi: dict[str, list[str]] = {name: [] for name in _MULTI}
    for name, value in items:
        if "\x00" in value:
            raise BadRequest(f"{name}: NUL characters are not allowed")
        if name in _MULTI:
            multi[name].append(value)
        elif name in _SINGLE:
            if name in single:
                raise BadRequest(f"{name} is given twice")
            single[name] = value
        else:
            raise BadRequest(f"unknown parameter {name!r}")
    states = _states(multi["state"])
    results = _choices("result", multi["result"], [result.value for result in Result])
    label = _text("label", single.get("label", ""))
    search = _text("q", single.get("q", ""))
    action_class = single.get("action", "")
    if action_class and action_class not in action_classes():
        raise BadRequest(f"action: no plan has the root action class {action_class!r}")
    caller = single.get("caller", "")
    if caller and not _PLAN_ID.match(caller):
        raise BadRequest("caller: not a plan id")
    caller_action = single.get("caller_action", "")
    if caller_action and (not caller or not _digits(caller_action, 1 << 31)):
        raise BadRequest("caller_action: needs caller, and must be an action id")
    order_by = single.get("order", "started_at")
    if order_by not in LIST_ORDERS:
        raise BadRequest(f"order: must be one of {', '.join(LIST_ORDERS)}")
    direction = single.get("dir", "desc")
    if direction not in ("asc", "desc"):
        raise BadRequest("dir: must be asc or desc")
    per_page_text = single.get("per_page", "50")
    if per_page_text not in {str(size) for size in PAGE_SIZES}:
        raise BadRequest(f"per_page: must be one of {', '.join(map(str, PAGE_SIZES))}")
    per_page = int(per_page_text)
    page_text = single.get("page", "1")
    page: int | None
    if page_text == "last":
        page = None
    elif _digits(page_text, MAX_PAGE) and int(page_text) >= 1:
        page = int(page_text)
    else:
        raise BadRequest(f"page: must be a number from 1 to {MAX_PAGE:,}, or last")
    query = PlanQuery(
        states=states or None,
        results=results or None,
        label=label or None,
        search=search or None,
        action_class=action_class or None,
        caller=(caller, int(caller_action) if caller_action else None) if caller else None,
        order_by=order_by,
        desc=direction == "desc",
        limit=per_page,
        offset=((page or 1) - 1) * per_page,
    )
    return ListView(
        query=query,
        states=states,
        results=results,
        label=label,
        search=search,
        action_class=action_class,
        caller=caller,
        caller_action=caller_action,
        order_by=order_by,
        desc=direction == "desc",
        page=page,
        per_page=per_page,
    )


def _states(values: list[str]) -> tuple[str, ...]:
    if not values:
        return DEFAULT_STATES
    if ANY_STATE in values:
        if len(values) > 1:
            raise BadRequest(f"state: {ANY_STATE} goes alone")
        return ()
    return _choices("state", values, [state.value for state in PlanState])


def _choices(name: str, values: list[str], allowed: list[str]) -> tuple[str, ...]:
    for value in values:
        if value not in allowed:
            raise BadRequest(f"{name}: {value!r} is not one of {', '.join(allowed)}")
    return tuple(sorted(set(values), key=allowed.index))


def _text(name: str, value: str) -> str:
    if len(value) > MAX_TEXT:
        raise BadRequest(f"{name}: at most {MAX_TEXT} characters")
    if any(ord(char) < 32 for char in value):
        raise BadRequest(f"{name}: control characters are not allowed")
    return value.strip()


def _digits(text: str, limit: int) -> bool:
    return text.isascii() and text.isdigit() and len(text) <= 10 and int(text) <= limit
