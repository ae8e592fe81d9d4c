"""Dynamic batching for `serve`: concurrent requests gathered into batches for `workers` worker
threads, as TF Serving's batching does. A batch closes when it holds `max_batch` items or when its
first item has waited `max_wait` seconds, whichever comes first, and is gathered only when a worker
is free: so the detector and the backbone see batches, and requests arriving meanwhile form the
next one. Two workers keep both cores busy: one batch's Python and NumPy steps (the detector's
box arithmetic, alignment, decoding) run while the other's TensorFlow ops do (bench group serve).
At most `max_queue` items wait (the running batches not counted): one more raises `QueueFull` at
once, so a flood is answered rather than queued without bound.
"""

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor


class QueueFull(Exception):
    """The batcher already holds max_queue waiting items."""


class Batcher:
    """work(items) -> results (one per item, in order) runs in `workers` threads, a batch each at a
    time (work must be safe to call from several threads). on_batch(size): called after each batch
    (a metric). Use inside a running event loop: `start()`, then `await submit(item)` from any
    number of tasks, then `await stop()`."""

    def __init__(self, work, *, max_batch, max_wait, max_queue, workers=1, on_batch=None):
        if max_batch < 1 or max_queue < 1 or max_wait < 0 or workers < 1:
            raise ValueError("max_batch, max_queue and workers must be >= 1, max_wait >= 0")
        self.work, self.max_batch, self.max_wait, self.max_queue = work, max_batch, max_wait, max_queue
        self.workers, self.on_batch = workers, on_batch
        self._waiting, self._arrived, self._task, self._running = None, None, None, set()
        self.pending = 0  # submitted and not yet answered (waiting, gathering or running)
        self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="batcher")

    def start(self):
        self._waiting = asyncio.Queue(maxsize=self.max_queue)
        self._arrived = asyncio.Event()
        self._task = asyncio.get_running_loop().create_task(self._consume())

    @property
    def waiting(self):
        """Items queued for a later batch."""
        return self._waiting.qsize() if self._waiting is not None else 0

    async def submit(self, item):
        """The item's result once its batch has run; QueueFull at once if max_queue items wait; the
        work's exception if its batch failed."""
        future = asyncio.get_running_loop().create_future()
        try:
            self._waiting.put_nowait((item, future, time.monotonic()))
        except asyncio.QueueFull:
            waiting = "1 request is" if self.max_queue == 1 else f"{self.max_queue} requests are"
            raise QueueFull(f"{waiting} already waiting") from None
        self._arrived.set()
        self.pending += 1
        try:
            return await future
        finally:
            self.pending -= 1

    async def _gather(self):
        """The next batch: the first waiting item and up to max_batch - 1 more, waiting at most until
        the first has waited max_wait."""
        batch = [await self._waiting.get()]
        deadline = batch[0][2] + self.max_wait
        while len(batch) < self.max_batch:
            try:
                batch.append(self._waiting.get_nowait())
                continue
            except asyncio.QueueEmpty:
                pass
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            self._arrived.clear()
            try:
                await asyncio.wait_for(self._arrived.wait(), remaining)
            except TimeoutError:
                pass
        return batch

    async def _consume(self):
        free = asyncio.Semaphore(self.workers)
        loop = asyncio.get_running_loop()
        while True:
            await free.acquire()  # a batch is gathered only when a worker can take it
            batch = await self._gather()
            task = loop.create_task(self._run(batch))
            self._running.add(task)
            task.add_done_callback(lambda done: (self._running.discard(done), free.release()))

    async def _run(self, batch):
        loop = asyncio.get_running_loop()
        try:
            results = await loop.run_in_executor(self._executor, self.work, [item for item, _, _ in batch])
            if len(results) != len(batch):
                raise RuntimeError(f"work returned {len(results)} results for {len(batch)} items")
        except Exception as exc:  # noqa: BLE001 - handed to each request of the batch
            for _, future, _ in batch:
                if not future.done():
                    future.set_exception(exc)
        else:
            for (_, future, _), result in zip(batch, results):
                if not future.done():  # a request cancelled meanwhile (its client left) is skipped
                    future.set_result(result)
        if self.on_batch:
            self.on_batch(len(batch))

    async def stop(self):
        """Stop taking batches (requests in flight have been answered: the server drained them first)."""
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        if self._running:
            await asyncio.wait(self._running)
        self._executor.shutdown(wait=True)
