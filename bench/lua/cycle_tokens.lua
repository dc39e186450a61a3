-- Cold path: every request carries the next of many distinct reference
-- tokens (one per line in $BENCH_TOKENS), so a cache that cannot hold them
-- misses every time. Requests are formatted once in init(): per-request Lua
-- work would make wrk, not the proxy, the bottleneck.
dofile(os.getenv("BENCH_LUA") .. "/report.lua")

local requests = {}
local next_index = 1

function init(args)
  local path = os.getenv("BENCH_PATH") or "/api/cold"
  for token in io.lines(os.getenv("BENCH_TOKENS")) do
    if token ~= "" then
      requests[#requests + 1] = wrk.format("GET", path,
        { ["Authorization"] = "Bearer " .. token })
    end
  end
  if #requests == 0 then
    error("no tokens in " .. tostring(os.getenv("BENCH_TOKENS")))
  end
  -- Threads start at different places in the list.
  next_index = math.random(#requests)
end

function request()
  next_index = next_index % #requests + 1
  return requests[next_index]
end
