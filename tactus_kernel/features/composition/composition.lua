-- Composition: Procedure.run / spawn / wait / cancel / inject, dependency
-- checks, and the stage tracking the live timeline reads. Python half:
-- tactus_kernel/features/composition/effects.py.
--
-- Every child procedure runs in a coroutine of its own (started by Python
-- with K.child_main), in a context of its own: a synchronous Procedure.run
-- is an effect whose answer is the child's result, a spawn is an effect that
-- returns at once while an asyncio task drives the child. So a child that
-- waits for a human never blocks its siblings, and a yield inside a child
-- never has to cross a Python frame.
local B, K = ...

local type, tostring, ipairs, pairs, setmetatable, error, xpcall, pcall =
  type, tostring, ipairs, pairs, setmetatable, error, xpcall, pcall
local pack, unpack, concat, sort = table.pack, table.unpack, table.concat, table.sort
local match, gsub, gmatch = string.match, string.gsub, string.gmatch
local perform, current_ctx, raise = K.perform, K.current_ctx, K.raise
local PROCEDURES = K.PROCEDURES

local DEFAULT_MAX_DEPTH = 5

local function bcall(f, ...)
  local r = pack(f(...))
  if not r[1] then raise(r[2]) end
  return unpack(r, 2, r.n)
end

------------------------------------------------------------------------------
-- What dependencies are checked against: tools declared with tool(...)
-- (agents.lua keeps its own table private, so its global is wrapped here)
-- and procedures declared with procedure(...).
------------------------------------------------------------------------------
local DECLARED_TOOLS = {done = true}  -- the built-in done tool always exists
local declare_tool = tool
if declare_tool ~= nil then
  function tool(name, spec, fn)
    declare_tool(name, spec, fn)
    DECLARED_TOOLS[name] = true
  end
end

local names_of = K.sorted_names

local function check_dependencies(key)
  local def = PROCEDURES[key]
  local deps = def and def.config.dependencies
  if deps == nil then return end
  local where = "procedure '" .. key .. "'"
  if type(deps) ~= "table" then
    raise("DependencyError: " .. where .. ": dependencies must be a table {tools = {...}, procedures = {...}}")
  end
  for field in pairs(deps) do
    if field ~= "tools" and field ~= "procedures" then
      raise("DependencyError: " .. where .. ": unknown dependency kind '" .. tostring(field) ..
            "' (known: tools, procedures)")
    end
  end
  for _, name in ipairs(deps.tools or {}) do
    if not DECLARED_TOOLS[name] then
      raise("DependencyError: " .. where .. " depends on tool '" .. tostring(name) ..
            "', which is not declared (declare it with tool(\"" .. tostring(name) .. "\", ...) first)")
    end
  end
  for _, name in ipairs(deps.procedures or {}) do
    if PROCEDURES[name] == nil then
      raise("DependencyError: " .. where .. " depends on procedure '" .. tostring(name) ..
            "', which is not declared (run the cell that declares it first)")
    end
  end
end
K.check_dependencies = check_dependencies

------------------------------------------------------------------------------
-- Stages, for the timeline's progress bar: which stages were declared, and
-- the current one of each run (read by Python through K.STAGE_OF).
------------------------------------------------------------------------------
local DECLARED_STAGES = nil
local STAGE_OF = {}
K.STAGE_OF = STAGE_OF

local declare_stages = stages
function stages(list)
  declare_stages(list)
  DECLARED_STAGES = {}
  for i, name in ipairs(list) do DECLARED_STAGES[i] = tostring(name) end
end

local stage_set = Stage.set
function Stage.set(name)
  stage_set(name)
  local index, count = 0, 0
  if DECLARED_STAGES ~= nil then
    count = #DECLARED_STAGES
    for i, s in ipairs(DECLARED_STAGES) do if s == name then index = i end end
  end
  STAGE_OF[current_ctx().run] = {name = tostring(name), index = index, count = count}
end

function K.forget_stages(run_id)
  if run_id == nil then
    for k in pairs(STAGE_OF) do STAGE_OF[k] = nil end
  else
    STAGE_OF[run_id] = nil
  end
end

------------------------------------------------------------------------------
-- Running a child: K.child_main is what Python starts as the child's
-- coroutine, in the child's context (K.new_ctx). It checks dependencies and
-- guards before the body, so a failing one stops the child before any step.
------------------------------------------------------------------------------
function K.child_main(key, params)
  return function()
    local ctx = current_ctx()
    local ok, result = xpcall(function()
      local def = PROCEDURES[key]
      if def == nil then raise("ProcedureError: unknown procedure '" .. tostring(key) .. "'") end
      check_dependencies(key)
      K.run_guards(key, def.config)
      return def.fn(K.copy_params(params))
    end, K.capture_error)
    if ctx.last_agent ~= nil then  -- return_prompt / error_prompt (agents.lua)
      local def = PROCEDURES[key]
      ok, result = K.finish_run(ctx, def and def.config or {}, ok, result)
    end
    local out = bcall(B.end_run, ctx.run, ok, result)
    if not ok then error(result, 0) end
    return out
  end
end

-- "deploy/build#1/test#2" -> "deploy > build > test"
local function chain(path, name)
  local parts = {}
  for part in gmatch(path or "", "[^/]+") do
    local proc = gsub(part, "#%d+$", "")
    if PROCEDURES[proc] ~= nil then parts[#parts + 1] = proc end
  end
  parts[#parts + 1] = name
  return concat(parts, " > ")
end

-- Checks made before anything is sent to Python: the name, the depth, the
-- dependencies. Returns the caller's context and the child's depth.
local function callee(fname, name)
  if type(name) ~= "string" then
    raise(fname .. ": argument #1 must be a procedure name (a string), got " .. type(name))
  end
  local def = PROCEDURES[name]
  if def == nil then
    local known = names_of(PROCEDURES)
    raise("ProcedureError: unknown procedure '" .. name .. "' (" ..
          (#known > 0 and ("declared: " .. concat(known, ", ")) or "none is declared yet") .. ")")
  end
  local parent = current_ctx()
  local depth = (parent.depth or 0) + 1
  local max_depth = def.config.max_depth or DEFAULT_MAX_DEPTH
  if type(max_depth) ~= "number" then max_depth = DEFAULT_MAX_DEPTH end
  if depth > max_depth then
    raise("ProcedureError: procedure '" .. name .. "': max_depth " .. max_depth ..
          " exceeded (call chain: " .. chain(parent.key, name) .. ")")
  end
  check_dependencies(name)
  return parent, depth
end

local function run(name, p)
  local parent, depth = callee("Procedure.run", name)
  return perform({kind = "procedure.run", run = parent.run, name = name, params = p, depth = depth})
end
-- A procedure's handle called from another procedure or cell (deploy{...})
-- is a composition call too; a cell's own procedure still runs through
-- primitives.lua (K.procedure_main below).
K.run_procedure_at_top = K.run_procedure
K.run_procedure = run

local top_run = K.run_procedure_at_top
function K.procedure_main(key, p)
  return function()
    check_dependencies(key)
    return top_run(key, p)
  end
end

------------------------------------------------------------------------------
-- Handles of spawned children. The status lives in a private table Python
-- updates (INFO[handle] = {status = ..., ctx = <the child's context>}).
------------------------------------------------------------------------------
local INFO = setmetatable({}, {__mode = "k"})
local HANDLE_MT = {
  __tostring = function(h)
    local info = INFO[h]
    return "procedure handle " .. tostring(h.key or h.name) .. " (" .. tostring(info and info.status) .. ")"
  end,
}
local FINISHED = {completed = true, failed = true, cancelled = true}

local function info_of(fname, h)
  local info = type(h) == "table" and INFO[h] or nil
  if info == nil then raise(fname .. ": expected a handle from Procedure.spawn, got " .. type(h)) end
  return info
end

local function ids_of(fname, hs)
  if type(hs) ~= "table" then raise(fname .. ": expected a list of handles, got " .. type(hs)) end
  local ids = {}
  for i, h in ipairs(hs) do
    info_of(fname, h)
    ids[i] = h.id
  end
  if #ids == 0 then raise(fname .. ": expected a non-empty list of handles") end
  return ids
end

local function timeout_of(fname, opts)
  if opts == nil then return nil end
  local t = opts
  if type(opts) == "table" then t = opts.timeout end
  if t ~= nil and (type(t) ~= "number" or t < 0) then
    raise(fname .. ": timeout must be a non-negative number of seconds, got " .. tostring(t))
  end
  return t
end

local function spawn(name, p)
  local parent, depth = callee("Procedure.spawn", name)
  local info = {status = "starting"}
  local id, key = perform({kind = "procedure.spawn", run = parent.run, name = name, params = p, depth = depth,
                           info = info})
  local h = setmetatable({id = id, name = name, key = key}, HANDLE_MT)
  INFO[h] = info
  return h
end

local function status(h)
  local info = info_of("Procedure.status", h)
  local ctx = info.ctx
  return info.status, ctx and ctx.stage or info.stage
end

local function wait(h, opts)
  info_of("Procedure.wait", h)
  return perform({kind = "procedure.wait", run = current_ctx().run, ids = {h.id}, mode = "one",
                  timeout = timeout_of("Procedure.wait", opts)})
end

local function wait_any(hs, opts)
  local ids = ids_of("Procedure.wait_any", hs)
  local index, result, err = perform({kind = "procedure.wait", run = current_ctx().run, ids = ids, mode = "any",
                                      timeout = timeout_of("Procedure.wait_any", opts)})
  if index == 0 then return nil, nil, "timeout" end
  return hs[index], result, err
end

local function wait_all(hs, opts)
  local ids = ids_of("Procedure.wait_all", hs)
  return perform({kind = "procedure.wait", run = current_ctx().run, ids = ids, mode = "all",
                  timeout = timeout_of("Procedure.wait_all", opts)})
end

local function is_complete(h)
  return FINISHED[info_of("Procedure.is_complete", h).status] == true
end

local function all_complete(hs)
  ids_of("Procedure.all_complete", hs)
  for _, h in ipairs(hs) do
    if not FINISHED[INFO[h].status] then return false end
  end
  return true
end

local function cancel(h)
  info_of("Procedure.cancel", h)
  return perform({kind = "procedure.cancel", run = current_ctx().run, id = h.id})
end

local function inject(h, message)
  info_of("Procedure.inject", h)
  if type(message) ~= "string" then
    raise("Procedure.inject: argument #2 must be a message (a string), got " .. type(message))
  end
  return perform({kind = "procedure.inject", run = current_ctx().run, id = h.id, message = message})
end

Procedure = {
  run = run, spawn = spawn, status = status, wait = wait, wait_any = wait_any, wait_all = wait_all,
  is_complete = is_complete, all_complete = all_complete, cancel = cancel, inject = inject,
}
