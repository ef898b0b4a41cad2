"""The seed's read path for the database-backed benchmark (bench/db.sh), shared by the aiohttp
and FastAPI apps: worker → L1 (in-process LRU with a TTL) → L2 (Redis) → PostgreSQL (asyncpg
pool), with single flight per key, as seed 001 draws it ("L1: local memory cache, LRU" → "L2:
Redis cache" → "Database", asyncpg.create_pool).

Settings mirror the Palisade users cache the benchmark compares against: L1 entries live 5 s,
L2 entries 30 s, eight pooled connections per worker.
"""

import asyncio
import json
import os
import time
from collections import OrderedDict

import asyncpg
import redis.asyncio as aioredis

L1_TTL = 5.0
L1_MAX_ITEMS = int(os.environ.get("L1_MAX_ITEMS", "100000"))
L2_TTL_MS = 30_000
POOL_SIZE = int(os.environ.get("POOL_SIZE", "8"))


class UserStore:
    def __init__(self) -> None:
        self.pool: asyncpg.Pool | None = None
        self.redis: aioredis.Redis | None = None
        self.l1: OrderedDict[int, tuple[float, bytes | None]] = OrderedDict()
        self.inflight: dict[int, asyncio.Future] = {}

    async def start(self) -> None:
        self.pool = await asyncpg.create_pool(
            os.environ["DATABASE_URL"], min_size=POOL_SIZE, max_size=POOL_SIZE
        )
        self.redis = aioredis.from_url(os.environ["REDIS_URL"])

    async def stop(self) -> None:
        if self.pool is not None:
            await self.pool.close()
        if self.redis is not None:
            await self.redis.aclose()

    async def get(self, user_id: int) -> bytes | None:
        """The user's JSON body, or None when there is no such user."""
        now = time.monotonic()
        hit = self.l1.get(user_id)
        if hit is not None and hit[0] > now:
            self.l1.move_to_end(user_id)
            return hit[1]
        waiting = self.inflight.get(user_id)
        if waiting is not None:
            return await asyncio.shield(waiting)
        fut = asyncio.get_running_loop().create_future()
        self.inflight[user_id] = fut
        try:
            body = await self._load(user_id)
            self.l1[user_id] = (time.monotonic() + L1_TTL, body)
            self.l1.move_to_end(user_id)
            while len(self.l1) > L1_MAX_ITEMS:
                self.l1.popitem(last=False)
            fut.set_result(body)
            return body
        except BaseException as e:
            fut.set_exception(e)
            fut.exception()  # retrieved: no "never retrieved" warning when nobody waits
            raise
        finally:
            del self.inflight[user_id]

    async def _load(self, user_id: int) -> bytes | None:
        key = f"users:{user_id}"
        cached = await self.redis.get(key)
        if cached is not None:
            return None if cached == b"null" else cached
        row = await self.pool.fetchrow(
            "SELECT id, name, email FROM users WHERE id = $1", user_id
        )
        body = None if row is None else json.dumps(dict(row)).encode()
        await self.redis.set(key, body if body is not None else b"null", px=L2_TTL_MS)
        return body
