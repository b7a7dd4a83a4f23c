-- wrk script for bench/ingest.py: send every pre-built, pre-signed Snyk webhook at most once.
--
-- Why a pool on disk instead of requests built in Lua: the signature is an HMAC-SHA256 over the
-- whole body, which LuaJIT cannot compute cheaply, and repeating a body would measure the
-- daemon's dedup path instead of its store path. ingest.py writes one pool file per wrk thread
-- (wrk runs one Lua state per thread, so threads must not share records); each thread streams
-- its own file from BENCH_OFFSETS on, so memory stays flat however long the run.
--
-- Why delay(): wrk runs for a fixed time and cannot be told to stop after N requests. When a
-- thread has sent its BENCH_LIMITS share it parks its connections (delay() returns an hour):
-- requests in flight still complete and are counted, nothing is ever sent twice, and no junk
-- request is needed to satisfy request(). Once every connection of every thread is parked
-- (nothing in flight), the script sends SIGINT to wrk itself, which ends the run early and
-- still calls done() — idle parked connections would otherwise hit the server's keep-alive
-- timeout and show up as socket errors. The throughput comes from the active window measured
-- here (first request sent → last answer received, CLOCK_MONOTONIC), not from wrk's duration.
--
-- Pool record: "<transport-id> <signature> <timestamp> <body-length>\n" then the body bytes.
--
-- Environment (read in each thread and in the main state):
--   BENCH_POOL_DIR   directory holding thread-<n>.pool
--   BENCH_OFFSETS    comma-separated byte offset to start at, one per thread (resume after warm-up)
--   BENCH_LIMITS     comma-separated number of records each thread may send in this run
--   BENCH_THREADS    number of wrk threads; BENCH_CONNECTIONS: connections per thread
--   BENCH_OUT        where done() writes its JSON summary; acked event ids go to BENCH_OUT..".acked",
--                    threads that used up their share leave BENCH_OUT..".parked-<n>"

local ffi = require("ffi")
ffi.cdef [[
typedef struct { long tv_sec; long tv_nsec; } bench_timespec_t;
int clock_gettime(int clk_id, bench_timespec_t *tp);
int getpid(void);
int kill(int pid, int sig);
]]
local SIGINT = 2
local CLOCK_MONOTONIC = 1
local clock_buf = ffi.new("bench_timespec_t")

local function now_us()
   ffi.C.clock_gettime(CLOCK_MONOTONIC, clock_buf)
   return tonumber(clock_buf.tv_sec) * 1000000 + math.floor(tonumber(clock_buf.tv_nsec) / 1000)
end

local PARK_MS = 3600 * 1000

local threads = {}
local thread_count = 0

-- Main state: number the threads so each opens its own pool file.
function setup(thread)
   thread_count = thread_count + 1
   thread:set("thread_no", thread_count)
   table.insert(threads, thread)
end

-- Per-thread state (globals so that done() can read them through thread:get).
generated = 0     -- records taken from the pool; wrk also calls request() once, unsent, to validate it
claimed = 0       -- records promised to connections by delay() (a claim is taken before request())
limit = 0         -- records this thread may take in this run
parked = 0        -- connections parked because the share was used up
overdrawn = 0     -- request() calls with no record left to give (must stay 0, else the run is void)
offset = 0        -- byte offset of the next record in this thread's pool file
answers = 0       -- responses received
first_us = -1     -- monotonic time of the first request sent in this run
last_us = -1      -- monotonic time of the latest response
statuses = {}     -- HTTP status -> responses
per_second = {}   -- second of the run (1 = first) -> responses, to see whether the rate drifts
acked = {}        -- event ids from 202 answers, to reconcile with the buffer afterwards
acked_n = 0

local pool
local path
local headers
local out_path
local thread_total
local connections

local function split_numbers(text)
   local list = {}
   for piece in string.gmatch(text or "", "[^,]+") do
      table.insert(list, tonumber(piece))
   end
   return list
end

function init(args)
   local dir = assert(os.getenv("BENCH_POOL_DIR"), "BENCH_POOL_DIR is not set")
   offset = split_numbers(os.getenv("BENCH_OFFSETS"))[thread_no] or 0
   limit = assert(split_numbers(os.getenv("BENCH_LIMITS"))[thread_no], "BENCH_LIMITS has no entry for this thread")
   pool = assert(io.open(dir .. "/thread-" .. thread_no .. ".pool", "rb"))
   pool:setvbuf("full", 1048576)
   assert(pool:seek("set", offset))
   path = wrk.path
   out_path = assert(os.getenv("BENCH_OUT"), "BENCH_OUT is not set")
   thread_total = assert(tonumber(os.getenv("BENCH_THREADS")), "BENCH_THREADS is not set")
   connections = assert(tonumber(os.getenv("BENCH_CONNECTIONS")), "BENCH_CONNECTIONS is not set")
   headers = {
      ["Content-Type"] = "application/json",
      ["X-Snyk-Event"] = "project_snapshot/v0",
      ["User-Agent"] = "snyk-forwarder-bench",
   }
end

local function exists(name)
   local f = io.open(name, "r")
   if f then
      f:close()
   end
   return f ~= nil
end

local function all_parked()
   -- This thread has nothing in flight; when no thread has, end the run (see the header).
   local mark = assert(io.open(out_path .. ".parked-" .. thread_no, "w"))
   mark:close()
   for n = 1, thread_total do
      if not exists(out_path .. ".parked-" .. n) then
         return
      end
   end
   ffi.C.kill(ffi.C.getpid(), SIGINT)
end

function delay()
   -- Called before every request() except wrk's validation call, so it also marks the start.
   -- The claim is taken here, not in request(): other connections run between the two calls,
   -- and each must see the records already promised.
   if first_us < 0 then
      first_us = now_us()
   end
   if claimed >= limit then
      -- A connection asks for more only after its previous answer arrived: once all of them
      -- have asked, this thread has nothing in flight.
      parked = parked + 1
      if parked == connections then
         all_parked()
      end
      return PARK_MS
   end
   claimed = claimed + 1
   return 0
end

local function overdraw()
   -- No record left for this call: only possible for a request() that did not go through
   -- delay() (a reconnect after a socket error) or a pool shorter than BENCH_LIMITS. The run is
   -- void (ingest.py says so); this request is unsigned, so the daemon refuses it before storing.
   overdrawn = overdrawn + 1
   return wrk.format("POST", path, {["X-Bench-Pool-Overdrawn"] = "1"}, "{}")
end

function request()
   if generated >= claimed then -- wrk's validation call, or a reconnect: claim here
      if claimed >= limit then
         return overdraw()
      end
      claimed = claimed + 1
   end
   local line = pool:read("*l")
   if line == nil then
      return overdraw()
   end
   local tid, sig, ts, len = string.match(line, "^(%S+) (%S+) (%S+) (%d+)$")
   len = tonumber(len)
   local body = pool:read(len)
   if tid == nil or body == nil or #body ~= len then
      error("corrupt pool record in thread " .. thread_no .. " at offset " .. offset)
   end
   offset = offset + #line + 1 + len
   generated = generated + 1
   headers["X-Snyk-Transport-ID"] = tid
   headers["X-Hub-Signature"] = sig
   headers["X-Snyk-Timestamp"] = ts
   return wrk.format("POST", path, headers, body)
end

function response(status, _headers, body)
   last_us = now_us()
   answers = answers + 1
   local second = math.floor((last_us - first_us) / 1000000) + 1
   per_second[second] = (per_second[second] or 0) + 1
   statuses[status] = (statuses[status] or 0) + 1
   if status == 202 then
      local id = string.match(body, '"event_id":(%d+)')
      if id then
         acked_n = acked_n + 1
         acked[acked_n] = tonumber(id)
      end
   end
end

-- Main state, after all threads stopped.
local function num(value)
   return string.format("%.0f", value)
end

function done(summary, latency, requests)
   out_path = assert(os.getenv("BENCH_OUT"), "BENCH_OUT is not set")
   local acked_file = assert(io.open(out_path .. ".acked", "w"))
   local parts = {}
   for _, thread in ipairs(threads) do
      local codes = {}
      for code, count in pairs(thread:get("statuses")) do
         table.insert(codes, string.format('"%d":%s', code, num(count)))
      end
      local seconds = {}
      for second, count in pairs(thread:get("per_second")) do
         table.insert(seconds, string.format('"%d":%s', second, num(count)))
      end
      local ids = thread:get("acked")
      local n = thread:get("acked_n")
      for i = 1, n do
         acked_file:write(num(ids[i]), "\n")
      end
      table.insert(parts, string.format(
         '{"thread":%d,"generated":%s,"limit":%s,"parked":%s,"overdrawn":%s,"offset":%s,"answers":%s,' ..
         '"first_us":%s,"last_us":%s,"acked":%s,"statuses":{%s},"per_second":{%s}}',
         thread:get("thread_no"), num(thread:get("generated")), num(thread:get("limit")),
         num(thread:get("parked")), num(thread:get("overdrawn")), num(thread:get("offset")),
         num(thread:get("answers")), num(thread:get("first_us")), num(thread:get("last_us")), num(n),
         table.concat(codes, ","), table.concat(seconds, ",")))
   end
   acked_file:close()

   local e = summary.errors
   local pct = {}
   for _, p in ipairs({50, 90, 99, 99.9}) do
      table.insert(pct, string.format('"%s":%s', tostring(p), num(latency:percentile(p))))
   end
   local text = string.format(
      '{"duration_us":%s,"requests":%s,"bytes":%s,' ..
      '"errors":{"connect":%s,"read":%s,"write":%s,"status":%s,"timeout":%s},' ..
      '"latency_us":{"min":%s,"mean":%s,"stdev":%s,"max":%s,"percentiles":{%s}},' ..
      '"threads":[%s]}\n',
      num(summary.duration), num(summary.requests), num(summary.bytes),
      num(e.connect), num(e.read), num(e.write), num(e.status), num(e.timeout),
      num(latency.min), num(latency.mean), num(latency.stdev), num(latency.max),
      table.concat(pct, ","), table.concat(parts, ","))
   local out = assert(io.open(out_path, "w"))
   out:write(text)
   out:close()
end
