"""Durable record of the tasks an agent accepted, so a duplicate task id gets the first answer.

One SQLite file per host (``<data>/tasks.sqlite3``, WAL). A row is written when a task starts
(state ``running``) and rewritten with its final status. Rows left ``running`` by a previous agent
process are tasks interrupted by a restart: ``recover_interrupted`` turns them into failures
(``agent_error``) so that a duplicate never runs them a second time.

Bounded: finished rows older than ``max_age`` or beyond the newest ``max_rows`` are pruned.
Calls are synchronous and short (WAL, ``synchronous=NORMAL``: a crash of the agent loses nothing, a
power loss may lose the last commits); use from the event loop thread only.
"""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

from corral.api.agent import TaskState, TaskStatus
from corral.api.errors import AgentError, StorageError

_SCHEMA = """
CREATE TABLE IF NOT EXISTS tasks (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    task_id TEXT NOT NULL UNIQUE,
    state TEXT NOT NULL,
    status TEXT NOT NULL,
    callback_url TEXT,
    created REAL NOT NULL,
    finished REAL
)
"""


class TaskStore:
    """Persisted task statuses of one host."""

    def __init__(self, path: Path, *, max_rows: int = 10_000, max_age: float = 24 * 3600.0) -> None:
        self.path = path
        self.max_rows = max_rows
        self.max_age = max_age
        self._db: sqlite3.Connection | None = None
        self._writes = 0

    def open(self) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            db = sqlite3.connect(self.path, isolation_level=None)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            db.execute(_SCHEMA)
        except sqlite3.Error as exc:
            raise StorageError("cannot open the task database", path=str(self.path)) from exc
        self._db = db
        self.prune()

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None

    @property
    def db(self) -> sqlite3.Connection:
        if self._db is None:
            raise StorageError("task database is not open", path=str(self.path))
        return self._db

    def get(self, task_id: str) -> TaskStatus | None:
        row = self.db.execute("SELECT status FROM tasks WHERE task_id = ?", (task_id,)).fetchone()
        return None if row is None else TaskStatus.model_validate_json(row[0])

    def started(self, status: TaskStatus, callback_url: str | None) -> None:
        """Record a task that starts now (its status is ``running``)."""
        self._exec(
            "INSERT OR REPLACE INTO tasks (task_id, state, status, callback_url, created)"
            " VALUES (?, ?, ?, ?, ?)",
            (status.task_id, status.state, status.model_dump_json(), callback_url, time.time()),
        )

    def finished(self, status: TaskStatus) -> None:
        """Record the final status of a task."""
        self._exec(
            "UPDATE tasks SET state = ?, status = ?, finished = ? WHERE task_id = ?",
            (status.state, status.model_dump_json(), time.time(), status.task_id),
        )
        self._writes += 1
        if self._writes % 256 == 0:
            self.prune()

    def recover_interrupted(self) -> list[tuple[TaskStatus, str | None]]:
        """Fail every task a previous process left running; returns them with their callback URL."""
        rows = self.db.execute(
            "SELECT task_id, callback_url FROM tasks WHERE state = ?", (TaskState.running,)
        ).fetchall()
        out: list[tuple[TaskStatus, str | None]] = []
        for task_id, callback_url in rows:
            err = AgentError("the agent restarted while the task was running", task_id=task_id)
            status = TaskStatus(task_id=task_id, state=TaskState.failed, error=err.to_body())
            self.finished(status)
            out.append((status, callback_url))
        return out

    def prune(self) -> None:
        """Drop finished rows older than ``max_age`` or beyond the newest ``max_rows``."""
        self._exec(
            "DELETE FROM tasks WHERE state != ? AND (finished < ?"
            " OR seq <= (SELECT MAX(seq) FROM tasks) - ?)",
            (TaskState.running, time.time() - self.max_age, self.max_rows),
        )

    def count(self) -> int:
        return int(self.db.execute("SELECT COUNT(*) FROM tasks").fetchone()[0])

    def _exec(self, sql: str, params: tuple[object, ...]) -> None:
        try:
            self.db.execute(sql, params)
        except sqlite3.Error as exc:
            raise StorageError("task database write failed", path=str(self.path)) from exc
