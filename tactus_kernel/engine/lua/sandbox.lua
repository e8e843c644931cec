-- The sandbox: runs once per runtime, before any cell, with the full standard
-- library. It keeps private copies of what the kernel needs (debug hooks,
-- raw coroutine functions, the bridge to Python) in locals, then strips the
-- globals a cell could use to escape. Nothing here hands a Python object to
-- cell code: bridge functions live only in upvalues, and there is no
-- `debug.getupvalue` left to reach them.
local B, config = ...

local type, pairs, select, error, tostring, rawget, rawequal, rawset, next =
  type, pairs, select, error, tostring, rawget, rawequal, rawset, next
local setmetatable, getmetatable = setmetatable, getmetatable
local raw_pcall, raw_xpcall, raw_load = pcall, xpcall, load
local co_create, co_resume, co_yield, co_status, co_running, co_close =
  coroutine.create, coroutine.resume, coroutine.yield, coroutine.status,
  coroutine.running, coroutine.close
local sethook, traceback, getinfo, getregistry = debug.sethook, debug.traceback, debug.getinfo, debug.getregistry
local gethook = debug.gethook
local find = string.find
local pack, unpack = table.pack, table.unpack
local collectgarbage = collectgarbage
local os_time, os_clock, os_date, os_difftime = os.time, os.clock, os.date, os.difftime

local K = {}          -- the kernel's private API, returned to Python
local G = _G          -- the cells' globals, even after a cell sets `_G = nil`

------------------------------------------------------------------------------
-- The bridge. lupa converts a bridge call's arguments and results outside the
-- Python function's own try/except; when that fails (a string that is not
-- UTF-8, an integer too big for Lua, a lone surrogate) the Python exception
-- object itself becomes the Lua error, a userdata `pcall` would hand to cell
-- code. So every bridge function is called through a guard that turns such an
-- error into a plain message, raised at the cell's line, and withholds a
-- result that holds a Python object (any userdata: Lua code cannot make one).
-- The guards are installed below, once `raise` exists.
------------------------------------------------------------------------------
local function holds_python(v, seen)
  local t = type(v)
  if t == "userdata" then return true end
  if t ~= "table" then return false end
  seen = seen or {}
  if seen[v] then return false end
  seen[v] = true
  for k, x in next, v do
    if holds_python(k, seen) or holds_python(x, seen) then return true end
  end
  return false
end

-- A string for Python (or nil). Strings go as they are: a tostring in
-- pcall could itself fail for memory, when the error is "not enough memory".
local function error_text(v)
  if v == nil or type(v) == "string" then return v end
  local ok, s = raw_pcall(tostring, v)
  return ok and type(s) == "string" and s or "(error object without a message)"
end

-- An error value as its message (nil is "nil", as tostring says).
-- Code written for the reference Tactus may reach for lupa's `python` (as
-- `python.iter(list)`): say why it is gone and what to do instead.
local PYTHON_HINT = " (this sandbox has no `python`: iterate Lua tables with ipairs or pairs, and serve "
  .. "Python code to agents from an MCP server)"
local function error_message(err)
  if err == nil then return "nil" end
  local text = error_text(err)
  if type(text) == "string" and find(text, "(global 'python')", 1, true) then text = text .. PYTHON_HINT end
  return text
end

-- Python converts a table by walking it as a tree, 100 levels deep: a table
-- whose subtables are shared (t = {t, t}, sixty times over) is a tree of 2^60
-- nodes, a walk that never ends and that no interrupt reaches. So a table
-- handed to Python is first walked here, the same way, within a budget.
local MAX_NODES = 1000000
local TOO_BIG = "SandboxError: this table is too large to hand to the kernel (over " .. MAX_NODES ..
  " entries, a shared subtable counted each time it appears)"
local walked = 0  -- entries counted by the walk under way
local function walk(t, depth)
  if depth >= 100 then return false end
  for _, x in next, t do
    walked = walked + 1
    if walked > MAX_NODES then return true end
    if type(x) == "table" and walk(x, depth + 1) then return true end
  end
  return false
end
local function too_big(v)
  if type(v) ~= "table" then return false end
  walked = 0
  return walk(v, 0)
end

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
-- Threads the hook raised in. Lua leaves hooks off in a thread that dies of an
-- error raised inside a hook, so its pending __close handlers must never run:
-- closing it could loop for ever with nothing to stop it.
local KILLED = setmetatable({}, {__mode = "k"})

-- Where cell code was when the interrupt came, e.g. "[cell 3]:5" (the hook
-- is level 1, the code it stopped is level 2 or, under a kernel function, below).
local interrupted_at = nil
local function cell_line()
  for level = 3, 50 do
    local info = getinfo(level, "Sl")
    if info == nil then return nil end
    if info.what ~= "C" and info.currentline > 0 and not find(info.source, "^=%[tactus") then
      return info.short_src .. ":" .. info.currentline
    end
  end
end

local function hook()
  if interrupted or check_interrupt() then
    if not interrupted then interrupted_at = cell_line() end
    interrupted = true
    KILLED[co_running()] = true
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

function K.reset_interrupt() interrupted, interrupted_at = false, nil end
function K.interrupted_at() return interrupted_at end
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

-- Errors the kernel raised itself, by their text. An error's kind (the
-- `ParamError` of "ParamError: ...") is believed only for these: a cell's
-- own error("NoRecordedAnswer: x") is a LuaError. Strings cannot be weak
-- keys, so two generations of at most RAISED_MAX texts are kept.
local RAISED_MAX = 256
local raised, raised_old, raised_count = {}, {}, 0
local function mark_raised(text)
  if raised_count >= RAISED_MAX then
    raised, raised_old, raised_count = {}, raised, 0
  end
  if not raised[text] then
    raised[text] = true
    raised_count = raised_count + 1
  end
  return text
end
local function kernel_raised(text)
  return type(text) == "string" and (raised[text] or raised_old[text]) == true
end
K.mark_raised = mark_raised

-- Raise `msg` at the innermost frame of cell code, skipping the kernel's
-- own Lua frames and C functions, so every message names the user's line.
-- The one way the kernel raises its own errors (see mark_raised).
local function raise(msg)
  if type(msg) ~= "string" then msg = error_message(msg) end
  local level = 2
  while true do
    local info = getinfo(level, "Sl")
    if info == nil then error(mark_raised(msg), 0) end
    if info.what ~= "C" and not find(info.source, "^=%[tactus") then
      -- the position error(msg, level) would add (luaL_where)
      if info.currentline > 0 then msg = info.short_src .. ":" .. info.currentline .. ": " .. msg end
      error(mark_raised(msg), 0)
    end
    level = level + 1
  end
end
K.raise = raise

-- Checkpoint.*'s bridge call takes strings, returns data made from JSON and
-- runs no cell code in Python, so it skips the hook and Python-object checks
-- below. (Step.run's calls skip the guard altogether: see K.step_replay.)
local LIGHT = {checkpoint = true}

-- A bridge call failed outside the Python function's own try/except (lupa
-- converting an argument or result): raise its message, never the object.
local function bridge_failed(e)
  if type(e) ~= "string" then
    local ok, s = raw_pcall(tostring, e)
    e = ok and type(s) == "string" and s or "(no message)"
  end
  raise("SandboxError: a value could not be passed between Lua and the kernel: " .. e)
end

local function check_sizes(...)
  for i = 1, select("#", ...) do
    if too_big((select(i, ...))) then raise(TOO_BIG) end
  end
end

local function light_result(ok, ...)
  if not ok then bridge_failed((...)) end
  return ...
end

local function light_bridge(f)
  return function(...)
    check_sizes(...)
    return light_result(raw_pcall(f, ...))
  end
end

local function guard_bridge(f)
  return function(...)
    check_sizes(...)
    -- While Python runs (holding the GIL), it may run a cell's metamethods
    -- (__tostring, __index) on this thread: a thread running unhooked could
    -- then loop with no way for an interrupt (a signal watcher thread) to
    -- get in. So the thread polls for the interrupt during the call.
    local co = co_running()
    local unhooked = gethook(co) == nil
    if unhooked then sethook(co, hook, "", HOOK_COUNT) end
    local r = pack(raw_pcall(f, ...))
    if unhooked and select(3, gethook(co)) == HOOK_COUNT then
      sethook(co, hook, "", 0)
      if check_interrupt() then sethook(co, hook, "", 1) end  -- armed meanwhile
    end
    if not r[1] then bridge_failed(r[2]) end
    for i = 2, r.n do
      if holds_python(r[i]) then
        raise("SandboxError: internal error: the kernel returned a Python object; it was withheld")
      end
    end
    return unpack(r, 2, r.n)
  end
end
-- Step.run's two calls are the hottest in the kernel (every step of every
-- run), so they skip the general guard: a replayed step costs one trip to
-- Python and little else, and a small flat result (string keys, scalar
-- values: most step results) travels as arguments, which Python reads
-- without walking a Lua table entry by entry.
local raw_step_replay, raw_record, raw_record_flat = B.step_replay, B.record, B.record_flat
B.step_replay, B.record, B.record_flat = nil, nil, nil  -- only these callers use them
local huge = math.huge
local MAX_FLAT = 64  -- entries; a bigger table takes the general path

-- Python answers nil (not recorded), "value", v or "flat", k1, v1, k2, v2, ...
local function step_found(called, ok, how, ...)
  if not called then bridge_failed(ok) end
  if not ok then raise(how) end
  if how == "flat" then
    local r, t = pack(...), {}
    for i = 1, r.n, 2 do t[r[i]] = r[i + 1] end
    return true, t
  end
  return how ~= nil, (...)
end
function K.step_replay(run, name)
  return step_found(raw_pcall(raw_step_replay, run, name))
end

-- `value`'s entries as k1, v1, k2, v2, ..., or nil when it is not small and flat.
local function flat_entries(value)
  local args, n = {}, 0
  for k, x in next, value do
    local tx = type(x)
    if type(k) ~= "string" or n >= 2 * MAX_FLAT then return nil end
    if tx == "number" then
      if x ~= x or x == huge or x == -huge then return nil end
    elseif tx ~= "string" and tx ~= "boolean" then
      return nil
    end
    args[n + 1], args[n + 2] = k, x
    n = n + 2
  end
  if n == 0 then return nil end
  return args, n
end

function K.step_record(run, name, value)
  if type(value) == "table" then
    local args, n = flat_entries(value)
    if args ~= nil then
      local called, ok, err = raw_pcall(raw_record_flat, run, "step", name, unpack(args, 1, n))
      if called then
        if not ok then raise(err) end
        return
      end
      -- lupa could not hand an entry over (text that is not UTF-8): the
      -- general path below says which
    end
    if too_big(value) then raise(TOO_BIG) end
  end
  local called, ok, err = raw_pcall(raw_record, run, "step", name, value)
  if not called then bridge_failed(ok) end
  if not ok then raise(err) end
end

for name, f in next, B do B[name] = (LIGHT[name] and light_bridge or guard_bridge)(f) end

-- Yield `req` to the driver and return its answer, or raise its error.
-- `ctx` (a procedure context) goes along without the size walk: Python
-- reads single fields of it and checks any it converts (K.too_big), and
-- walking State and every tool call made so far on each request would
-- make a long procedure's effects ever slower.
local function answered(ok, ...)
  if not ok then raise((...)) end
  return ...
end

local function perform(req, ctx)
  if too_big(req) then raise(TOO_BIG) end
  rawset(req, EFFECT, true)  -- raw: a __newindex of a cell's table must not see the private key
  if ctx ~= nil then rawset(req, "ctx", ctx) end
  return answered(co_yield(req))
end
K.perform = perform
K.too_big, K.TOO_BIG = too_big, TOO_BIG

-- User coroutines whose effect is on its way to the driver: only the
-- resume_passing that passed it on may resume them, with the answer.
local PASSING = setmetatable({}, {__mode = "k"})

local function resume_passing(co, ...)
  local r = pack(co_resume(co, ...))
  while r[1] and co_status(co) == "suspended" and is_effect(r[2]) do
    PASSING[co] = true
    local answer = pack(co_yield(r[2]))
    PASSING[co] = nil
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
-- Threads the driver runs (cells, procedures, children, agent tools, BDD
-- steps): only the driver may resume or close them. Resuming a child that
-- waits for a human from cell code would answer for the human.
local DRIVEN = setmetatable({}, {__mode = "k"})
-- Error tables the kernel made (K.capture_error, K.error_object), by identity.
local KERNEL_ERRORS = setmetatable({}, {__mode = "k"})

-- Driver threads (cells, procedures, agent tools) run with hooks OFF: in
-- Lua 5.4 any count hook makes the VM trap on every instruction, halving
-- its speed. The hook function is registered for the thread (mask 0), and
-- Python arms it from another thread with lua_sethook only when an interrupt
-- arrives (see interrupts.py), as lua.c does from its SIGINT handler.
local function register(co)
  sethook(co, hook, "", 0)
  return co
end

function K.start(fn, ctx)
  local co = register(co_create(fn))
  DRIVEN[co] = true
  CTX[co] = ctx or ROOT_CTX
  next_thread = next_thread + 1
  THREADS[next_thread] = co
  return next_thread
end

-- An error value Python shows as a Lua constructor (`LuaError: {code = 42}`,
-- see Runtime._lua_error): a table with no __tostring of its own, small
-- enough to render at once (a cell's huge table keeps its "table: 0x..."). Raw
-- reads only: a cell's __index, __pairs or __metatable must not run here.
local raw_getmetatable = debug.getmetatable
local SHOWN_NODES = 1000
local function shown_value(err)
  if type(err) ~= "table" or KERNEL_ERRORS[err] then return nil end
  local mt = raw_getmetatable(err)
  if mt ~= nil and rawget(mt, "__tostring") ~= nil then return nil end
  -- counted as display.py walks it: a shared subtable each time it appears
  local count = 0
  local function small(t, depth)
    if depth > 100 then return false end  -- a cycle
    for _, x in next, t do
      count = count + 1
      if count > SHOWN_NODES then return false end
      if type(x) == "table" and not small(x, depth + 1) then return false end
    end
    return true
  end
  if not small(err, 0) then return nil end
  return err
end

-- What Python reads of an error: its message, traceback, the kernel's name
-- for it when the kernel named it (K.error_object), whether the kernel
-- raised it (only then is a "Name: " at its start a kind: see mark_raised),
-- and a table raised as the error, to show (shown_value).
local function describe_error(co, err)
  local wrapped = type(err) == "table" and KERNEL_ERRORS[err]
  if wrapped then
    local msg = error_text(wrapped.message) or "(error object without a message)"
    return msg, error_text(wrapped.traceback), wrapped.ename, wrapped.trusted or kernel_raised(msg),
      shown_value(wrapped.value)
  end
  local msg = error_message(err)
  local tb_ok, tb = raw_pcall(traceback, co, msg)
  return msg, tb_ok and tb or msg, nil, kernel_raised(err), shown_value(err)
end

local WITHHELD = "SandboxError: internal error: an effect answered with a Python object; it was withheld"

-- What a resumed driver thread did: failed, finished, or yielded an effect
-- (whose kind and run go along, so Python need not read them from the table).
local function resumed(co, id, ok, ...)
  if not ok then
    -- kept in THREADS: the driver closes it (K.close_thread), so the
    -- <close> variables in scope when the error came are closed
    local msg, tb, ename, trusted, value = describe_error(co, (...))
    return "error", msg, tb, ename, trusted, value
  end
  if co_status(co) == "dead" then
    THREADS[id] = nil
    local r = pack(...)
    for i = 1, r.n do  -- Python shows them: see too_big
      if too_big(r[i]) then return "error", TOO_BIG, nil, nil, true end
    end
    return "done", r
  end
  local req = ...
  if not is_effect(req) then
    -- a bare coroutine.yield() at the top of a cell: nothing to wait for
    return "yield", nil
  end
  return "yield", req, rawget(req, "kind"), rawget(req, "run")
end

local function step(id, ...)
  local co = THREADS[id]
  local answer = pack(...)
  -- answers come from Python effect handlers: a Python object never goes on
  for i = 1, answer.n do
    if holds_python(answer[i]) then answer = pack(false, WITHHELD); break end
  end
  return resumed(co, id, co_resume(co, unpack(answer, 1, answer.n)))
end

-- Out of memory right after the thread stopped (a deep recursion's stack
-- still holds most of it), even packing its results fails: then let the
-- thread go, collect, and report the error, allocating nothing before that.
function K.step(id, ...)
  local ok, a, b, c, d, e, f = raw_pcall(step, id, ...)
  if ok then return a, b, c, d, e, f end
  THREADS[id] = nil
  collectgarbage("collect")
  return "error", type(a) == "string" and a or "not enough memory", nil, nil, true
end

-- How Python shows a value it has no data for (a function, or a table used
-- as a key): its tostring, or, when a cell's __tostring fails or returns no
-- string, Lua's plain "table: 0x..." (an interrupt is then raised by the
-- caller, which checks for it).
local format = string.format
function K.show_tostring(v)
  local ok, s = raw_pcall(tostring, v)
  if ok and type(s) == "string" then return s end
  return type(v) .. ": " .. format("%p", v)
end

-- The lua_State address of a driver thread ("thread: 0x..." is its pointer).
function K.address(id)
  return tostring(THREADS[id])
end

-- A thread with an active count hook, so Python can read (lua_gethook) the
-- debug library's C hook function to arm threads with later.
local probe = co_create(function() end)
function K.hook_probe(on)
  if on then sethook(probe, hook, "", HOOK_COUNT) else sethook(probe) end
  return tostring(probe)
end

-- Run a stopped thread's pending __close handlers (a cell failed, or its
-- wait was cancelled, with <close> variables in scope). The driver calls
-- this while the thread can still be interrupted, before K.drop; never for
-- a thread the interrupt hook killed (see KILLED).
function K.close_thread(id)
  local co = THREADS[id]
  if co and not KILLED[co] then raw_pcall(co_close, co) end
end

function K.drop(id)
  THREADS[id] = nil
end

-- Wrap an error raised inside a procedure body so its traceback survives the
-- unwinding done by the run wrapper (xpcall keeps it, pcall would not).
function K.capture_error(err)
  if type(err) == "table" and KERNEL_ERRORS[err] then return err end
  local msg = error_message(err)
  local tb_ok, tb = raw_pcall(traceback, msg, 2)
  local wrapped = {message = msg, traceback = tb_ok and tb or msg, value = err, trusted = kernel_raised(err)}
  KERNEL_ERRORS[wrapped] = wrapped
  return wrapped
end

-- An error the kernel raises under a name of its own (a guard that failed),
-- with no Lua traceback. Only the kernel can make one: a cell cannot reach
-- KERNEL_ERRORS, so no table it raises passes for one.
function K.error_object(ename, message)
  local e = {ename = ename, message = message, traceback = "", trusted = true}
  KERNEL_ERRORS[e] = e
  return e
end

------------------------------------------------------------------------------
-- Compiling cells: text chunks only, in the sandbox's global table.
------------------------------------------------------------------------------
function K.compile(code, chunkname)
  local fn, err = raw_load(code, chunkname, "t", G)
  return fn, err
end

------------------------------------------------------------------------------
-- What cell code sees in place of the dangerous originals.
------------------------------------------------------------------------------
function pcall(f, ...) return after_protected(raw_pcall(f, ...)) end
function xpcall(f, handler, ...)
  if type(handler) ~= "function" then return after_protected(raw_xpcall(f, handler, ...)) end
  -- The interrupt is raised from inside the count hook, and Lua runs the
  -- message handler of that error with hooks off: a loop in a cell's handler
  -- could then never be stopped. So the handler is skipped for it.
  return after_protected(raw_xpcall(f, function(e)
    if interrupted then return e end
    return handler(e)
  end, ...))
end

function load(chunk, chunkname, mode, env)
  if mode ~= nil and mode ~= "t" then
    return nil, "load: only text chunks are allowed in the Tactus sandbox (mode 't')"
  end
  if env == nil then env = G end
  -- frames of chunks named "[tactus ...]" are the kernel's (the main-thread
  -- hook below never interrupts them): a cell's chunk may not take that name
  if type(chunkname) == "string" and find(chunkname, "^[=@]?%[tactus") then
    chunkname = "=[load] " .. chunkname
  end
  if type(chunk) == "function" then
    -- load catches the errors of a reader function, the interrupt's included
    return after_protected(raw_load(chunk, chunkname, "t", env))
  end
  return raw_load(chunk, chunkname, "t", env)
end

-- Finalizers run with debug hooks off (Lua's collector calls them so), so a
-- loop in a __gc could never be interrupted: a cell may not set one. Lua marks
-- an object for finalization only if __gc is present when setmetatable is
-- called, so adding the field later has no effect.
_G.setmetatable = function(t, mt)  -- `setmetatable` alone is the raw local here
  if type(mt) == "table" and rawget(mt, "__gc") ~= nil then
    error("setmetatable: __gc metamethods are not allowed in the Tactus sandbox", 2)
  end
  return setmetatable(t, mt)
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
-- A suspended coroutine the kernel drives, or one whose request (Human.*,
-- Sleep, a child procedure...) the kernel is answering, is the kernel's to
-- resume: resuming it from cell code would answer for the person or the
-- clock. (Lua itself refuses the other states: running, normal, dead.)
local function check_owner(fname, co)
  if type(co) ~= "thread" or co_status(co) ~= "suspended" then return end
  if DRIVEN[co] then
    raise("SandboxError: " .. fname .. ": this coroutine runs a cell, a procedure or a tool for the kernel; "
      .. "only the kernel resumes or closes it")
  end
  if PASSING[co] then
    raise("SandboxError: " .. fname .. ": this coroutine waits for the kernel to answer a request "
      .. "(Human.*, Sleep, a child procedure, an agent turn); only the kernel resumes or closes it")
  end
end

function user_coroutine.resume(co, ...)
  check_owner("coroutine.resume", co)
  return after_protected(resume_passing(co, ...))
end
function user_coroutine.close(co)
  check_owner("coroutine.close", co)
  if KILLED[co] then return false, INTERRUPT_MSG end  -- see KILLED
  -- close returns the error of a __close handler, the interrupt's included
  return after_protected(co_close(co))
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

------------------------------------------------------------------------------
-- Python also runs Lua code on the main thread, outside any cell coroutine:
-- a cell's __tostring, __pairs or __index metamethods while its values are
-- reported, shown or completed. Arm that thread too, so a loop there can be
-- interrupted. The kernel's own frames are never interrupted on it, so a
-- kernel call made by Python cannot stop half-way (see load: a cell's chunk
-- cannot borrow the "[tactus" name).
------------------------------------------------------------------------------
sethook(function()
  local info = getinfo(2, "S")
  if info and find(info.source, "^=%[tactus") then return end
  hook()
end, "", HOOK_COUNT)

------------------------------------------------------------------------------
-- Globals as lupa sees them. Before each call from Python, lupa reads the
-- global `debug` (for debug.traceback) outside any protected call: a cell
-- giving _G an __index that raises (the common "strict globals" idiom) then
-- aborted the whole process, and a cell's own `debug.traceback` became the
-- error handler of the kernel's calls. Python's lua.eval helpers also read
-- `tostring`, `pcall` and `collectgarbage` as globals, which a cell may
-- replace. So, once every module is loaded (sandbox.py calls this), the
-- registry's globals table, used by lupa and lua.eval, becomes the kernel's
-- own: those names are pinned in it, every other name reads and writes
-- through to the cells' _G.
------------------------------------------------------------------------------
function K.seal_globals()
  local cells_G = G
  getregistry()[2] = setmetatable({  -- [2] is LUA_RIDX_GLOBALS
    debug = false,                    -- lupa then calls with no handler, as before
    tostring = tostring, pcall = raw_pcall, collectgarbage = collectgarbage,
  }, {__index = cells_G, __newindex = cells_G})
end

return K
