-- wrk script for bench/db.sh: GET /api/v1/users/{id} with id uniform in 1..USERS (the env var,
-- default 10000), a new id per request; the summary line comes from report.lua (run from the
-- repository root, as the bench scripts do).
dofile("bench/wrk/report.lua")

local users = tonumber(os.getenv("USERS") or "10000")

init = function(args)
  math.randomseed(os.time() + tonumber(tostring({}):sub(8), 16))
end

request = function()
  return wrk.format(nil, "/api/v1/users/" .. math.random(1, users))
end
