-- The sandbox: runs once per runtime, before any cell, with the full standard
-- library. It keeps private copies of what the kernel needs (debug hooks,
-- raw coroutine functions, the bridge to Python) in locals, then strips the
-- globals a cell could use to escape. Nothing here hands a Python object to
-- cell code: bridge functions live only in upvalues, and there is no
-- `debug.getupvalue` left to reach them.
local B, config = ...

local type, pairs, select, error, tostring, rawget, rawequal =
  type, pairs, select, error, tostring, rawget, rawequal
local setmetatable, getmetatable = setmetatable, getmetatable
local raw_pcall, raw_xpcall, raw_load = pcall, xpcall, load
local co_create, co_resume, co_yield, co_status, co_running, co_close =
  coroutine.create, coroutine.resume, coroutine.yield, coroutine.status,
  coroutine.running, coroutine.close
local sethook, traceback, getinfo = debug.sethook, debug.traceback, debug.getinfo
local find = string.find
local pack, unpack = table.pack, table.unpack
local collectgarbage = collectgarbage
local os_time, os_clock, os_date, os_difftime = os.time, os.clock, os.date, os.difftime

local K = {}          -- the kernel's private API, returned to Python
local check_interrupt = B.interrupted
local HOOK_COUNT = config.hook_count

------------------------------------------------------------------------------
-- Interrupts. A count hook asks Python every HOOK_COUNT instructions whether
-- SIGINT arrived (Python signal handlers only run while Python bytecode runs,
-- so a tight Lua loop must call back). Once set, the flag makes every hook
-- tick and every pcall return raise again, so user code cannot swallow it.
------------------------------------------------------------------------------
local INTERRUPT_MSG = "KeyboardInterrupt: interrupted by the user"
local interrupted = false

local function hook()
  if interrupted or check_interrupt() then
    interrupted = true
    error(INTERRUPT_MSG, 0)
  end
end

local function arm(co)
  sethook(co, hook, "", HOOK_COUNT)
  return co
end

local function after_protected(...)
  if interrupted then error(INTERRUPT_MSG, 0) end
  return ...
end

function K.reset_interrupt() interrupted = false end
function K.was_interrupted() return interrupted end
K.INTERRUPT_MSG = INTERRUPT_MSG

------------------------------------------------------------------------------
-- Effects. A primitive that must wait (Sleep, Human.*, an agent turn) yields
-- a request table tagged with the private EFFECT key. The Python driver
-- answers with (true, value...) or (false, message). User coroutines pass
-- effects through to the driver, so a wait inside them still works.
------------------------------------------------------------------------------
local EFFECT = setmetatable({}, {__tostring = function() return "effect" end})

local function is_effect(v)
  return type(v) == "table" and rawget(v, EFFECT) == true
end

-- Raise `msg` at the innermost frame of cell code, skipping the kernel's
-- own Lua frames and C functions, so every message names the user's line.
local function raise(msg)
  local level = 2
  while true do
    local info = getinfo(level, "S")
    if info == nil then error(msg, 0) end
    if info.what ~= "C" and not find(info.source, "^=%[tactus") then break end
    level = level + 1
  end
  error(msg, level)
end
K.raise = raise

-- Yield `req` to the driver and return its answer, or raise its error.
local function perform(req)
  req[EFFECT] = true
  local r = pack(co_yield(req))
  if not r[1] then raise(r[2]) end
  return unpack(r, 2, r.n)
end
K.perform = perform

local function resume_passing(co, ...)
  local r = pack(co_resume(co, ...))
  while r[1] and co_status(co) == "suspended" and is_effect(r[2]) do
    local answer = pack(co_yield(r[2]))
    r = pack(co_resume(co, unpack(answer, 1, answer.n)))
  end
  return unpack(r, 1, r.n)
end

------------------------------------------------------------------------------
-- Per-coroutine context: which procedure run the running code belongs to.
-- Weak keys, so finished coroutines are collected.
------------------------------------------------------------------------------
local CTX = setmetatable({}, {__mode = "k"})
local ROOT_CTX = {}

local function current_ctx()
  local co = co_running()
  return CTX[co] or ROOT_CTX
end
local function set_ctx(ctx) CTX[co_running()] = ctx end
K.current_ctx, K.set_ctx, K.ROOT_CTX = current_ctx, set_ctx, ROOT_CTX

------------------------------------------------------------------------------
-- The driver: Python starts a cell (or procedure) as an armed coroutine and
-- steps it, answering each effect it yields.
------------------------------------------------------------------------------
local THREADS = {}
local next_thread = 0

function K.start(fn, ctx)
  local co = arm(co_create(fn))
  CTX[co] = ctx or ROOT_CTX
  next_thread = next_thread + 1
  THREADS[next_thread] = co
  return next_thread
end

local function describe_error(co, err)
  if type(err) == "table" and rawget(err, "__tactus_error") then
    return rawget(err, "message"), rawget(err, "traceback"), rawget(err, "ename")
  end
  local ok, msg = raw_pcall(tostring, err)
  if not ok then msg = "(error object without a message)" end
  local tb_ok, tb = raw_pcall(traceback, co, msg)
  return msg, tb_ok and tb or msg, nil
end

function K.step(id, ...)
  local co = THREADS[id]
  local r = pack(co_resume(co, ...))
  if not r[1] then
    THREADS[id] = nil
    local msg, tb, ename = describe_error(co, r[2])
    return "error", msg, tb, ename
  end
  if co_status(co) == "dead" then
    THREADS[id] = nil
    r[1] = r.n - 1
    return "done", pack(unpack(r, 2, r.n))
  end
  local req = r[2]
  if not is_effect(req) then
    -- a bare coroutine.yield() at the top of a cell: nothing to wait for
    return "yield", nil
  end
  return "yield", req
end

function K.drop(id)
  local co = THREADS[id]
  THREADS[id] = nil
  if co then raw_pcall(co_close, co) end
end

-- Wrap an error raised inside a procedure body so its traceback survives the
-- unwinding done by the run wrapper (xpcall keeps it, pcall would not).
function K.capture_error(err)
  if type(err) == "table" and rawget(err, "__tactus_error") then return err end
  local ok, msg = raw_pcall(tostring, err)
  if not ok then msg = "(error object without a message)" end
  local tb_ok, tb = raw_pcall(traceback, msg, 2)
  return {__tactus_error = true, message = msg, traceback = tb_ok and tb or msg, value = err}
end

------------------------------------------------------------------------------
-- Compiling cells: text chunks only, in the sandbox's global table.
------------------------------------------------------------------------------
function K.compile(code, chunkname)
  local fn, err = raw_load(code, chunkname, "t", _G)
  return fn, err
end

------------------------------------------------------------------------------
-- What cell code sees in place of the dangerous originals.
------------------------------------------------------------------------------
function pcall(f, ...) return after_protected(raw_pcall(f, ...)) end
function xpcall(f, handler, ...) return after_protected(raw_xpcall(f, handler, ...)) end

function load(chunk, chunkname, mode, env)
  if mode ~= nil and mode ~= "t" then
    return nil, "load: only text chunks are allowed in the Tactus sandbox (mode 't')"
  end
  if env == nil then env = _G end
  return raw_load(chunk, chunkname, "t", env)
end

local safe_gc = {collect = true, count = true, step = true, isrunning = true}
_G.collectgarbage = function(opt, ...)
  opt = opt or "collect"
  if not safe_gc[opt] then
    error("collectgarbage('" .. tostring(opt) .. "') is not allowed in the Tactus sandbox", 2)
  end
  return collectgarbage(opt, ...)
end

local user_coroutine = {}
for k, v in pairs(coroutine) do user_coroutine[k] = v end
function user_coroutine.create(f)
  local co = arm(co_create(f))
  CTX[co] = current_ctx()
  return co
end
function user_coroutine.resume(co, ...)
  return after_protected(resume_passing(co, ...))
end
function user_coroutine.wrap(f)
  local co = user_coroutine.create(f)
  return function(...)
    local r = pack(resume_passing(co, ...))
    if interrupted then error(INTERRUPT_MSG, 0) end
    if not r[1] then error(r[2], 0) end
    return unpack(r, 2, r.n)
  end
end
_G.coroutine = user_coroutine

_G.os = {time = os_time, clock = os_clock, date = os_date, difftime = os_difftime}

local user_string = {}
for k, v in pairs(string) do user_string[k] = v end
user_string.dump = nil
local string_mt = getmetatable("")
string_mt.__index = user_string
string_mt.__metatable = false
_G.string = user_string

for _, name in ipairs({"io", "debug", "package", "require", "dofile", "loadfile", "python", "warn"}) do
  _G[name] = nil
end

return K
