"""A synchronous, in-process Flower ``Grid``: a ServerApp and a ClientApp in one process, no Ray.

Every message is delivered to the ClientApp at once (one node after the other) and
copied through ``pickle`` both ways, so nothing is shared between server and client
objects; a ClientApp exception becomes an error reply, as in Flower's engines. Each node
keeps its own ``Context`` (``node_config`` with ``partition-id`` / ``num-partitions``).
Used by the fast tests and by ``benchmarks/flower_secagg.py`` to measure pure protocol
compute; the Ray simulation engine and the gRPC deployment engine run the very same apps.

``drop(partition_id, message) -> bool`` lets a test make a node silent (its message is
lost: no reply at all, as when a SuperNode dies); ``intercept(partition_id, message) ->
list[Message]`` lets a test play a malicious server or network between the workflow and
the nodes.
"""

from __future__ import annotations

import os
import pickle
import uuid
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from flwr.app import Context, Message, RecordDict
from flwr.app.error import Error
from flwr.common.constant import SUPERLINK_NODE_ID, ErrorCode
from flwr.serverapp import Grid
from flwr.supercore.run import Run
from flwr.supercore.task_identity import TaskIdentity

__all__ = ["InProcessGrid", "run_inprocess"]


class InProcessGrid(Grid):
    """Delivers messages synchronously to ``client_app`` for ``num_nodes`` nodes."""

    def __init__(
        self,
        client_app: Any,
        *,
        num_nodes: int,
        run_id: int,
        run_config: Mapping[str, Any] | None = None,
        node_config: Callable[[int], Mapping[str, Any]] | None = None,
        drop: Callable[[int, Message], bool] | None = None,
        intercept: Callable[[int, Message], list[Message]] | None = None,
    ) -> None:
        self._run = Run.create_empty(run_id=run_id)
        self._app = client_app
        ids: set[int] = set()
        while len(ids) < num_nodes:
            ids.add(int.from_bytes(os.urandom(8), "little") >> 2)
        self.partition_of = {nid: pid for pid, nid in enumerate(sorted(ids))}
        self.contexts = {
            nid: Context(
                run_id=run_id,
                node_id=nid,
                node_config={
                    "partition-id": pid,
                    "num-partitions": num_nodes,
                    **dict(node_config(pid) if node_config else {}),
                },
                state=RecordDict(),
                run_config=dict(run_config or {}),
            )
            for nid, pid in self.partition_of.items()
        }
        self._drop = drop
        self._intercept = intercept
        self._replies: dict[str, Message] = {}
        self.bytes_down = 0
        self.bytes_up = 0

    def set_run(self, run: Run) -> None:
        self._run = run

    @property
    def run(self) -> Run:
        return self._run

    def create_message(
        self, content: RecordDict, message_type: str, dst_node_id: int, group_id: str, ttl: float | None = None
    ) -> Message:
        return Message(content, dst_node_id, message_type, ttl=ttl, group_id=group_id)

    def get_node_ids(self) -> Iterable[int]:
        return list(self.contexts)

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        ids = []
        for original in messages:
            pid = self.partition_of.get(original.metadata.dst_node_id, -1)
            for msg in self._intercept(pid, original) if self._intercept is not None else [original]:
                mid = str(uuid.uuid4())
                msg.metadata.__dict__["_message_id"] = mid
                ids.append(mid)
                nid = msg.metadata.dst_node_id
                if nid not in self.contexts or (self._drop is not None and self._drop(self.partition_of[nid], msg)):
                    continue
                blob = pickle.dumps(msg)
                self.bytes_down += len(blob)
                wire = pickle.loads(blob)
                try:
                    out = self._app(wire, self.contexts[nid])
                except Exception as ex:  # as Flower's engines do: an exception becomes an error reply
                    out = Message(Error(code=ErrorCode.CLIENT_APP_RAISED_EXCEPTION, reason=repr(ex)), reply_to=wire)
                out.metadata.__dict__["_message_id"] = str(uuid.uuid4())
                blob = pickle.dumps(out)
                self.bytes_up += len(blob)
                self._replies[mid] = pickle.loads(blob)
        return ids

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        return [self._replies.pop(i) for i in list(message_ids) if i in self._replies]

    def send_and_receive(self, messages: Iterable[Message], *, timeout: float | None = None) -> Iterable[Message]:
        return self.pull_messages(self.push_messages(messages))


def run_inprocess(
    server_app: Any,
    client_app: Any,
    *,
    num_nodes: int,
    run_config: Mapping[str, Any] | None = None,
    node_config: Callable[[int], Mapping[str, Any]] | None = None,
    drop: Callable[[int, Message], bool] | None = None,
    intercept: Callable[[int, Message], list[Message]] | None = None,
) -> InProcessGrid:
    """Run ``server_app`` against ``num_nodes`` nodes of ``client_app`` in this process; returns the grid."""
    run_id = int.from_bytes(os.urandom(7), "little")
    TaskIdentity.task_id = 1
    TaskIdentity.run_id = run_id
    TaskIdentity.node_id = SUPERLINK_NODE_ID
    grid = InProcessGrid(
        client_app,
        num_nodes=num_nodes,
        run_id=run_id,
        run_config=run_config,
        node_config=node_config,
        drop=drop,
        intercept=intercept,
    )
    server_app(
        grid=grid,
        context=Context(
            run_id=run_id, node_id=0, node_config={}, state=RecordDict(), run_config=dict(run_config or {})
        ),
    )
    return grid
