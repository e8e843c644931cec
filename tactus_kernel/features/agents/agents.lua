-- Agents: agent(...), tool(...), toolset(...), mcp_server(...), Name.turn(...),
-- MessageHistory, filters, default_model(...). Declarations and turns are effects answered by
-- tactus_kernel/primitives/agents.py (pydantic-ai). Tool functions stay
-- here: when a model calls one, Python starts K.agent_tool_main(...) as a
-- coroutine of its own, in the calling procedure's context, so the tool
-- can use Tool/State/Stop and even wait for a human.
local B, K = ...

local type, tostring, ipairs, select = type, tostring, ipairs, select
local perform, current_ctx, raise = K.perform, K.current_ctx, K.raise
local upper, sub, match = string.upper, string.sub, string.match
local setmetatable, pairs, pcall = setmetatable, pairs, pcall
local json_encode = Json.encode
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
  if spec.parameters ~= nil and spec.params == nil then  -- the reference's name for params
    local copy = {}
    for k, v in pairs(spec) do if k ~= "parameters" then copy[k] = v end end
    copy.params = spec.parameters
    spec = copy
  end
  if type(fn) ~= "function" then
    raise("tool '" .. name .. "': expected tool(name, {description = ..., params = {...}}, function(args) ... end)")
  end
  perform({kind = "agent.tool", run = current_ctx().run, name = name, spec = spec})
  TOOLS[name] = fn
end

-- toolset(name, {type = "lua", tools = {...}}): a named group of tools, as in
-- the reference Tactus. Each entry is a declared tool's name, or a table
-- {name = ..., description = ..., parameters = {...}, handler = function(args) ... end}
-- declared here as tool(...) would. Agents name the group in toolsets = {...}.
local TOOLSETS = {}
function toolset(name, spec)
  check_name("toolset", name)
  if type(spec) ~= "table" then
    raise("toolset '" .. name .. "': expected toolset(name, {type = \"lua\", tools = {...}})")
  end
  local kind = spec.type or "lua"
  if kind == "plugin" then
    raise("SandboxError: toolset '" .. name .. "': type = \"plugin\" loads Python files, which the sandbox refuses "
          .. "(no Python code runs inside a notebook's procedures); serve those tools from an MCP server instead: "
          .. "mcp_server(\"" .. name .. "\", {command = \"python\", args = {\"your_server.py\"}}) and "
          .. "toolsets = {\"" .. name .. "\"}, or write them in Lua with tool(...) or toolset(name, {tools = {...}})")
  end
  if kind == "mcp" then  -- the tools of an MCP server: its own declaration, or a declared server's
    local decl = {}
    for k, v in pairs(spec) do if k ~= "type" then decl[k] = v end end
    perform({kind = "agent.mcp_server", run = current_ctx().run, name = name, spec = decl})
    TOOLSETS[name] = {name = name, type = kind, tools = {}}
    return
  end
  if kind ~= "lua" then
    raise("toolset '" .. name .. "': type " .. tostring(kind) .. " is not supported here "
          .. "(supported: \"lua\" and \"mcp\"; Python plugins are refused by the sandbox: use an MCP server)")
  end
  if type(spec.tools) ~= "table" then raise("toolset '" .. name .. "': tools must be a list") end
  local names = {}
  for i, entry in ipairs(spec.tools) do
    if type(entry) == "string" then
      names[#names + 1] = entry
    elseif type(entry) == "table" then
      local handler = entry.handler or entry.fn or entry[1]
      tool(entry.name, {description = entry.description, params = entry.parameters or entry.params}, handler)
      names[#names + 1] = entry.name
    else
      raise("toolset '" .. name .. "': tools[" .. i .. "] must be a tool name or {name = ..., handler = ...}")
    end
  end
  perform({kind = "agent.toolset", run = current_ctx().run, name = name, tools = names})
  TOOLSETS[name] = {name = name, type = kind, tools = names}
end

-- mcp_server(name, {command = "python", args = {"server.py"}, env = {...}}) or
-- mcp_server(name, {url = "http://127.0.0.1:8000/mcp"}): an MCP tool server.
-- Its tools are offered as NAME_TOOL (the reference's prefix); an agent names
-- them all with toolsets = {"NAME"}, or one with "NAME_TOOL". Python starts the
-- server (never Lua), and only for a live turn: a replayed turn needs none.
function mcp_server(name, spec)
  if type(name) ~= "string" or not match(name, "^[%a_][%w_%-]*$") then
    raise("mcp_server: the name must be an identifier such as \"files\", got " .. tostring(name))
  end
  if type(spec) ~= "table" then
    raise("mcp_server '" .. name .. "': expected mcp_server(name, {command = \"python\", args = {\"server.py\"}}) "
          .. "or mcp_server(name, {url = \"http://127.0.0.1:8000/mcp\"})")
  end
  perform({kind = "agent.mcp_server", run = current_ctx().run, name = name, spec = spec})
end

-- mcp_servers({files = {...}, web = {...}}): several at once, as the reference's
-- mcp_servers configuration section lists them.
function mcp_servers(servers)
  if type(servers) ~= "table" then raise("mcp_servers: expected a table {name = {command = ...}, ...}") end
  local names = {}
  for name in pairs(servers) do names[#names + 1] = tostring(name) end
  table.sort(names)
  for _, name in ipairs(names) do mcp_server(name, servers[name]) end
end

Toolset = {
  get = function(name)
    local set = TOOLSETS[name]
    if set == nil then raise("Toolset.get: unknown toolset '" .. tostring(name) .. "' (declare it with toolset(...))") end
    local tools = {}
    for i, t in ipairs(set.tools) do tools[i] = t end
    return {name = set.name, type = set.type, tools = tools}
  end,
}

-- The built-in done(reason, success): asks the procedure to stop.
local function done_tool(args)
  K.request_stop(args.reason, args.success)
  return {stopped = true}
end

-- A call to an MCP server's tool, made by Python during a live turn: it counts
-- for Tool.called / Tool.last_call in the calling procedure, as a Lua tool's does.
function K.record_tool_call_in(ctx, name, args, result)
  local calls = ctx.tool_calls
  calls[#calls + 1] = {name = name, args = args, result = result}
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
  text = function(r)  -- a value, not a method: the reference's result.text
    local data = r.data
    if type(data) == "string" or data == nil then return data end
    return json_encode(data)
  end,
  cost = function(r)
    local usage = r.usage
    return function()
      return {prompt_tokens = usage.prompt_tokens, completion_tokens = usage.completion_tokens,
              total_tokens = usage.total_tokens, total_cost = TURN_COST[r], currency = "USD"}
    end
  end,
  new_messages = messages_method("new"),
  all_messages = messages_method("all"),
  raw_messages = function(r)
    local turn_id = TURN_ID[r]
    return function(which)
      if which ~= nil and which ~= "new" and which ~= "all" then
        raise("result.raw_messages: expected \"new\" (the default) or \"all\", got " .. tostring(which))
      end
      return perform({kind = "agent.messages", run = current_ctx().run, turn = turn_id,
                      which = "raw_" .. (which or "new")})
    end
  end,
}
local RESULT_MT = {
  __metatable = false,  -- shared by every result: not for cell code to change
  -- not stored in the result: it stays plain data (shown, returned, recorded as is)
  __index = function(r, key)
    local make = RESULT_METHODS[key]
    if make ~= nil then return make(r) end
  end,
}

-- The effect answers with flat values (turns.py: Turn._answer).
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
  ctx.last_agent = name  -- return_prompt / error_prompt ask this agent
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

-- default_provider("openai"): the provider of every agent that names none.
function default_provider(provider)
  if type(provider) ~= "string" then raise("default_provider: expected a provider name such as \"openai\"") end
  perform({kind = "agent.default_provider", run = current_ctx().run, provider = provider})
end

-- prompt(name, text) and prompts.NAME: named prompt templates.
prompts = {}
function prompt(name, text)
  check_name("prompt", name)
  if type(text) ~= "string" then raise("prompt '" .. name .. "': the text must be a string") end
  prompts[name] = text
end

-- return_prompt / error_prompt, with the reference's meaning: when a
-- procedure's body returns, its last agent takes one more turn with the
-- return prompt (no tools), and that summary is the procedure's result if the
-- body returned nothing; when the body fails, the agent takes a turn with the
-- error prompt and the error, to explain it (the error still ends the run).
-- A procedure's own config (return_prompt = ..., error_prompt = ...) wins over
-- these notebook-wide declarations.
--
-- status_prompt (the function, or the procedure config key) is accepted and
-- ignored, with a notice the first time: the reference asks for a status
-- "when a caller requests a status update" of an async procedure, but its own
-- runtime never does, and here a caller's status turn would land in a running
-- child's record at a moment replay cannot reproduce.
local SUMMARY_PROMPTS = {}
local function prompt_setter(kind)
  return function(text)
    if type(text) ~= "string" then raise(kind .. "_prompt: expected a string") end
    SUMMARY_PROMPTS[kind] = text
  end
end
return_prompt = prompt_setter("return")
error_prompt = prompt_setter("error")

local status_noticed = false
local function status_notice()
  if status_noticed then return end
  status_noticed = true
  B.write("stderr", "status_prompt is accepted and ignored here: nothing asks a running procedure for a " ..
    "status summary (Procedure.status(handle) reads its record). See docs/agents.md#prompts.\n")
end

function status_prompt(text)
  if type(text) ~= "string" then raise("status_prompt: expected a string") end
  status_notice()
end

-- Errors that must end the run at once: no agent is asked to explain them.
local NO_EXPLAIN = {"KeyboardInterrupt", "DivergenceError", "NoRecordedAnswer", "LuaMemoryError", "HumanTimeout"}

function K.finish_run(ctx, config, ok, result)
  if config.status_prompt ~= nil then status_notice() end
  local agent_name = ctx.last_agent
  if agent_name == nil then return ok, result end
  if ok then
    local text = config.return_prompt or SUMMARY_PROMPTS["return"]
    if type(text) ~= "string" then return ok, result end
    local good, summary = pcall(turn, agent_name, {inject = text, tools = {}})
    if not good then return false, K.capture_error(summary) end
    if result == nil then result = summary.data end
    return ok, result
  end
  local text = config.error_prompt or SUMMARY_PROMPTS["error"]
  if type(text) ~= "string" or K.was_interrupted() then return ok, result end
  local message = type(result) == "table" and result.message or tostring(result)
  for _, name in ipairs(NO_EXPLAIN) do
    if match(tostring(message), "^" .. name) then return ok, result end
  end
  pcall(turn, agent_name, {inject = text .. "\n\nThe error: " .. tostring(message), tools = {}})
  return ok, result
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
