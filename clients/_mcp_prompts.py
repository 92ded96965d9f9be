"""``prontodb mcp``'s prompts: ProntoDB's coordination patterns, told as the tools to call in
order. Plain Python (no import of the MCP SDK): each prompt is a name, what it is for, its
arguments and the text it becomes once they are filled in."""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import NamedTuple


class Argument(NamedTuple):
    name: str
    description: str
    required: bool


class Pattern(NamedTuple):
    name: str
    title: str
    description: str
    arguments: tuple[Argument, ...]
    text: str  # str.format'ed with the arguments (every argument has a value by then)

    def render(self, given: dict[str, str]) -> str:
        """The prompt's text with ``given`` (ValueError naming a required argument missing)."""
        missing = [a.name for a in self.arguments if a.required and not given.get(a.name)]
        if missing:
            raise ValueError(f"the prompt {self.name} needs {', '.join(missing)}")
        values = {a.name: given.get(a.name) or DEFAULTS[a.name] for a in self.arguments}
        return self.text.format(**values)


DEFAULTS = {"lease": "60", "output": "done", "wait": "30"}

PATTERNS: tuple[Pattern, ...] = (
    Pattern(
        "worker",
        "Task-queue worker",
        "Take tasks from a ProntoDB queue one at a time, do each, and mark it done, so that "
        "several agents share the work and every task is done once.",
        (
            Argument("prefix", "the queue: the prefix its tasks are set under", True),
            Argument("lease", "seconds a task is yours before it goes back (default 60)", False),
        ),
        """You are a worker on the ProntoDB task queue `{prefix}`. Repeat:

1. Call `claim` with prefix `{prefix}`, wait 30 and lease {lease}. A `timed_out` error means
   there is no work yet: call `claim` again (or stop if you were told to stop when idle).
2. The result has the task's `key`, its `value` (what to do) and a `token`. Keep the token.
3. Do the task. If it takes longer than the lease, call `extend` with the key, the token and
   lease {lease} before the lease runs out.
4. When it is done, call `ack` with the key and the token: the task is removed.
   If you cannot do it, call `release` with the key and the token (and a `delay` to retry it
   later): another worker gets it.
5. A `compare_failed` answer from ack, extend or release means the task is no longer yours
   (its lease ran out): stop working on it and go back to step 1.

Never ack a task you did not finish; never work on a task without a claim.""",
    ),
    Pattern(
        "pipeline_stage",
        "Pipeline stage",
        "One stage of a pipeline: take items from one queue, work on each, and hand the result "
        "on as an item of the next stage's queue.",
        (
            Argument("input", "the prefix of this stage's queue", True),
            Argument("output", "the prefix of the next stage's queue (default done)", False),
            Argument("lease", "seconds an item is yours before it goes back (default 60)", False),
        ),
        """You are a stage of a pipeline: you take work from `{input}` and hand results to
`{output}`. Repeat:

1. Call `claim` with prefix `{input}`, wait 30 and lease {lease} (`timed_out`: nothing yet,
   claim again). Keep the `key` and the `token`.
2. Do this stage's work on the item's `value` (call `extend` with the key, the token and lease
   {lease} if it takes long).
3. Hand the result on and finish the item in one step, so that it is never done twice nor lost:
   call `txn` with no compares and ops
   `[{{"op": "set", "key": "{output}.<the item's last segment>", "value": <your result>}}]`,
   then `ack` with the key and the token. If the ack answers `compare_failed`, the item went
   back to the queue before you finished: delete the result you set (`del`) unless the next
   stage may see it twice.
4. If the item cannot be done, `release` it with a `delay`, or leave it: after its queue's
   max deliveries it goes to `dead.{input}` for a person to look at.""",
    ),
    Pattern(
        "resource_holder",
        "Resource holder",
        "Hold something only one agent may use at a time (a file, a branch, a device) under a "
        "ProntoDB lock, released if the holder goes away.",
        (
            Argument("name", "the lock's name: what the resource is called", True),
            Argument("wait", "seconds to wait in line per call (default 30)", False),
        ),
        """To use the resource `{name}` alone:

1. Take it: call `lock` with name `{name}` and wait {wait}. The result's `token` is your proof
   of holding it: keep it. A `timed_out` error means another agent held it all along: call
   `holders` with name `{name}` to see who (`writer`), then call `lock` again, or do other work
   first.
2. While you hold it, write what the resource guards with `fence` set to
   {{"name": "{name}", "token": <your token>}} (on `set`, `del`, `incr`, `mset` or `txn`): such
   a write happens only while you still hold the lock. A `compare_failed` error on it means you
   lost the lock (this server lost its broker for too long): stop, and take it again.
3. Give it back as soon as you are done: call `unlock` with name `{name}` and your token.
   If you stop without doing so, it is given back when your MCP server stops.""",
    ),
    Pattern(
        "monitor",
        "Monitor",
        "Keep an eye on what other agents do under a prefix, without polling, and report it.",
        (Argument("prefix", "the prefix to watch", True),),
        """You are watching `{prefix}` in ProntoDB for what other agents do.

1. Call `scan` with prefix `{prefix}` for what is there now, and `queues` and `claims` with
   prefix `{prefix}` for the work waiting and being done.
2. Call `watch` with prefix `{prefix}`, count 10 and timeout 30. Each event has the revision,
   the change's type (put, delete, expire, claim, ack, release), the key, the value and who made
   it (`by`). Report what matters; an empty list means nothing changed meanwhile.
3. Call `watch` again with `from_rev` set to the last result's `next_rev`, so that no change is
   missed or seen twice, for as long as you are to watch.

A host that subscribes to the resource prontodb://CURSOR/{prefix}/ is told of each change
without calling watch. Change nothing yourself: a monitor only reads.""",
    ),
    Pattern(
        "shared_context",
        "Shared context",
        "Share state (a plan, findings, decisions) with other agents under a prefix, and change "
        "it without losing anyone else's change.",
        (Argument("prefix", "the prefix the shared state is kept under", True),),
        """Agents share their state under `{prefix}` in ProntoDB.

1. Read it first: `scan` with prefix `{prefix}` (or `get` of one key).
2. Add something of your own under a key nobody else writes: `set` with key
   `{prefix}.<your part>`. To take a number or an id, use `incr` on a counter key.
3. To change something others may change too, never set it blindly: `get` it, then call `cas`
   with the key, `old` the value you read and `new` your value. A `compare_failed` error means
   someone changed it since you read it: read it again, merge, and retry.
   To change several keys together, use `txn` with compares on the values you read.
4. To wait for another agent's part instead of asking again and again, call `watch` with prefix
   `{prefix}` (from `from_rev` a result's `next_rev`).
5. `get` with meta true says who wrote a key last (`writer`) and when (`time`).""",
    ),
)


def named_tools(pattern: Pattern, tools: Iterable[str]) -> set[str]:
    """The tools among ``tools`` that ``pattern``'s text tells an agent to call (`name`)."""
    return set(re.findall(r"`([a-z_]+)`", pattern.text)) & set(tools)
