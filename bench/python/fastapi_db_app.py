"""The database-backed user lookup on FastAPI + uvicorn (seed stack 2), for bench/db.sh.

Run: DATABASE_URL=postgres://… REDIS_URL=redis://… \
     uvicorn fastapi_db_app:app --workers 2 --host 127.0.0.1 --port PORT --no-access-log
"""

import json
from contextlib import asynccontextmanager

from fastapi import FastAPI, HTTPException
from fastapi.responses import PlainTextResponse
from pydantic import BaseModel

from userstore import UserStore

store = UserStore()


@asynccontextmanager
async def lifespan(app: FastAPI):
    await store.start()
    yield
    await store.stop()


app = FastAPI(lifespan=lifespan)


class User(BaseModel):
    id: int
    name: str
    email: str


@app.get("/plaintext", response_class=PlainTextResponse)
async def plaintext() -> str:
    return "Hello, World!"


@app.get("/api/v1/users/{user_id}", response_model=User)
async def get_user(user_id: int) -> User:
    if user_id <= 0:
        raise HTTPException(status_code=400, detail="user id must be a positive integer")
    body = await store.get(user_id)
    if body is None:
        raise HTTPException(status_code=404, detail="no such user")
    return User(**json.loads(body))
