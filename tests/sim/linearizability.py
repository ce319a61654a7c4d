"""Linearizability checker for key-value client histories.

This module owns the *judgement* of a recorded client history: given the operations clients invoked
against the replicated KV store (invocation/completion times and observed results), it decides whether
one sequential order of those operations, consistent with real time, could have been produced by a
plain dictionary. It does not record histories and knows nothing about Raft: simulation and fault tests
build a list of `Operation` records and call `check_history`.

Model (per key the state is the stored value, ``None`` meaning absent):

* ``put``    args=(value,)         result ignored         state := value
* ``get``    args=()               result = value read    requires result == state
* ``delete`` args=()               result = bool existed  requires result == (state is not None);
                                                          state := None
* ``cas``    args=(expected, new)  result = bool swapped  swapped iff state == expected (expected None
                                                          means "key absent"); if swapped state := new
* ``clear``  args=()               result ignored         state := None (one key's part of a delete that
                                                          spans keys, such as a delete_prefix: whether
                                                          this key existed is not known on its own)

Values are compared with ``==``. As ``None`` means absent, ``put(key, None)`` makes the key absent.
Two operations whose intervals merely touch (one completes at the instant the other is invoked) are
treated as concurrent.

An operation with ``complete=None`` has an unknown outcome (the client timed out or crashed): it may
have taken effect at any instant after its invocation, or never. Its result is unconstrained.

Algorithm: linearizability is local (P-compositional), so the history is split by key and each key is
checked alone, with the Wing & Gong search as improved by Lowe and used by Knossos and Porcupine. Call
and return events are sorted once into a doubly-linked list. A depth-first search repeatedly linearizes
a pending call found before the first remaining return event (its invocation precedes the earliest
pending completion) and lifts the call and its return out of the list; on reaching a return event it
backtracks, unlifting the last linearized call and trying the next candidate. A cache of (bitset of
linearized ops, model state) prunes configurations already explored. The search is iterative, so
histories of many thousands of operations per key never approach Python's recursion limit.

Unknown-outcome operations get a return event at +infinity, so they never force anything: the search
succeeds once the first remaining return event is one of those (every operation with a known completion
is then linearized). A linearized unknown-outcome operation is taken to have *taken effect*; placements
where it would leave the state unchanged are skipped, being equivalent to it never taking effect.
Unknown-outcome ``get`` operations constrain nothing and are dropped.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Hashable, Iterable, Sequence
from dataclasses import dataclass, field

__all__ = ["CheckResult", "Operation", "canonical", "check_history", "check_key"]

PUT = "put"
GET = "get"
DELETE = "delete"
CAS = "cas"
CLEAR = "clear"
KINDS: frozenset[str] = frozenset({PUT, GET, DELETE, CAS, CLEAR})
_ARITY: dict[str, int] = {PUT: 1, GET: 0, DELETE: 0, CAS: 2, CLEAR: 0}

# How many operations an explanation lists in each section before eliding the rest.
_EXPLAIN_PREFIX_TAIL = 6
_EXPLAIN_MAX_CANDIDATES = 10


@dataclass(frozen=True)
class Operation:
    """One client operation on one key, as observed by the client.

    ``complete`` is None when the outcome is unknown (timeout, crash); ``result`` is then ignored.
    """

    client: str
    key: str
    kind: str
    args: tuple[object, ...]
    invoke: float
    complete: float | None
    result: object = None

    def describe(self) -> str:
        """A short human-readable rendering, e.g. ``c1: cas('a', 'b') -> True [1.0, 2.5]``."""
        arg_text = ", ".join(repr(arg) for arg in self.args)
        if self.complete is None:
            outcome, end = "?", "?"
        elif self.kind == PUT:
            outcome, end = "ok", repr(self.complete)
        else:
            outcome, end = repr(self.result), repr(self.complete)
        return f"{self.client}: {self.kind}({arg_text}) -> {outcome} [{self.invoke!r}, {end}]"


@dataclass
class CheckResult:
    """Outcome of `check_history`. On failure ``bad_key`` names the first key found not linearizable."""

    ok: bool
    bad_key: str | None = None
    explanation: str = ""
    keys_checked: int = 0
    ops_checked: int = 0


def canonical(value: object) -> Hashable:
    """Hashable form of a msgpack-like value that is equal for exactly the values that compare ``==``.

    Lists (and tuples) become tuples, dicts become frozensets of canonical (key, value) pairs; a tag keeps a
    list from ever equalling a dict. Scalars are returned unchanged.
    """
    if isinstance(value, list | tuple):
        return ("list", tuple(canonical(item) for item in value))
    if isinstance(value, dict):
        return ("dict", frozenset((canonical(k), canonical(v)) for k, v in value.items()))
    if isinstance(value, set | frozenset):
        return ("set", frozenset(canonical(item) for item in value))
    if isinstance(value, bytearray):
        return bytes(value)
    if not isinstance(value, Hashable):
        raise TypeError(f"cannot canonicalize value of type {type(value).__name__}: {value!r}")
    return value


def _validate(op: Operation) -> None:
    if op.kind not in KINDS:
        raise ValueError(f"unknown operation kind {op.kind!r} in {op!r}")
    if len(op.args) != _ARITY[op.kind]:
        raise ValueError(f"{op.kind} takes {_ARITY[op.kind]} argument(s), got {op.args!r}")
    if op.complete is not None and op.complete < op.invoke:
        raise ValueError(f"operation completes before it is invoked: {op!r}")


@dataclass(frozen=True)
class _Step:
    """An operation pre-compiled for the model: canonical operands and whether the outcome is known."""

    kind: str
    known: bool
    value: Hashable = None  # put: the value written; cas: the new value
    expected: Hashable = None  # cas: the expected value
    observed: Hashable = None  # get: the value read
    flag: bool = False  # delete: existed; cas: swapped


def _compile(op: Operation) -> _Step:
    known = op.complete is not None
    if op.kind == PUT:
        return _Step(PUT, known, value=canonical(op.args[0]))
    if op.kind == GET:
        return _Step(GET, known, observed=canonical(op.result) if known else None)
    if op.kind == DELETE:
        return _Step(DELETE, known, flag=bool(op.result) if known else False)
    if op.kind == CLEAR:
        return _Step(CLEAR, known)
    return _Step(
        CAS,
        known,
        expected=canonical(op.args[0]),
        value=canonical(op.args[1]),
        flag=bool(op.result) if known else False,
    )


def _apply(step: _Step, state: Hashable) -> tuple[bool, Hashable]:
    """Apply one operation to the model. Returns (allowed here, next state).

    For an unknown-outcome operation "allowed" means "takes effect and changes the state": a no-op placement
    is equivalent to the operation never taking effect, which the search already covers.
    """
    kind = step.kind
    if step.known:
        if kind == GET:
            return state == step.observed, state
        if kind == PUT:
            return True, step.value
        if kind == DELETE:
            return step.flag == (state is not None), None
        if kind == CLEAR:
            return True, None
        # cas
        if state == step.expected:
            return step.flag, step.value
        return not step.flag, state
    if kind == PUT:
        return step.value != state, step.value
    if kind in (DELETE, CLEAR):
        return state is not None, None
    if kind == CAS:
        return state == step.expected and step.value != state, step.value
    return False, state  # an unknown get never changes anything


@dataclass
class _SearchOutcome:
    ok: bool
    best_prefix: list[int] = field(default_factory=list)  # op indices, in linearization order
    best_state: Hashable = None
    best_raw_state: object = None


def _search(ops: Sequence[Operation]) -> _SearchOutcome:
    """Run the Wing & Gong / Lowe search over one key's operations (indices refer to ``ops``)."""
    steps = [_compile(op) for op in ops]
    n = len(ops)
    # Node 0 is the list head; op i has call node 2i+1 and return node 2i+2.
    node_op = [-1] * (2 * n + 1)
    node_is_call = [False] * (2 * n + 1)
    node_time = [0.0] * (2 * n + 1)
    for i, op in enumerate(ops):
        call, ret = 2 * i + 1, 2 * i + 2
        node_op[call] = node_op[ret] = i
        node_is_call[call] = True
        node_time[call] = op.invoke
        node_time[ret] = math.inf if op.complete is None else op.complete
    # Sort once by time; at equal times calls come before returns (touching intervals overlap).
    order = sorted(range(1, 2 * n + 1), key=lambda node: (node_time[node], not node_is_call[node], node))
    nxt = [-1] * (2 * n + 1)
    prv = [-1] * (2 * n + 1)
    previous = 0
    for node in order:
        nxt[previous] = node
        prv[node] = previous
        previous = node

    def lift(call: int) -> None:
        ret = call + 1
        nxt[prv[call]] = nxt[call]
        prv[nxt[call]] = prv[call]  # a call always has a successor: its own return at the latest
        nxt[prv[ret]] = nxt[ret]
        if nxt[ret] != -1:
            prv[nxt[ret]] = prv[ret]

    def unlift(call: int) -> None:
        ret = call + 1
        nxt[prv[ret]] = ret
        if nxt[ret] != -1:
            prv[nxt[ret]] = ret
        nxt[prv[call]] = call
        prv[nxt[call]] = call

    state: Hashable = None
    linearized = 0  # bitset over op indices
    seen: set[tuple[int, Hashable]] = set()
    stack: list[tuple[int, Hashable]] = []  # (call node linearized, state before it)
    states_raw: list[object] = [None]  # original (non-canonical) values, for explanations
    best_prefix: list[int] = []
    best_length = -1
    best_state: Hashable = None
    best_raw: object = None

    entry = nxt[0]
    while entry != -1:
        if node_is_call[entry]:
            op_index = node_op[entry]
            allowed, new_state = _apply(steps[op_index], state)
            if allowed:
                new_linearized = linearized | (1 << op_index)
                config = (new_linearized, new_state)
                if config not in seen:
                    seen.add(config)
                    stack.append((entry, state))
                    states_raw.append(_raw_after(ops[op_index], states_raw[-1]))
                    state, linearized = new_state, new_linearized
                    lift(entry)
                    entry = nxt[0]
                    continue
            entry = nxt[entry]
            continue
        # A return event: every call before it has been tried from this configuration.
        if node_time[entry] == math.inf:
            return _SearchOutcome(ok=True)  # only unknown-outcome ops remain
        if len(stack) > best_length:  # remember the deepest point reached, for the explanation
            best_length = len(stack)
            best_prefix = [node_op[call] for call, _ in stack]
            best_state, best_raw = state, states_raw[-1]
        if not stack:
            return _SearchOutcome(False, best_prefix, best_state, best_raw)
        entry, state = stack.pop()
        states_raw.pop()
        linearized &= ~(1 << node_op[entry])
        unlift(entry)
        entry = nxt[entry]
    return _SearchOutcome(ok=True)


def _raw_after(op: Operation, raw_before: object) -> object:
    """The original (non-canonical) value the key holds after ``op`` was linearized, for explanations."""
    if op.kind == PUT:
        return op.args[0]
    if op.kind in (DELETE, CLEAR):
        return None
    if op.kind == CAS and (op.complete is None or bool(op.result)):
        return op.args[1]  # linearized unknown-outcome cas always swapped
    return raw_before


def _ops_for_key(ops: Iterable[Operation]) -> list[Operation]:
    """Validate, drop unknown-outcome gets (they constrain nothing) and order by invocation."""
    kept: list[Operation] = []
    for op in ops:
        _validate(op)
        if op.kind == GET and op.complete is None:
            continue
        kept.append(op)
    kept.sort(key=lambda op: (op.invoke, math.inf if op.complete is None else op.complete))
    return kept


def check_key(ops: Iterable[Operation]) -> bool:
    """True if the operations, all on one key, form a linearizable history of a single register."""
    op_list = list(ops)
    keys = {op.key for op in op_list}
    if len(keys) > 1:
        raise ValueError(f"check_key needs operations on a single key, got keys {sorted(keys)!r}")
    return _search(_ops_for_key(op_list)).ok


def _explain(key: str, ops: Sequence[Operation], outcome: _SearchOutcome) -> str:
    prefix = outcome.best_prefix
    placed = set(prefix)
    lines = [f"key {key!r}: history of {len(ops)} operation(s) is not linearizable."]
    lines.append(
        f"Longest linearizable prefix found: {len(prefix)} operation(s)"
        + (f" (last {_EXPLAIN_PREFIX_TAIL} shown):" if len(prefix) > _EXPLAIN_PREFIX_TAIL else ":")
    )
    if len(prefix) > _EXPLAIN_PREFIX_TAIL:
        lines.append("  ...")
    for index in prefix[-_EXPLAIN_PREFIX_TAIL:]:
        lines.append(f"  {ops[index].describe()}")
    if not prefix:
        lines.append("  (none)")
    state_text = "absent" if outcome.best_state is None else repr(outcome.best_raw_state)
    lines.append(f"Value after that prefix: {state_text}.")
    remaining = [i for i in range(len(ops)) if i not in placed]
    completions = [complete for i in remaining if (complete := ops[i].complete) is not None]
    deadline = min(completions, default=math.inf)
    candidates = [i for i in remaining if ops[i].invoke <= deadline]
    lines.append(
        f"None of these can be placed next (each was invoked by t={deadline!r}, the earliest "
        "completion still pending, and none leads to a full linearization):"
    )
    for index in candidates[:_EXPLAIN_MAX_CANDIDATES]:
        allowed, _ = _apply(_compile(ops[index]), outcome.best_state)
        if allowed:
            reason = "fits here, but every continuation fails"
        elif ops[index].complete is None:
            reason = "would have no effect here"
        else:
            reason = "contradicts the value"
        lines.append(f"  {ops[index].describe()}   <- {reason}")
    if len(candidates) > _EXPLAIN_MAX_CANDIDATES:
        lines.append(f"  ... and {len(candidates) - _EXPLAIN_MAX_CANDIDATES} more")
    return "\n".join(lines)


def check_history(history: Iterable[Operation]) -> CheckResult:
    """Check a multi-key history, each key independently (in sorted order), stopping at the first bad key."""
    by_key: dict[str, list[Operation]] = defaultdict(list)
    for op in history:
        by_key[op.key].append(op)
    total = 0
    for checked, key in enumerate(sorted(by_key), start=1):
        ops = _ops_for_key(by_key[key])
        total += len(by_key[key])
        outcome = _search(ops)
        if not outcome.ok:
            return CheckResult(
                ok=False,
                bad_key=key,
                explanation=_explain(key, ops, outcome),
                keys_checked=checked,
                ops_checked=total,
            )
    return CheckResult(
        ok=True,
        explanation=f"linearizable: {len(by_key)} key(s), {total} operation(s)",
        keys_checked=len(by_key),
        ops_checked=total,
    )
