-- Specifications: specifications([[Gherkin]]) (parsed and kept by Python:
-- tactus_kernel/features/specs/registry.py) and step(text, fn), kept here
-- and run by the scenario runner (specs/runner.py) in the context of the
-- finished run, so a step reads its State, Stage, Tool calls.
local B, K = ...

local type, tostring, ipairs, pairs, pcall = type, tostring, ipairs, pairs, pcall
local pack, unpack, sort = table.pack, table.unpack, table.sort
local match = string.match
local perform, current_ctx, raise = K.perform, K.current_ctx, K.raise

local names_of = K.sorted_names

function specifications(a, b)
  local proc, text = nil, a
  if b ~= nil then proc, text = a, b end
  if proc ~= nil and type(proc) ~= "string" then
    raise("specifications: the procedure must be given by name, got " .. type(proc))
  end
  if type(text) ~= "string" then
    raise("specifications: expected Gherkin text, e.g. specifications([[Feature: ...]]), got " .. type(text))
  end
  perform({kind = "bdd.specifications", run = current_ctx().run, procedure = proc, text = text})
end

local STEPS = {}
function step(text, fn)
  if type(text) ~= "string" then raise("step: argument #1 must be the step's text, got " .. type(text)) end
  if type(fn) ~= "function" then raise("step: argument #2 must be a function, got " .. type(fn)) end
  STEPS[text] = fn
end

-- The step function for `text` and its arguments: an exact match first,
-- then each step text as a Lua pattern (in sorted order, so it is stable).
local function find_step(text)
  local fn = STEPS[text]
  if fn ~= nil then return fn, {n = 0} end
  for _, pat in ipairs(names_of(STEPS)) do
    local ok, caps = pcall(function() return pack(match(text, "^" .. pat .. "$")) end)
    if ok and caps[1] ~= nil then
      if not match(pat, "%(") then caps = {n = 0} end
      return STEPS[pat], caps
    end
  end
  return nil
end

function K.has_step(text) return find_step(text) ~= nil end

function K.step_main(text)
  return function()
    local fn, args = find_step(text)
    if fn == nil then return "undefined" end
    if fn(unpack(args, 1, args.n)) == false then raise("the step returned false") end
    return "passed"
  end
end
