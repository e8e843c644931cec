-- The procedure language: declarations and primitives, written in Lua so a
-- wait (a yielded effect) inside a callback passed to them still works.
-- Python is reached only through bridge functions that return `ok, ...`.
local B, K = ...

local type, pairs, ipairs, next, select, error, tostring, setmetatable, rawget, rawequal =
  type, pairs, ipairs, next, select, error, tostring, setmetatable, rawget, rawequal
local pcall, xpcall = pcall, xpcall
local pack, unpack, concat = table.pack, table.unpack, table.concat
local min = math.min
local current_ctx, set_ctx, perform = K.current_ctx, K.set_ctx, K.perform
local gmatch, sort = string.gmatch, table.sort

local raise = K.raise

-- Call a bridge function; a failure is raised at the user's line.
local function bcall(f, ...)
  local r = pack(f(...))
  if not r[1] then raise(r[2]) end
  return unpack(r, 2, r.n)
end

local function check_type(fname, argn, value, expected)
  if type(value) ~= expected then
    raise(fname .. ": argument #" .. argn .. " must be a " .. expected .. ", got " .. type(value))
  end
end

local restore_params  -- set below, with the params view

local function new_ctx(run_id, key, params, depth)
  if restore_params ~= nil then restore_params() end
  return {
    run = run_id, key = key, params = params or {}, depth = depth or 0,
    state = {}, stage = nil, stage_history = {}, iterations = 0,
    stop = {requested = false}, tool_calls = {},
  }
end
K.new_ctx = new_ctx

------------------------------------------------------------------------------
-- Output
------------------------------------------------------------------------------
local write = B.write
-- Text that is not valid UTF-8 cannot reach a notebook: show each bad byte
-- as U+FFFD instead of failing the print.
local utf8_len, utf8_char, byte, sub = utf8.len, utf8.char, string.byte, string.sub
local REPLACEMENT = utf8_char(0xFFFD)
local function printable(s)
  if utf8_len(s) then return s end
  local out, i, n = {}, 1, #s
  while i <= n do
    local ok_to, bad = utf8_len(s, i)
    if ok_to then out[#out + 1] = sub(s, i); break end
    out[#out + 1] = sub(s, i, bad - 1)
    out[#out + 1] = REPLACEMENT
    i = bad + 1
  end
  return concat(out)
end
K.printable = printable

-- A copy of `v` whose strings (keys included) are all valid UTF-8, for
-- showing a value Python could not decode. Depth-limited, cycle-safe.
local function safe_copy(v, depth, seen)
  local t = type(v)
  if t == "string" then return printable(v) end
  if t ~= "table" then return v end
  depth, seen = depth or 0, seen or {}
  if depth > 20 or seen[v] then return tostring(v) end
  seen[v] = true
  local out = {}
  for k, x in next, v do out[safe_copy(k, depth + 1, seen)] = safe_copy(x, depth + 1, seen) end
  return out
end
K.safe_copy = safe_copy

function print(...)
  local n = select("#", ...)
  local parts = {}
  for i = 1, n do parts[i] = tostring((select(i, ...))) end
  write("stdout", printable(concat(parts, "\t") .. "\n"))
end

Log = {}
for _, level in ipairs({"debug", "info", "warn", "error"}) do
  Log[level] = function(message, context)
    bcall(B.log, level, printable(tostring(message)), context)
  end
end

------------------------------------------------------------------------------
-- Json, File
------------------------------------------------------------------------------
Json = {
  encode = function(value) return bcall(B.json_encode, value) end,
  decode = function(text)
    check_type("Json.decode", 1, text, "string")
    return bcall(B.json_decode, text)
  end,
}

File = {}
for _, op in ipairs({"read", "exists", "size"}) do
  File[op] = function(path)
    check_type("File." .. op, 1, path, "string")
    return bcall(B.file, op, path)
  end
end
function File.write(path, data)
  check_type("File.write", 1, path, "string")
  -- a number is written as Lua prints it; nil or a table is a mistake, not the text "nil" or "table: 0x..."
  if type(data) == "number" then data = tostring(data) end
  check_type("File.write", 2, data, "string")
  return bcall(B.file, "write", path, data)
end

------------------------------------------------------------------------------
-- State, stages, iterations, stop, tools: per procedure run
------------------------------------------------------------------------------
State = {}
function State.get(k, default)
  local v = current_ctx().state[k]
  if v == nil then return default end
  return v
end
function State.set(k, v) current_ctx().state[k] = v end
function State.increment(k, n)
  local s = current_ctx().state
  local v = (s[k] or 0) + (n or 1)
  s[k] = v
  return v
end
function State.append(k, v)
  local s = current_ctx().state
  local list = s[k]
  if list == nil then list = {}; s[k] = list end
  if type(list) ~= "table" then raise("State.append: '" .. tostring(k) .. "' holds a " .. type(list) .. ", not a list") end
  list[#list + 1] = v
  return #list
end
function State.all()
  local copy = {}
  for k, v in pairs(current_ctx().state) do copy[k] = v end
  return copy
end
function State.clear() current_ctx().state = {} end

local declared_stages = nil
function stages(list)
  check_type("stages", 1, list, "table")
  declared_stages = {}
  for i, name in ipairs(list) do declared_stages[i] = tostring(name) end
end

local function check_stage(name)
  if declared_stages == nil then return end
  for _, s in ipairs(declared_stages) do if s == name then return end end
  raise("Stage '" .. tostring(name) .. "' is not declared (stages: " .. concat(declared_stages, ", ") .. ")")
end

Stage = {}
function Stage.set(name)
  check_stage(name)
  local ctx = current_ctx()
  ctx.stage = name
  ctx.stage_history[#ctx.stage_history + 1] = name
end
function Stage.current() return current_ctx().stage end
function Stage.is(name) return current_ctx().stage == name end
function Stage.history()
  local h = {}
  for i, s in ipairs(current_ctx().stage_history) do h[i] = s end
  return h
end
function Stage.advance(name)
  if name ~= nil then return Stage.set(name) end
  if declared_stages == nil then raise("Stage.advance() needs stages({...}) or a stage name") end
  local cur = current_ctx().stage
  if cur == nil then return Stage.set(declared_stages[1]) end
  for i, s in ipairs(declared_stages) do
    if s == cur then
      if declared_stages[i + 1] == nil then raise("Stage.advance(): '" .. cur .. "' is the last stage") end
      return Stage.set(declared_stages[i + 1])
    end
  end
end

Iterations = {
  current = function() return current_ctx().iterations end,
  exceeded = function(n) return current_ctx().iterations >= n end,
}
function K.count_iteration() local c = current_ctx(); c.iterations = c.iterations + 1 end

Stop = {
  requested = function() return current_ctx().stop.requested end,
  reason = function() return current_ctx().stop.reason end,
  success = function() return current_ctx().stop.success end,
}
function K.request_stop(reason, success)
  current_ctx().stop = {requested = true, reason = reason, success = success ~= false}
end

Tool = {}
function Tool.called(name)
  for _, c in ipairs(current_ctx().tool_calls) do if c.name == name then return true end end
  return false
end
function Tool.last_call(name)
  local calls = current_ctx().tool_calls
  for i = #calls, 1, -1 do if calls[i].name == name then return calls[i] end end
  return nil
end
function Tool.last_result(name)
  local c = Tool.last_call(name)
  return c and c.result
end
-- Tool.reset(): forget the tool calls made so far in this run (the
-- reference's way to loop "until Tool.called('done')" more than once).
function Tool.reset() current_ctx().tool_calls = {} end
function K.record_tool_call(name, args, result)
  local calls = current_ctx().tool_calls
  calls[#calls + 1] = {name = name, args = args, result = result}
end

------------------------------------------------------------------------------
-- Durable steps and checkpoints
------------------------------------------------------------------------------
Step = {}
local step_replay, step_record = K.step_replay, K.step_record
function Step.run(name, fn)
  if type(name) ~= "string" then check_type("Step.run", 1, name, "string") end
  if type(fn) ~= "function" then check_type("Step.run", 2, fn, "function") end
  local run = current_ctx().run
  local found, value = step_replay(run, name)
  if found then return value end
  local result = fn()
  step_record(run, name, result)
  return result
end

Checkpoint = {
  exists = function(name) return bcall(B.checkpoint, current_ctx().run, "exists", name) end,
  get = function(name) return bcall(B.checkpoint, current_ctx().run, "get", name) end,
  clear_after = function(name) return bcall(B.checkpoint, current_ctx().run, "clear_after", name) end,
  clear_all = function() return bcall(B.checkpoint, current_ctx().run, "clear_all") end,
}

function Sleep(seconds)
  if type(seconds) ~= "number" or seconds < 0 then
    raise("Sleep: seconds must be a non-negative number, got " .. tostring(seconds))
  end
  perform({kind = "sleep", seconds = seconds, run = current_ctx().run})
end

Retry = {}
function Retry.with_backoff(fn, opts)
  check_type("Retry.with_backoff", 1, fn, "function")
  opts = opts or {}
  local attempts = opts.max_attempts or 3
  local delay = opts.initial_delay or 1
  local max_delay = opts.max_delay or 60
  local factor = opts.backoff_factor or 2
  local last_err
  for attempt = 1, attempts do
    local r = pack(pcall(fn, attempt))
    if r[1] then return unpack(r, 2, r.n) end
    last_err = r[2]
    if attempt < attempts then
      Sleep(min(delay, max_delay))
      delay = delay * factor
    end
  end
  raise("Retry.with_backoff: gave up after " .. attempts .. " attempts: " .. tostring(last_err))
end

------------------------------------------------------------------------------
-- Procedures
------------------------------------------------------------------------------
local PROCEDURES = {}
K.PROCEDURES = PROCEDURES  -- composition.lua runs them as child procedures
local HANDLES = setmetatable({}, {__mode = "k"})
function K.is_handle(v) return HANDLES[v] == true end
-- Declarations (procedure, agent, ...) return handles a cell should not show.
function K.mark_handle(v) HANDLES[v] = true; return v end

-- A copy of params data (JSON from Python: acyclic, at most 100 deep), so
-- what a body is handed cannot change the params themselves.
local function copy(v)
  if type(v) ~= "table" then return v end
  local out = {}
  for k, x in next, v do out[k] = copy(x) end
  return out
end
K.copy_params = copy

-- params: read-only view of the running procedure's validated params. Its
-- metatable is hidden and rawset refuses it (a raw field would outlive the
-- run and show in every later procedure); tables in it come out as copies.
local PARAMS_READ_ONLY = "params are read-only"
params = setmetatable({}, {
  __index = function(_, k) return copy(current_ctx().params[k]) end,
  __newindex = function() raise(PARAMS_READ_ONLY) end,
  __pairs = function() return next, copy(current_ctx().params), nil end,
  __metatable = PARAMS_READ_ONLY,
})
local raw_rawset, proxy = rawset, params
-- A cell may assign the global `params` (params = {...}): every run (new_ctx)
-- puts the read-only view back, so it reads its own whatever a cell did.
restore_params = function() raw_rawset(_ENV, "params", proxy) end
function rawset(t, k, v)
  if rawequal(t, proxy) then raise("rawset: " .. PARAMS_READ_ONLY) end
  return raw_rawset(t, k, v)
end

-- input: the same view, by the name some reference Tactus versions use.
input = params

-- procedure([name,] [config,] fn)'s arguments, however they were given
-- (compat.lua's reference forms read them the same way).
local function procedure_args(a, b, c)
  local name, config, fn
  if type(a) == "function" then fn = a
  elseif type(a) == "table" then config, fn = a, b
  elseif type(a) == "string" then
    name = a
    if type(b) == "function" then fn = b else config, fn = b, c end
  end
  return name, config, fn
end
K.procedure_args = procedure_args

-- A table's keys as sorted strings (the names an error message lists).
function K.sorted_names(t)
  local names = {}
  for k in pairs(t) do names[#names + 1] = tostring(k) end
  sort(names)
  return names
end

function procedure(a, b, c)
  local name, config, fn = procedure_args(a, b, c)
  if type(fn) ~= "function" then
    raise("procedure: expected procedure([name,] [config,] function() ... end)")
  end
  config = config or {}
  if type(config) ~= "table" then raise("procedure: config must be a table") end
  if name ~= nil then config.name = name end
  local key = bcall(B.declare, config)
  PROCEDURES[key] = {fn = fn, config = config}
  local handle = setmetatable({name = key}, {
    __call = function(_, p) return K.run_procedure(key, p) end,
    __index = {run = function(_, p) return K.run_procedure(key, p) end},
  })
  HANDLES[handle] = true
  return handle
end

local function run_guards(key, config)
  local guards = config.guards
  if guards == nil then return end
  for i, guard in ipairs(guards) do
    local ok, reason = guard()
    if not ok then
      error(K.error_object("GuardError",
        "procedure '" .. key .. "': guard #" .. i .. " failed: " .. tostring(reason or "returned false")), 0)
    end
  end
end

K.run_guards = run_guards  -- composition.lua checks a child's guards the same way

function K.run_procedure(key, given)
  local def = PROCEDURES[key]
  if def == nil then raise("unknown procedure '" .. tostring(key) .. "'") end
  local parent = current_ctx()
  local depth = (parent.depth or 0) + 1
  local max_depth = def.config.max_depth or 5
  if depth > max_depth then
    raise("procedure '" .. key .. "': max_depth " .. max_depth .. " exceeded (recursion too deep)")
  end
  local run_id, validated = bcall(B.begin_run, key, given)
  local ctx = new_ctx(run_id, key, validated, depth)
  set_ctx(ctx)
  local ok, result = xpcall(function()
    run_guards(key, def.config)
    return def.fn(copy(validated))
  end, K.capture_error)
  if ctx.last_agent ~= nil then  -- return_prompt / error_prompt (agents.lua)
    ok, result = K.finish_run(ctx, def.config, ok, result)
  end
  set_ctx(parent)
  local out = bcall(B.end_run, run_id, ok, result)
  if not ok then error(result, 0) end
  return out
end

-- %tactus reset: the declaration goes (and with it the body and what it holds).
function K.forget_procedure(key) PROCEDURES[key] = nil end

-- A function Python can start as a coroutine to run one procedure.
function K.procedure_main(key, p)
  return function() return K.run_procedure(key, p) end
end

-- Top-level cell code shares one notebook-wide State between cells.
local NOTEBOOK_STATE = {}
function K.cell_ctx(run_id, key)
  local ctx = new_ctx(run_id, key, {}, 0)
  ctx.state = NOTEBOOK_STATE
  return ctx
end

local function at_path(path)
  local t = _G
  if path ~= "" then
    for part in gmatch(path, "[^%.]+") do
      if type(t) ~= "table" then return nil end
      t = rawget(t, part)
    end
  end
  return t
end

-- "function", "table", or a short rendering of a scalar (inspection).
function K.describe(path)
  local v = at_path(path)
  if type(v) == "table" or type(v) == "function" or v == nil then return type(v) end
  return type(v) .. " = " .. tostring(v)
end

-- Sorted string keys of the table at a dotted path of globals (completion).
function K.fields(path)
  local t = at_path(path)
  if type(t) ~= "table" then return nil end
  local names = {}
  for k in next, t do  -- next, not pairs: completion must not run a cell's __pairs
    if type(k) == "string" then names[#names + 1] = k end
  end
  sort(names)
  return names
end

Procedure = {
  run = function(name, p)
    check_type("Procedure.run", 1, name, "string")
    return K.run_procedure(name, p)
  end,
}

return K
