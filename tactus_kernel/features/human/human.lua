-- Human in the loop: every blocking request is an effect the driver awaits
-- (a widget click, a recorded answer, or an answer given up front).
local B, K = ...
local type, tostring = type, tostring
local perform, current_ctx, raise = K.perform, K.current_ctx, K.raise

-- Human.approve("confirm"[, overrides]) uses the declared hitl point;
-- Human.approve({message = ...}) asks directly.
local function ask(kind, a, b)
  local hitl, opts
  if type(a) == "string" then
    hitl, opts = a, b
  else
    opts = a
  end
  if opts ~= nil and type(opts) ~= "table" then
    raise("Human." .. kind .. ": expected a table of options, got " .. type(opts))
  end
  return perform({kind = "human", request = kind, hitl = hitl, opts = opts or {}, run = current_ctx().run})
end

Human = {
  approve = function(a, b) return ask("approve", a, b) end,
  input = function(a, b) return ask("input", a, b) end,
  review = function(a, b) return ask("review", a, b) end,
  escalate = function(a, b) ask("escalate", a, b) end,
  notify = function(opts)
    if type(opts) == "string" then opts = {message = opts} end
    perform({kind = "notice", request = "notify", opts = opts, run = current_ctx().run})
  end,
}

System = {
  alert = function(opts)
    if type(opts) == "string" then opts = {message = opts} end
    perform({kind = "notice", request = "alert", opts = opts, run = current_ctx().run})
  end,
}
