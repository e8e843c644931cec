-- Evaluations: evaluations({dataset, evaluators, runs, parallel, thresholds})
-- and evaluation({runs, parallel}), the reference Tactus's declarations.
-- Lua only hands the config to Python (tactus_kernel/evaluations.py), which
-- checks it at once, so a bad evaluator fails the declaring cell at its
-- line; the dataset runs later, with %tactus eval or pytest --tactus-evals.
local B, K = ...

local type = type
local perform, current_ctx, raise = K.perform, K.current_ctx, K.raise

local function declare(what, kind, a, b)
  local proc, config = nil, a
  if b ~= nil then proc, config = a, b end
  if proc ~= nil and type(proc) ~= "string" then
    raise(what .. ": the procedure must be given by name, got " .. type(proc))
  end
  if type(config) ~= "table" then
    raise(what .. ": expected a table, e.g. " .. what .. "({runs = 3, ...}), got " .. type(config))
  end
  perform({kind = kind, run = current_ctx().run, procedure = proc, config = config})
end

function evaluations(a, b) declare("evaluations", "eval.evaluations", a, b) end
function evaluation(a, b) declare("evaluation", "eval.evaluation", a, b) end
