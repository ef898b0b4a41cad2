"""The benchmark routes on aiohttp (seed stack 1).

Run: gunicorn aiohttp_app:app -k aiohttp.GunicornWebWorker -w 2 -b 127.0.0.1:PORT
"""

from aiohttp import web

USERS = {
    1: {"id": 1, "name": "Ada Lovelace", "email": "ada@example.com"},
    2: {"id": 2, "name": "Alan Turing", "email": "alan@example.com"},
    3: {"id": 3, "name": "Grace Hopper", "email": "grace@example.com"},
}

NAMES = [
    "Ada", "Alan", "Barbara", "Dennis", "Donald", "Edsger", "Grace", "John", "Ken", "Leslie",
    "Linus", "Margaret", "Niklaus", "Radia", "Tony",
]


async def plaintext(request: web.Request) -> web.Response:
    return web.Response(text="Hello, World!")


async def get_user(request: web.Request) -> web.Response:
    raw = request.match_info["user_id"]
    if not raw.isdigit() or int(raw) == 0:
        return web.json_response({"detail": "user id must be a positive integer"}, status=400)
    user = USERS.get(int(raw))
    if user is None:
        return web.json_response({"detail": "no such user"}, status=404)
    return web.json_response(user)


async def names(request: web.Request) -> web.Response:
    return web.json_response(NAMES, headers={"Cache-Control": "public, max-age=5"})


def make_app() -> web.Application:
    app = web.Application()
    app.router.add_get("/plaintext", plaintext)
    app.router.add_get("/api/v1/users/{user_id}", get_user)
    app.router.add_get("/names", names)
    return app


app = make_app()
