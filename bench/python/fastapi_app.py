"""The benchmark routes on FastAPI (seed stack 2).

Run: uvicorn fastapi_app:app --workers 2 --host 127.0.0.1 --port PORT --no-access-log
"""

from fastapi import FastAPI, HTTPException, Response
from fastapi.responses import PlainTextResponse
from pydantic import BaseModel

app = FastAPI()


class User(BaseModel):
    id: int
    name: str
    email: str


USERS = {
    1: User(id=1, name="Ada Lovelace", email="ada@example.com"),
    2: User(id=2, name="Alan Turing", email="alan@example.com"),
    3: User(id=3, name="Grace Hopper", email="grace@example.com"),
}

NAMES = [
    "Ada", "Alan", "Barbara", "Dennis", "Donald", "Edsger", "Grace", "John", "Ken", "Leslie",
    "Linus", "Margaret", "Niklaus", "Radia", "Tony",
]


@app.get("/plaintext", response_class=PlainTextResponse)
async def plaintext() -> str:
    return "Hello, World!"


@app.get("/api/v1/users/{user_id}", response_model=User)
async def get_user(user_id: int) -> User:
    if user_id <= 0:
        raise HTTPException(status_code=400, detail="user id must be a positive integer")
    user = USERS.get(user_id)
    if user is None:
        raise HTTPException(status_code=404, detail="no such user")
    return user


@app.get("/names")
async def names(response: Response) -> list[str]:
    response.headers["Cache-Control"] = "public, max-age=5"
    return NAMES
