-- The reference Tactus's (v0.3 to v0.7) top-level declarations, so its
-- procedures run as written:
--
--   parameter(name, spec), output(name, spec) (or output({name = spec, ...})),
--   description(text)       v0.3: the fields of the procedure declared in the
--                           same cell, before or after it
--   max_depth(n), max_turns(n), async(flag)
--                           settings: the procedure of this cell and every
--                           procedure declared after, unless its config says
--   contains(v), equals(v), matches(regex)
--                           matchers: plain tables {matcher = ..., value = ...}
--                           that also test a value: m(x) or m:test(x)
--
-- and the procedure config keys `input` / `output` as aliases of `params` /
-- `outputs` (the reference's later spelling). Python half (the regex of
-- `matches`, K.regex_search): tactus_kernel/primitives/compat.py; the same matchers in Python:
-- tactus_kernel/matchers.py.
local B, K = ...

local type, tostring, pairs, setmetatable, getmetatable, next = type, tostring, pairs, setmetatable, getmetatable, next
local find, format, match = string.find, string.format, string.match
local current_ctx, raise = K.current_ctx, K.raise

local declare_procedure = procedure

-- Settings of max_depth(n), max_turns(n), async(flag), for procedures
-- declared from then on (read by %tactus export too).
local SETTINGS = {}
K.COMPAT_SETTINGS = SETTINGS

-- Fields declared with parameter/output/description that wait for the cell's
-- procedure: {cell = <cell key>, params = {...}, outputs = {...}, description = ...}
local pending = nil
-- The last procedure declared at the top level of a cell:
-- {cell = <cell key>, name = ..., config = ..., fn = ...}
local last = nil

local function top_level_cell(fname)
  local ctx = current_ctx()
  if ctx.depth ~= 0 then
    raise(fname .. ": declare it at the top level of a cell, not inside a procedure")
  end
  return ctx.key
end

local function copy(t)
  local out = {}
  for k, v in pairs(t) do out[k] = v end
  return out
end

-- Apply pending fields and settings to a procedure's config (a copy).
local function completed(config, cell)
  config = copy(config)
  if config.params == nil and type(config.input) == "table" then config.params = config.input end
  if config.outputs == nil and type(config.output) == "table" then config.outputs = config.output end
  if pending ~= nil and pending.cell == cell then
    for field, what in pairs({params = pending.params, outputs = pending.outputs}) do
      if next(what) ~= nil then
        local merged = copy(config[field] or {})
        for name, spec in pairs(what) do
          if merged[name] == nil then merged[name] = spec end
        end
        config[field] = merged
      end
    end
    if config.description == nil then config.description = pending.description end
  end
  for key, value in pairs(SETTINGS) do
    if config[key] == nil then config[key] = value end
  end
  return config
end

function procedure(a, b, c)
  local name, config, fn = K.procedure_args(a, b, c)
  if type(fn) ~= "function" or (config ~= nil and type(config) ~= "table") then
    return declare_procedure(a, b, c)  -- its own error message
  end
  local ctx = current_ctx()
  local cell = ctx.depth == 0 and ctx.key or nil
  config = completed(config or {}, cell)
  if name ~= nil then config.name = name end
  local handle = declare_procedure(config, fn)
  if cell ~= nil then
    last = {cell = cell, config = config, fn = fn}
    if pending ~= nil and pending.cell == cell then pending = nil end
  end
  return handle
end

-- A declaration made after the cell's procedure: declare that procedure
-- again with it. Returns true when there was one.
local function redeclare(cell, apply)
  if last == nil or last.cell ~= cell then return false end
  apply(last.config)
  declare_procedure(last.config, last.fn)
  return true
end

local function pending_for(cell)
  if pending == nil or pending.cell ~= cell then
    pending = {cell = cell, params = {}, outputs = {}}
  end
  return pending
end

local function field_declaration(fname, field)
  local declare
  declare = function(name, spec)
    local cell = top_level_cell(fname)
    if type(name) == "table" and spec == nil and fname == "output" then
      for k, v in pairs(name) do declare(k, v) end
      return
    end
    if type(name) ~= "string" or not match(name, "^[%a_][%w_]*$") then
      raise(fname .. ": argument #1 must be a name such as \"topic\", got " .. tostring(name))
    end
    if type(spec) ~= "table" then
      raise(fname .. " '" .. name .. "': argument #2 must be a table such as {type = \"string\"}, got " .. type(spec))
    end
    local applied = redeclare(cell, function(config)
      local fields = copy(config[field] or {})
      fields[name] = spec
      config[field] = fields
    end)
    if not applied then pending_for(cell)[field][name] = spec end
  end
  return declare
end

parameter = field_declaration("parameter", "params")
output = field_declaration("output", "outputs")

function description(text)
  local cell = top_level_cell("description")
  if type(text) ~= "string" then raise("description: argument #1 must be text, got " .. type(text)) end
  if not redeclare(cell, function(config) config.description = text end) then
    pending_for(cell).description = text
  end
end

local function setting(fname, check)
  return function(value)
    local cell = top_level_cell(fname)
    check(value)
    SETTINGS[fname] = value
    redeclare(cell, function(config) config[fname] = value end)
  end
end

local function positive_integer(fname)
  return function(n)
    if type(n) ~= "number" or n < 1 or n % 1 ~= 0 then
      raise(fname .. ": expected a positive whole number, got " .. tostring(n))
    end
  end
end

max_depth = setting("max_depth", positive_integer("max_depth"))
max_turns = setting("max_turns", positive_integer("max_turns"))
async = setting("async", function(flag)
  if type(flag) ~= "boolean" then raise("async: expected true or false, got " .. tostring(flag)) end
end)

------------------------------------------------------------------------------
-- Matchers
------------------------------------------------------------------------------
local function shown(v)
  if type(v) == "string" then return format("%q", v) end
  return tostring(v)
end

local MATCHER_METHODS = {}
local MATCHER_MT = {
  __index = MATCHER_METHODS,
  __call = function(m, value) return MATCHER_METHODS.test(m, value) end,
  __tostring = function(m) return m.matcher .. "(" .. shown(m.value) .. ")" end,
  __metatable = "matcher",
}

local function deep_equal(a, b)
  if a == b then return true end
  if type(a) ~= "table" or type(b) ~= "table" then return false end
  for k, v in pairs(a) do if not deep_equal(v, b[k]) then return false end end
  for k in pairs(b) do if a[k] == nil then return false end end
  return true
end

-- Does `value` satisfy the matcher? contains: a substring of a string, or an
-- element of a list; equals: equal (tables by content); matches: a regular
-- expression (Python's re, as the reference) found in the string.
function MATCHER_METHODS.test(m, value)
  local kind, want = m.matcher, m.value
  if kind == "equals" then return deep_equal(value, want) end
  if kind == "contains" then
    if type(value) == "string" then return find(value, tostring(want), 1, true) ~= nil end
    if type(value) == "table" then
      for _, v in pairs(value) do if deep_equal(v, want) then return true end end
    end
    return false
  end
  if type(value) ~= "string" then return false end
  local ok, found = K.regex_search(want, value)
  if not ok then raise(found) end
  return found
end

local function matcher(kind, check)
  return function(value)
    if check then check(value) end
    return setmetatable({matcher = kind, value = value}, MATCHER_MT)
  end
end

contains = matcher("contains", function(v)
  if v == nil then raise("contains: expected the value to look for, got nil") end
end)
equals = matcher("equals")
matches = matcher("matches", function(v)
  if type(v) ~= "string" then raise("matches: expected a regular expression (a string), got " .. type(v)) end
end)

function K.is_matcher(v) return type(v) == "table" and getmetatable(v) == "matcher" end
