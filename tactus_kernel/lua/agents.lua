-- Agents: agent(...), tool(...), Name.turn(...), MessageHistory, filters,
-- default_model(...). Declarations and turns are effects answered by
-- tactus_kernel/primitives/agents.py (pydantic-ai). Tool functions stay
-- here: when a model calls one, Python starts K.agent_tool_main(...) as a
-- coroutine of its own, in the calling procedure's context, so the tool
-- can use Tool/State/Stop and even wait for a human.
local B, K = ...

local type, tostring, ipairs, select = type, tostring, ipairs, select
local perform, current_ctx, raise = K.perform, K.current_ctx, K.raise
local upper, sub, match = string.upper, string.sub, string.match
local setmetatable = setmetatable
-- a turn result's id and cost, beside it: the result itself holds only its
-- data, so it can be shown, returned and stored like any table
local TURN_ID, TURN_COST = setmetatable({}, {__mode = "k"}), setmetatable({}, {__mode = "k"})

local TOOLS = {}   -- tool name -> Lua function

local function check_name(fname, name)
  if type(name) ~= "string" or not match(name, "^[%a_][%w_]*$") then
    raise(fname .. ": the name must be an identifier such as \"search\", got " .. tostring(name))
  end
end

-- tool(name, {description = ..., params = {...}}, function(args) ... end)
-- tool(name, function(args) ... end)
function tool(name, spec, fn)
  check_name("tool", name)
  if type(spec) == "function" and fn == nil then spec, fn = {}, spec end
  if spec == nil then spec = {} end
  if type(spec) ~= "table" then raise("tool '" .. name .. "': the spec must be a table") end
  if type(fn) ~= "function" then
    raise("tool '" .. name .. "': expected tool(name, {description = ..., params = {...}}, function(args) ... end)")
  end
  perform({kind = "agent.tool", run = current_ctx().run, name = name, spec = spec})
  TOOLS[name] = fn
end

-- The built-in done(reason, success): asks the procedure to stop.
local function done_tool(args)
  K.request_stop(args.reason, args.success)
  return {stopped = true}
end

-- Python starts this as a coroutine for each tool call a model makes.
function K.agent_tool_main(name, args)
  return function()
    local fn = TOOLS[name]
    if name == "done" then fn = done_tool end
    if fn == nil then raise("tool '" .. tostring(name) .. "' has no function (declare it with tool(...))") end
    local result = fn(args)
    K.record_tool_call(name, args, result)
    return result
  end
end

-- A replayed turn: its recorded tool calls count as made, without running them.
local function apply_calls(calls)
  for _, c in ipairs(calls) do
    local args = c.args or {}
    if c.name == "done" then K.request_stop(args.reason, args.success) end
    K.record_tool_call(c.name, args, c.result)
  end
end

-- A turn result's methods, made when looked up: most results are never
-- asked for their cost or messages, and three closures made for every turn
-- were a measurable share of the Lua side of a turn.
local function messages_method(which)
  return function(r)
    local turn_id = TURN_ID[r]
    return function()
      return perform({kind = "agent.messages", run = current_ctx().run, turn = turn_id, which = which})
    end
  end
end

local RESULT_METHODS = {
  cost = function(r)
    local usage = r.usage
    return function()
      return {prompt_tokens = usage.prompt_tokens, completion_tokens = usage.completion_tokens,
              total_tokens = usage.total_tokens, total_cost = TURN_COST[r], currency = "USD"}
    end
  end,
  new_messages = messages_method("new"),
  all_messages = messages_method("all"),
}
local RESULT_MT = {
  __metatable = false,  -- shared by every result: not for cell code to change
  -- not stored in the result: it stays plain data (shown, returned, recorded as is)
  __index = function(r, key)
    local make = RESULT_METHODS[key]
    if make ~= nil then return make(r) end
  end,
}

-- The effect answers with flat values (service.py: AgentService._result).
local function wrap_result(data, turn_id, agent_name, model, replayed, total_cost,
                           prompt, completion, total, requests, tool_calls)
  local usage = {prompt_tokens = prompt, completion_tokens = completion, total_tokens = total,
                 requests = requests, tool_calls = tool_calls}
  local result = setmetatable({data = data, usage = usage, agent = agent_name, model = model, replayed = replayed},
                              RESULT_MT)
  TURN_ID[result], TURN_COST[result] = turn_id, total_cost
  return result
end

local function answered(calls, ...)
  if calls then apply_calls(calls) end  -- a replayed turn's tool calls
  return wrap_result(...)
end

local function turn(name, opts)
  if opts ~= nil and type(opts) ~= "table" then
    raise(name .. ".turn: options must be a table such as {inject = \"...\"}, got " .. type(opts))
  end
  local ctx = current_ctx()
  K.count_iteration()
  local req = {kind = "agent.turn", run = ctx.run, name = name}
  -- The usual options (none, or only a text to inject) go as a plain field:
  -- Python reads one value instead of walking a table on every turn.
  local key, value = nil, nil
  if opts ~= nil then key, value = next(opts) end
  if key == "inject" and type(value) == "string" and next(opts, key) == nil then
    req.inject = value
  elseif key ~= nil then
    req.opts = opts
  end
  return answered(perform(req, ctx))
end

local function global_name(name)
  return upper(sub(name, 1, 1)) .. sub(name, 2)
end

-- agent("researcher", {...}) makes the global Researcher with .turn(opts).
function agent(name, config)
  check_name("agent", name)
  if config == nil then config = {} end
  if type(config) ~= "table" then raise("agent '" .. name .. "': the config must be a table") end
  perform({kind = "agent.declare", run = current_ctx().run, name = name, config = config})
  local handle = {name = name}
  -- Researcher.turn(opts) and Researcher:turn(opts) both work
  handle.turn = function(a, b)
    if a == handle then a = b end
    return turn(name, a)
  end
  _G[global_name(name)] = handle
  return K.mark_handle(handle)
end

-- default_model("openai:gpt-4o-mini") or default_model({name = ..., temperature = ...})
function default_model(model)
  if type(model) ~= "string" and type(model) ~= "table" then
    raise("default_model: expected a model name such as \"test\" or a table {name = ...}")
  end
  perform({kind = "agent.default_model", run = current_ctx().run, model = model})
end

------------------------------------------------------------------------------
-- Message history. Without an agent name: the run's shared history, or the
-- only declared agent's.
------------------------------------------------------------------------------
local function history(op, value, agent_name)
  if agent_name ~= nil and type(agent_name) ~= "string" then
    raise("MessageHistory." .. op .. ": the agent must be given by name, got " .. type(agent_name))
  end
  return perform({kind = "agent.history", run = current_ctx().run, op = op, value = value, agent = agent_name})
end

local function check_positive(fname, n)
  if type(n) ~= "number" or n < 0 then raise(fname .. ": expected a non-negative number, got " .. tostring(n)) end
end

filters = {
  last_n = function(n) check_positive("filters.last_n", n); return {filter = "last_n", n = n} end,
  token_budget = function(n) check_positive("filters.token_budget", n); return {filter = "token_budget", tokens = n} end,
  by_role = function(...)
    local roles = {...}
    if type(roles[1]) == "table" then roles = roles[1] end
    return {filter = "by_role", roles = roles}
  end,
  compose = function(...)
    local list = {}
    for i = 1, select("#", ...) do
      local f = select(i, ...)
      if type(f) ~= "table" or f.filter == nil then raise("filters.compose: argument #" .. i .. " is not a filter") end
      list[#list + 1] = f
    end
    return {filter = "compose", filters = list}
  end,
}

MessageHistory = {
  append = function(message, agent_name)
    if type(message) == "string" then message = {role = "user", content = message} end
    if type(message) ~= "table" then raise("MessageHistory.append: expected a table {role = ..., content = ...}") end
    history("append", message, agent_name)
  end,
  inject_system = function(text, agent_name)
    if type(text) ~= "string" then raise("MessageHistory.inject_system: expected a string") end
    history("inject_system", text, agent_name)
  end,
  clear = function(agent_name) history("clear", nil, agent_name) end,
  get = function(agent_name) return history("get", nil, agent_name) end,
  filters = filters,
}
