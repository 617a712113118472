-- Replays an `instauth seed` corpus with wrk, cycling through its lines:
--
--   wrk -t2 -c64 -d10s -s bench/wrk-corpus.lua http://127.0.0.1:3000 -- .instauth/seed/corpus.jsonl
--
-- Each corpus line is {"path":…,"expected_status":…,"body":{…}} with the body last, so a Lua
-- pattern cuts it out without a JSON library. wrk itself reports non-2xx answers; every seeded
-- line expects 200.

local requests = {}
local next_index = 0

function init(args)
  local path = args[1] or ".instauth/seed/corpus.jsonl"
  for line in io.lines(path) do
    local target, _, body = line:match('^{"path":"([^"]*)","expected_status":(%d+),.-"body":(.*)}$')
    if target then
      requests[#requests + 1] =
        wrk.format("POST", target, { ["Content-Type"] = "application/json" }, body)
    end
  end
  if #requests == 0 then
    error("no request in " .. path)
  end
  -- Threads start at different lines so they do not send the same instance in lockstep.
  next_index = math.random(#requests) - 1
end

function request()
  next_index = next_index % #requests + 1
  return requests[next_index]
end
