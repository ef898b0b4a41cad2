"""The database-backed user lookup on aiohttp + gunicorn (seed stack 1), for bench/db.sh.

Run: DATABASE_URL=postgres://… REDIS_URL=redis://… \
     gunicorn aiohttp_db_app:app -k aiohttp.GunicornWebWorker -w 2 -b 127.0.0.1:PORT
"""

from aiohttp import web

from userstore import UserStore

STORE = web.AppKey("store", UserStore)


async def plaintext(request: web.Request) -> web.Response:
    return web.Response(text="Hello, World!")


async def get_user(request: web.Request) -> web.Response:
    raw = request.match_info["user_id"]
    if not raw.isdigit() or int(raw) == 0:
        return web.json_response({"detail": "user id must be a positive integer"}, status=400)
    body = await request.app[STORE].get(int(raw))
    if body is None:
        return web.json_response({"detail": "no such user"}, status=404)
    return web.Response(body=body, content_type="application/json")


async def lifecycle(app: web.Application):
    store = UserStore()
    await store.start()
    app[STORE] = store
    yield
    await store.stop()


def make_app() -> web.Application:
    app = web.Application()
    app.cleanup_ctx.append(lifecycle)
    app.router.add_get("/plaintext", plaintext)
    app.router.add_get("/api/v1/users/{user_id}", get_user)
    return app


app = make_app()
