"""Async batch jobs: kept in the store at once, run in the background, answered when polled.

Items run through the text service's one entry, as interactive requests do (TextService.generate,
the run endpoint's result format), each with a request record of its own: it counts in `/metrics`
under protocol `batch` and writes the request log's line, with the job, item and attempt beside the
usual fields. They run at the engine's background priority, the one `X-Priority: low` asks for,
so interactive requests go first in the engine's queue; at most `batch.concurrency` items are on
the engine at once, so interactive requests keep its slots.

An item interrupted by the server (shutdown, a full queue, an engine that died) goes back to the
queue and runs again later; an item that fails on its own (its prompt too long, say) is done, with
its error as its answer. Items still running when the server stops are cancelled (their engine
requests aborted) and queued again; the store queues again those a killed process left running.

Jobs live in the SQLite file (server/batch/store.py), or with `database_url` in the database the
replicas share (server/stores/batch.py). With SQLite and several front-end processes (`wai serve
--api-processes N`) every one takes jobs and answers polls, but only the first runs items: a second
runner would queue again, when it opens the store, the items the first has in flight, and they would
run twice. With the database every process of every replica runs items (`batch.concurrency` each):
each claim is a lease the runner renews while the item runs, and one that runs out (its replica
died) frees the item for the others. The database unreachable, submissions and polls answer 503 /
3048 and the runner waits for it; an answer it cannot record yet is kept and recorded once the
database is back, unless the item's lease ran out and it was taken over meanwhile.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import secrets
import socket
import sqlite3
import time
import uuid
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from server import errors, metrics
from server.batch.store import BatchStore, JobStore, SqliteJobStore
from server.config import Settings
from server.lifecycle import Deadline, Lifecycle
from server.protocol import batch, workers_ai
from server.records import RequestRecord
from server.serving.registry import ModelRegistry, Route
from server.serving.requests import RunOptions
from server.serving.text import TextService
from server.stores.batch import Claim, NewItem, PostgresBatchStore
from server.stores.postgres import Database

crashes = logging.getLogger("wai.batch")

IDLE_POLL_S = 1.0  # how often an idle runner looks for work nobody woke it for
BUSY_PAUSE_S = 1.0  # after an item was put back because the server could not take it
EXPIRE_EVERY_S = 60.0
# An item whose runs a dying process interrupted this often fails (500 / 3043), so that one that
# brings the engine down cannot do so forever. Shutdowns and a busy server do not count.
MAX_ORPHANED = 3
BATCH = "batch"  # the items' protocol, in the request log and the metrics
TEXT_GENERATION = "text-generation"
# Errors that say the server could not take the item now, not that the item is wrong: it runs again.
SERVER_BUSY = {errors.service_unavailable().status, errors.capacity_exceeded().status}
# A store that failed: SQLite's file (a full disk, say), or the shared database unreachable (its
# calls raise nothing but 503 / 3048). The runner lives on through both.
STORE_FAILED = (sqlite3.Error, errors.WaiError)


class SubmittingStore(BatchStore):
    """The store as a front end that does not run items opens it: the items running are another
    process's, in flight, not left behind by a stopped one."""

    def requeue_running(self) -> int:
        return 0


class BatchJobs:
    def __init__(
        self,
        settings: Settings,
        registry: ModelRegistry,
        lifecycle: Lifecycle,
        clock: Callable[[], float] = time.time,
        runs_items: bool = True,
        database: Database | None = None,
    ):
        """`runs_items`: with SQLite, False in every front end but one; such a one takes jobs and answers
        polls only. With the shared `database`, every one runs items."""
        self.runs_items = runs_items or database is not None
        self.database = database
        self.lease_s = settings.cluster.lease_s
        self.config = settings.batch
        self.db_path = settings.batch_db_path
        self.request_timeout_s = settings.limits.request_timeout_s
        self.log_prompts = settings.log_prompts
        self.registry = registry
        self.lifecycle = lifecycle
        self.clock = clock
        self._store: JobStore | None = None
        self._runner: asyncio.Task[None] | None = None
        self._renewer: asyncio.Task[None] | None = None
        self._items: dict[asyncio.Task[None], Claim] = {}
        self._wake = asyncio.Event()
        self._paused_until = 0.0
        self._next_expiry = 0.0

    @property
    def store(self) -> JobStore:
        assert self._store is not None, "the batch store opens with the app's lifespan"
        return self._store

    # --- the app's lifespan -------------------------------------------------------------------
    async def start(self) -> None:
        """Open the store (with SQLite, queueing again what a stopped process left running) and start
        running items."""
        self._store = self._open_store()
        await self._refresh_gauge()
        if not self.runs_items:
            return
        self._runner = asyncio.create_task(self._run(), name="wai-batch-runner")
        if self.store.lease_s is not None:
            self._renewer = asyncio.create_task(self._renew_leases(self.store.lease_s), name="wai-batch-leases")

    def _open_store(self) -> JobStore:
        if self.database is not None:
            return PostgresBatchStore(self.database, replica_id(), self.lease_s)
        if not self.runs_items:
            return SqliteJobStore(SubmittingStore.open(self.db_path))
        return SqliteJobStore(BatchStore.open(self.db_path))

    async def stop(self) -> None:
        """Stop taking items, cancel those running (each goes back to the queue), close the store."""
        for task in (self._runner, self._renewer):
            if task is not None:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        for task in list(self._items):
            task.cancel()
        await asyncio.gather(*self._items, return_exceptions=True)
        if self._store is not None:
            await self._store.close()
            self._store = None

    # --- what the run endpoint calls ----------------------------------------------------------
    async def submit(self, model: str, items: list[batch.BatchItem]) -> str:
        """Keep a job of `items` for `model` (as the client named it); its request id. 413 / 429 past the bounds."""
        stored = [
            NewItem(json.dumps(item.input, ensure_ascii=False), json.dumps(item.external_reference)) for item in items
        ]
        if sum(len(item.input.encode()) for item in stored) > self.config.max_payload_bytes:
            raise errors.batch_too_large(self.config.max_payload_bytes)
        await self._expire(now=True)  # expired jobs never count against max_jobs
        job_id = str(uuid.uuid4())
        if not await self.store.submit(job_id, model, stored, self.clock(), self.config.max_jobs):
            raise errors.batch_jobs_full(self.config.max_jobs)
        await self._refresh_gauge()
        self._wake.set()
        return job_id

    async def poll(self, request_id: str, route: Route) -> dict[str, Any]:
        """The job's status, or all its answers once done; 404 for no such job of this model (or expired)."""
        job = await self.store.job(request_id)
        if job is None or job.model not in route.service.model.served_names:
            raise errors.batch_not_found(request_id)
        if job.status != "done":
            return batch.status(job.id, job.model, job.status)
        responses = [json.loads(response or "null") for response in await self.store.responses(job.id)]
        return batch.done(job.id, job.model, responses)

    # --- the runner ---------------------------------------------------------------------------
    async def _run(self) -> None:
        slots = asyncio.Semaphore(self.config.concurrency)
        while not self.registry.all_ready():  # items would only fail with 503 until then
            await asyncio.sleep(IDLE_POLL_S)
        while True:
            await slots.acquire()
            claim = await self._next_claim()
            task = asyncio.create_task(self._run_item(claim))
            self._items[task] = claim
            task.add_done_callback(lambda done: self._items.pop(done, None))
            task.add_done_callback(lambda _: slots.release())

    async def _renew_leases(self, lease_s: float) -> None:
        """Every third of a lease, renew those of the items in flight, so that no other replica takes
        them while they run; a renewal that fails is tried again at the next."""
        while True:
            await asyncio.sleep(lease_s / 3)
            try:
                await self.store.renew(list(self._items.values()))
            except STORE_FAILED:
                crashes.warning("the batch items' leases could not be renewed; trying again in %.1f s", lease_s / 3)

    async def _next_claim(self) -> Claim:
        """The next item to run, once there is one and the server takes work (not while it drains)."""
        while True:
            loop = asyncio.get_running_loop()
            try:
                await self._expire()
                if not self.lifecycle.draining and loop.time() >= self._paused_until:
                    claim = await self.store.claim()
                    if claim is not None:
                        return claim
            except STORE_FAILED as failure:  # keep the runner alive and try again
                log_store_failure(failure, "the batch store failed; retrying in %.0f s", BUSY_PAUSE_S)
                self._paused_until = loop.time() + BUSY_PAUSE_S
            self._wake.clear()
            try:
                await asyncio.wait_for(self._wake.wait(), self._idle_wait_s(loop.time()))
            except TimeoutError:
                pass

    def _idle_wait_s(self, now: float) -> float:
        """How long to wait for a wake-up before looking again: the rest of a pause, else IDLE_POLL_S."""
        paused_s = self._paused_until - now
        return min(paused_s, IDLE_POLL_S) if paused_s > 0 else IDLE_POLL_S

    async def _run_item(self, claim: Claim) -> None:
        record = RequestRecord(BATCH, log_prompts=self.log_prompts, request_id=engine_request_id(claim))
        record.context.update(batch=claim.job, item=claim.index, attempt=claim.attempts)
        reference = json.loads(claim.external_reference)
        try:
            route = self.registry.route(claim.model, task=TEXT_GENERATION)  # as at submission (api/batch.py)
            record.serve(route.service.model)
            if claim.orphaned >= MAX_ORPHANED:
                raise errors.internal_error()
            result = await self._generate(route, claim, record)
            response, outcome = batch.item_success(claim.index, result, reference), "success"
        except asyncio.CancelledError:
            record.fail(errors.service_unavailable())
            await self._put_back(claim, record, "stopping")
            raise
        except errors.WaiError as failure:
            record.fail(failure)
            if failure.status in SERVER_BUSY or (self.lifecycle.draining and failure.status >= 500):
                await self._put_back(claim, record, failure.message)
                self._paused_until = asyncio.get_running_loop().time() + BUSY_PAUSE_S
                return
            response, outcome = batch.item_failure(claim.index, failure, reference), "error"
        except Exception:
            crashes.exception("batch item %s/%d failed", claim.job, claim.index)
            record.fail(errors.internal_error())
            response, outcome = batch.item_failure(claim.index, errors.internal_error(), reference), "error"
        await self._complete(claim, record, response, outcome)

    async def _generate(self, route: Route, claim: Claim, record: RequestRecord) -> dict[str, Any]:
        """The item's run result, as the run endpoint answers it: the text service's one entry, under
        the same request timeout an HTTP request has."""
        service = route.service
        assert isinstance(service, TextService), "a text-generation route leads to a text service"
        text = workers_ai.parse_run_input(json.loads(claim.input))
        text = replace(text, stream=False, options=RunOptions(background=True))
        deadline = Deadline(asyncio.get_running_loop().time() + self.request_timeout_s)
        completion = await (await service.generate(text, route.requested_name, record, deadline)).completion()
        return workers_ai.text_result(completion, json_mode=text.output.type != "text")

    async def _complete(self, claim: Claim, record: RequestRecord, response: dict[str, Any], outcome: str) -> None:
        """Keep the item's answer, then count and log it; an answer not kept runs again later."""
        recorded = await self._record(claim, json.dumps(response, ensure_ascii=False))
        if recorded is None:  # the item stays running in the file: the next start queues it again
            self._finish(record, "requeued", "its answer could not be recorded")
            return
        if not recorded:  # another run of the item holds it now (its claim was given up)
            self._finish(record, "superseded")
            return
        metrics.BATCH_ITEMS.labels(record.model, outcome).inc()
        self._finish(record, outcome)
        await self._refresh_gauge()

    async def _record(self, claim: Claim, response: str) -> bool | None:
        """Whether the store recorded the answer (False: another claim holds the item); None when it
        failed. The shared database unreachable, the answer waits here for it, its lease renewed
        meanwhile: once back, it is recorded, or superseded if the lease ran out and the item was
        taken over."""
        while True:
            try:
                return await self.store.complete(claim, response, self.clock())
            except sqlite3.Error:
                crashes.exception("batch item %s/%d: its answer could not be recorded", claim.job, claim.index)
                return None
            except errors.WaiError:
                crashes.warning(
                    "batch item %s/%d: recording its answer again in %.0f s", claim.job, claim.index, BUSY_PAUSE_S
                )
                await asyncio.sleep(BUSY_PAUSE_S)

    async def _put_back(self, claim: Claim, record: RequestRecord, why: str) -> None:
        """Queue the item again; with the store closed (stopping) or unreachable, the next opening of
        the SQLite file does, or the end of the item's lease."""
        try:
            if self._store is not None and not await self.store.requeue(claim):
                self._finish(record, "superseded", why)
                return
        except STORE_FAILED as failure:
            log_store_failure(failure, "batch item %s/%d could not be put back", claim.job, claim.index)
        metrics.BATCH_ITEMS.labels(record.model, "requeued").inc()
        self._finish(record, "requeued", why)

    def _finish(self, record: RequestRecord, outcome: str, why: str | None = None) -> None:
        """The item's record, finished as an HTTP request's is: its status is its error's, or 200."""
        record.context["outcome"] = outcome
        if why is not None:
            record.context["why"] = why
        record.finish(200 if record.error is None else record.error.status, answered=True)

    # --- bookkeeping --------------------------------------------------------------------------
    async def _expire(self, now: bool = False) -> None:
        """Forget jobs whose answers are past `result_retention_s`: every EXPIRE_EVERY_S, or `now`."""
        if not now and self.clock() < self._next_expiry:
            return
        now_s = self.clock()
        self._next_expiry = now_s + min(EXPIRE_EVERY_S, self.config.result_retention_s / 2)
        if await self.store.expire(now_s - self.config.result_retention_s):
            await self._refresh_gauge()

    async def _refresh_gauge(self) -> None:
        """The jobs gauge; left as it was when the store fails (a job it accepted is accepted)."""
        try:
            counts = await self.store.job_counts()
        except STORE_FAILED as failure:
            log_store_failure(failure, "the batch jobs could not be counted")
            return
        for status, count in counts.items():
            metrics.BATCH_JOBS.labels(status).set(count)


def log_store_failure(failure: Exception, message: str, *args: object) -> None:
    """SQLite's failures with their trace (they are rare, and local); the shared database unreachable
    in one line (postgres.py logs why, and it lasts as long as the outage)."""
    if isinstance(failure, sqlite3.Error):
        crashes.exception(message, *args)
    else:
        crashes.warning(message + ": %s", *args, failure)


def replica_id() -> str:
    """This process's name on the items it runs: its host, its pid, and a random part for a pid reused."""
    return f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(4)}"


def engine_request_id(claim: Claim) -> str:
    """Each attempt's own engine request id, so that the log tells attempts apart."""
    return f"batch-{claim.job}-{claim.index}-{claim.attempts}"
